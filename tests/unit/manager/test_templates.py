"""Templates: ownership, lookup, and a request's fields laid over a template's spec."""

from __future__ import annotations

import pytest

from common.errors import NotFound, PermissionDenied
from common.principal import Principal
from manager.groups.document import KernelTemplateDocument
from manager.templates import TemplateTable, merged_spec
from protos import agent_pb2 as pb

ALICE = Principal(kind="token", role="user", name="alice", scaling_groups=("default",))
BOB = Principal(kind="token", role="user", name="bob", scaling_groups=("default",))
ADMIN = Principal(kind="token", role="user", name="admin", admin=True)


def template(name: str = "web", **spec: object) -> KernelTemplateDocument:
    return KernelTemplateDocument.model_validate(
        {
            "apiVersion": "agenthost.io/v1alpha1",
            "kind": "KernelTemplate",
            "metadata": {"name": name},
            "spec": {
                "command": ["serve"],
                "env": {"A": "1", "B": "2"},
                "ports": [{"name": "http"}],
                "resources": {"memory": "64MiB"},
                **spec,
            },
        }
    )


class TestTable:
    def test_an_unknown_name_is_not_found_listing_the_known(self) -> None:
        table = TemplateTable()
        table.apply(ALICE, template("web"), 1.0)
        table.apply(ALICE, template("db"), 1.0)
        with pytest.raises(NotFound) as info:
            table.get("nope")
        assert str(info.value) == "template 'nope' is not known; known: db, web"

    def test_only_the_owner_or_an_admin_replaces_or_removes(self) -> None:
        table = TemplateTable()
        table.apply(ALICE, template(), 1.0)
        with pytest.raises(PermissionDenied) as info:
            table.apply(BOB, template(), 2.0)
        assert (
            str(info.value) == "template 'web' belongs to token:alice; token:bob may not replace it"
        )
        with pytest.raises(PermissionDenied):
            table.remove(BOB, "web")
        replaced = table.apply(ADMIN, template(command=["other"]), 3.0)
        assert (replaced.owner, replaced.created_at, replaced.updated_at) == (
            "token:alice",
            1.0,
            3.0,
        )
        table.remove(ALICE, "web")
        assert table.list() == []


class TestMergedSpec:
    def test_request_fields_override_and_env_merges(self) -> None:
        base = template().spec
        out = merged_spec(base, pb.KernelSpec(kernel_id="k1", env={"B": "x", "C": "3"}))
        assert list(out.command) == ["serve"] and out.kernel_id == "k1"
        assert dict(out.env) == {"A": "1", "B": "x", "C": "3"}
        assert out.resources.memory_bytes == 64 << 20
        assert [p.name for p in out.ports] == ["http"]
        out = merged_spec(
            base,
            pb.KernelSpec(
                command=["run"],
                ports=[pb.ServicePort(name="ssh")],
                resources=pb.ResourceRequest(memory_bytes=1),
            ),
        )
        assert list(out.command) == ["run"] and [p.name for p in out.ports] == ["ssh"]
        assert out.resources.memory_bytes == 1

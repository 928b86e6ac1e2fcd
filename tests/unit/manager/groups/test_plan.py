"""Group documents checked whole: shapes, roles, dependencies, templates; and the waves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from common.errors import InvalidArgument
from manager.groups import document as doc
from manager.groups.document import KernelSpecModel, load_group, parse_documents
from manager.groups.plan import build_plan, resolve_kernels
from manager.groups.waves import DependencyCycle, find_cycle, kahn_waves

SLEEP = {"command": ["sleep", "60"]}
TEMPLATES = {
    "http": KernelSpecModel.model_validate({"command": ["true"], "ports": [{"name": "web"}]})
}


def role(name: str, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if "template" not in fields:
        out["kernel"] = SLEEP
    out.update(fields)
    return out


def group(*roles: dict[str, Any], name: str = "g1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agenthost.io/v1alpha1",
        "kind": "AgentGroup",
        "metadata": {"name": name},
        "spec": {"roles": list(roles), **spec},
    }


def plan(raw: dict[str, Any]) -> Any:
    document = load_group(raw)
    return build_plan(document, resolve_kernels(document, TEMPLATES, "default"))


@dataclass(frozen=True)
class Refused:
    id: str
    raw: dict[str, Any]
    message: str
    extra: list[str] = field(default_factory=list)


REFUSED = [
    Refused(
        "unknown-dependency",
        group(role("a", coordinator=True), role("b", dependsOn=["c"])),
        "AgentGroup 'g1': role 'b' depends on unknown role 'c' (roles: a, b)",
    ),
    Refused(
        "self-dependency",
        group(role("a", coordinator=True), role("b", dependsOn=["b"])),
        "AgentGroup 'g1': role 'b' depends on itself",
    ),
    Refused(
        "cycle",
        group(
            role("a", coordinator=True),
            role("b", dependsOn=["a", "d"]),
            role("c", dependsOn=["b"]),
            role("d", dependsOn=["c"]),
        ),
        "AgentGroup 'g1': dependsOn has a cycle: b -> d -> c -> b",
    ),
    Refused(
        "no-coordinator",
        group(role("a"), role("b")),
        "AgentGroup 'g1': no role is the coordinator: set coordinator: true on exactly one role",
    ),
    Refused(
        "two-coordinators",
        group(role("a", coordinator=True), role("b", coordinator=True)),
        "AgentGroup 'g1': roles 'a', 'b' are all coordinators; exactly one role may be",
    ),
    Refused(
        "unknown-template",
        group(role("a", coordinator=True), role("b", template="nope")),
        "AgentGroup 'g1': role 'b': template 'nope' is not known; known: http",
    ),
    Refused(
        "peer-with-depends-on",
        group(role("a", coordinator=True), role("b", dependsOn=["a"]), topology="Peer"),
        "AgentGroup 'g1': role 'b': dependsOn is refused under topology Peer (every member "
        "discovers every other, all in one wave)",
    ),
    Refused(
        "repeated-role",
        group(role("a", coordinator=True), role("a")),
        "AgentGroup 'g1': role names repeat: a",
    ),
    Refused(
        "reserved-env",
        group(role("a", coordinator=True), role("b", env={"AGENTHOST_ROLE": "x"})),
        "AgentGroup 'g1': role 'b': env AGENTHOST_ROLE: variables starting with AGENTHOST_ "
        "are set by agenthost",
    ),
    Refused(
        "readiness-port-not-on-template",
        group(role("a", coordinator=True), role("b", template="http", readiness={"port": "x"})),
        "AgentGroup 'g1': role 'b': readiness port 'x' is not a port of its kernel; its ports: web",
    ),
    Refused(
        "bad-role-name",
        group(role("A_b", coordinator=True), role("b")),
        "AgentGroup 'g1': spec.roles.0.name: 'A_b' is not a DNS label: lower-case letters, "
        "digits and '-', starting and ending with a letter or digit",
    ),
    Refused(
        "bad-group-name",
        group(role("a", coordinator=True), role("b"), name="x" * 41),
        "AgentGroup "
        + repr("x" * 40)
        + ": metadata: "
        + repr("x" * 32)
        + " is longer than 40 characters",
    ),
    Refused(
        "one-role",
        group(role("a", coordinator=True)),
        "AgentGroup 'g1': spec.roles: List should have at least 2 items after validation, "
        "not 1 (got [{'name': 'a', 'kernel': {'command': ['sleep', '60']}, 'coordinator': True}])",
    ),
    Refused(
        "too-many-replicas",
        group(role("a", coordinator=True), role("b", replicas=9)),
        "AgentGroup 'g1': spec.roles.1.replicas: Input should be less than or equal to 8 (got 9)",
    ),
    Refused(
        "template-and-kernel",
        group(role("a", coordinator=True), role("b", template="http", kernel=SLEEP)),
        "AgentGroup 'g1': spec.roles.1: role 'b': give exactly one of template or kernel",
    ),
    Refused(
        "unknown-key",
        group(role("a", coordinator=True), role("b", replica=2)),
        "AgentGroup 'g1': spec.roles.1: unknown key 'replica'",
    ),
    Refused(
        "unknown-topology",
        group(role("a", coordinator=True), role("b"), topology="Star"),
        "AgentGroup 'g1': spec.topology: unknown topology 'Star'; valid: Hierarchical, Peer",
    ),
    Refused(
        "bad-duration",
        group(role("a", coordinator=True), role("b"), idleTimeout="soon"),
        "AgentGroup 'g1': spec.idleTimeout: duration 'soon' is not a number with a unit s, m, "
        "h, d or w, e.g. 90s, 15m, 8h, 30d, 1h30m",
    ),
]


class TestValidation:
    @pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
    def test_a_bad_document_is_refused_naming_the_problem(self, case: Refused) -> None:
        with pytest.raises(InvalidArgument) as info:
            plan(case.raw)
        assert str(info.value) == case.message

    def test_every_problem_is_listed_at_once(self) -> None:
        raw = group(role("a"), role("b", dependsOn=["zz"]), role("c", dependsOn=["c"]))
        with pytest.raises(InvalidArgument) as info:
            plan(raw)
        assert str(info.value).count(";") == 2

    def test_more_than_the_member_limit_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("manager.groups.plan.MAX_MEMBERS", 3)
        with pytest.raises(InvalidArgument) as info:
            plan(group(role("a", coordinator=True), role("b", replicas=3)))
        assert str(info.value) == (
            "AgentGroup 'g1': 4 members (replicas over all roles); at most 3"
        )

    def test_defaults_and_durations(self) -> None:
        p = plan(group(role("a", coordinator=True), role("b"), maxDuration="1h30m"))
        spec = p.document.spec
        assert (spec.idle_timeout, spec.max_duration, spec.rollback_timeout) == (900, 5400, 60)
        assert (spec.topology, spec.startup_policy) == ("Hierarchical", "Atomic")
        assert p.roles[1].restart_policy == "Never" and p.roles[1].scaling_group == "default"


class TestResolution:
    def test_a_template_is_merged_with_the_roles_env_readiness_and_scaling_group(self) -> None:
        raw = group(
            role("a", coordinator=True),
            role(
                "b",
                template="http",
                env={"K": "v"},
                readiness={"port": "web", "timeout": "5s"},
                placement={"scalingGroup": "batch"},
            ),
        )
        b = plan(raw).by_name["b"]
        assert b.kernel.command == ["true"] and b.port_names == ["web"]
        assert b.kernel.env == {"K": "v"} and b.scaling_group == "batch"
        assert b.readiness is not None and b.readiness.timeout == 5


class TestWaves:
    def test_roles_start_in_dependency_waves_in_document_order(self) -> None:
        p = plan(
            group(
                role("test", dependsOn=["code", "plan"]),
                role("code", dependsOn=["plan"]),
                role("plan", coordinator=True),
                role("docs"),
            )
        )
        assert p.waves == (("plan", "docs"), ("code",), ("test",))
        assert [r.name for r in p.roles] == ["plan", "docs", "code", "test"]
        assert [r.wave for r in p.roles] == [1, 1, 2, 3]

    def test_peer_is_one_wave_and_every_role_depends_on_every_other(self) -> None:
        p = plan(group(role("a", coordinator=True), role("b"), role("c"), topology="Peer"))
        assert p.waves == (("a", "b", "c"),)
        assert p.by_name["b"].depends_on == ("a", "c")

    def test_kahn_reports_the_cycle(self) -> None:
        with pytest.raises(DependencyCycle) as info:
            kahn_waves({"x": [], "a": ["c"], "b": ["a"], "c": ["b"]})
        assert info.value.cycle == ["a", "c", "b", "a"]
        assert find_cycle({"a": ["b"], "b": []}) == []


class TestParsing:
    def test_yaml_json_and_toml_give_the_same_document(self) -> None:
        yaml_text = (
            "apiVersion: agenthost.io/v1alpha1\nkind: AgentGroup\nmetadata: {name: g}\n"
            "spec:\n  roles:\n  - {name: a, coordinator: true, kernel: {command: [x]}}\n"
            "  - {name: b, kernel: {command: [y]}}\n"
        )
        toml_text = (
            'apiVersion = "agenthost.io/v1alpha1"\nkind = "AgentGroup"\n[metadata]\nname = "g"\n'
            '[[spec.roles]]\nname = "a"\ncoordinator = true\nkernel = { command = ["x"] }\n'
            '[[spec.roles]]\nname = "b"\nkernel = { command = ["y"] }\n'
        )
        a = load_group(parse_documents(yaml_text)[0])
        b = load_group(parse_documents(toml_text, "toml")[0])
        assert a == b

    @pytest.mark.parametrize(
        ("text", "fmt", "message"),
        [
            ("a: [", "yaml", "the document is not valid YAML"),
            ("a = ", "toml", "the document is not valid TOML"),
            ("", "yaml", "the document is empty"),
            ("- 1", "yaml", "a document is a mapping (apiVersion, kind, metadata, spec), not list"),
            ("a: 1", "xml", "format 'xml' is not known; valid: yaml, toml"),
        ],
        ids=["bad-yaml", "bad-toml", "empty", "not-a-mapping", "unknown-format"],
    )
    def test_unreadable_text_is_refused(self, text: str, fmt: str, message: str) -> None:
        with pytest.raises(InvalidArgument) as info:
            parse_documents(text, fmt)
        assert str(info.value).startswith(message)

    def test_a_huge_document_is_refused_before_parsing(self) -> None:
        with pytest.raises(InvalidArgument) as info:
            parse_documents("a: " + "x" * doc.MAX_DOCUMENT_BYTES)
        assert str(info.value) == "the document is larger than 256 KiB"

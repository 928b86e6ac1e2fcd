"""Templates: named kernel specs the manager keeps, used by `kernel create --template`
and by group roles.

A template is a `KernelTemplate` document (`manager.groups.document`): image,
command, env, labels, resources, ports, backend, scaling group and a readiness
check. Applying one creates it or replaces it; it belongs to the principal that
created it (only that principal or an admin may replace or remove it); anyone
but a viewer may use any template. `merged_spec` lays a request's own fields over
a template's spec. Knows the document models and protocol messages; no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from common.errors import NotFound, PermissionDenied
from common.principal import Principal
from manager.groups.document import KernelSpecModel, KernelTemplateDocument
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb


@dataclass(frozen=True)
class TemplateRecord:
    """One template as stored."""

    document: KernelTemplateDocument
    owner: str
    created_at: float
    updated_at: float

    @property
    def name(self) -> str:
        """The template's name."""
        return self.document.metadata.name

    @property
    def spec(self) -> KernelSpecModel:
        """Its kernel spec."""
        return self.document.spec

    @property
    def document_json(self) -> str:
        """The document as stored."""
        return self.document.model_dump_json(by_alias=True, exclude_none=True)

    def to_proto(self) -> mpb.KernelTemplate:
        """The template as answered."""
        spec = self.spec
        readiness = (
            json.dumps(spec.readiness.model_dump(mode="json", by_alias=True, exclude_none=True))
            if spec.readiness
            else ""
        )
        return mpb.KernelTemplate(
            name=self.name,
            kernel=kernel_spec(spec),
            scaling_group=spec.scaling_group or "",
            backend=spec.backend or "",
            readiness_json=readiness,
            owner=self.owner,
            created_at=self.created_at,
            updated_at=self.updated_at,
            document_json=self.document_json,
        )


class TemplateTable:
    """Templates by name."""

    def __init__(self, records: Iterable[TemplateRecord] = ()) -> None:
        self._records = {r.name: r for r in records}

    def get(self, name: str) -> TemplateRecord:
        """The template, or NotFound listing the known names."""
        record = self._records.get(name)
        if record is None:
            raise NotFound(f"template {name[:63]!r} is not known; known: {self.known()}")
        return record

    def known(self) -> str:
        """Some known names, for messages."""
        names = sorted(self._records)
        more = f" and {len(names) - 20} more" if len(names) > 20 else ""
        return (", ".join(names[:20]) + more) or "none"

    def specs(self) -> dict[str, KernelSpecModel]:
        """Every template's spec by name."""
        return {name: r.spec for name, r in self._records.items()}

    def list(self) -> list[TemplateRecord]:
        """Every template, by name."""
        return [self._records[n] for n in sorted(self._records)]

    def check_may_change(self, principal: Principal, name: str, verb: str) -> None:
        """PermissionDenied unless principal may replace or remove template name (if it exists)."""
        current = self._records.get(name)
        if current is not None:
            _check_owner(principal, current, verb)

    def apply(
        self, principal: Principal, document: KernelTemplateDocument, now: float
    ) -> TemplateRecord:
        """Create or replace a template (its owner or an admin may replace it)."""
        current = self._records.get(document.metadata.name)
        if current is not None:
            _check_owner(principal, current, "replace")
        record = TemplateRecord(
            document=document,
            owner=current.owner if current else str(principal),
            created_at=current.created_at if current else now,
            updated_at=now,
        )
        self._records[record.name] = record
        return record

    def remove(self, principal: Principal, name: str) -> TemplateRecord:
        """Forget a template (its owner or an admin)."""
        record = self.get(name)
        _check_owner(principal, record, "remove")
        del self._records[name]
        return record


def _check_owner(principal: Principal, record: TemplateRecord, verb: str) -> None:
    if principal.viewer:
        raise PermissionDenied(f"{principal} is a viewer token: it may only list and get")
    if not principal.admin and record.owner != str(principal):
        raise PermissionDenied(
            f"template {record.name!r} belongs to {record.owner}; {principal} may not {verb} it"
        )


def kernel_spec(model: KernelSpecModel, kernel_id: str = "") -> pb.KernelSpec:
    """The KernelSpec message of a document's kernel."""
    r = model.resources
    return pb.KernelSpec(
        kernel_id=kernel_id,
        image=model.image,
        command=model.command,
        env=model.env,
        labels=model.labels,
        resources=pb.ResourceRequest(cpu_count=r.cpus, memory_bytes=r.memory, devices=r.devices),
        ports=[pb.ServicePort(name=p.name, container_port=p.container_port) for p in model.ports],
    )


def merged_spec(template: KernelSpecModel, request: pb.KernelSpec) -> pb.KernelSpec:
    """A template's spec with the request's own fields over it (env and labels key by key)."""
    out = kernel_spec(template, request.kernel_id)
    if request.image:
        out.image = request.image
    if request.command:
        del out.command[:]
        out.command.extend(request.command)
    out.env.update(request.env)
    out.labels.update(request.labels)
    asked = request.resources
    if asked.cpu_count or asked.cores:
        out.resources.cpu_count = asked.cpu_count
        del out.resources.cores[:]
        out.resources.cores.extend(asked.cores)
    if asked.memory_bytes:
        out.resources.memory_bytes = asked.memory_bytes
    if asked.devices:
        out.resources.devices.clear()
        out.resources.devices.update(asked.devices)
    if asked.cpu_quota:
        out.resources.cpu_quota = asked.cpu_quota
    if request.ports:
        del out.ports[:]
        out.ports.extend(request.ports)
    if request.networks:
        out.networks.extend(request.networks)
    return out

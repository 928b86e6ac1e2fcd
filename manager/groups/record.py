"""A group as the manager keeps it: its document, resolved roles, owner and status.

The store writes these whole (`manager.store`); the runner changes `status` and
the store writes it again only when it differs from what was written last. The
status is the `GroupStatus` message itself, so what is stored, compared and
answered is one thing. Knows the document models and protocol messages only.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from manager.groups.document import AgentGroupDocument, KernelSpecModel
from manager.groups.plan import GroupPlan, build_plan
from protos import manager_pb2 as mpb

PENDING = mpb.GROUP_PHASE_PENDING
STARTING = mpb.GROUP_PHASE_STARTING
RUNNING = mpb.GROUP_PHASE_RUNNING
DEGRADED = mpb.GROUP_PHASE_DEGRADED
FAILED = mpb.GROUP_PHASE_FAILED
TERMINATING = mpb.GROUP_PHASE_TERMINATING
TERMINATED = mpb.GROUP_PHASE_TERMINATED

PHASE_NAMES: dict[int, str] = {
    PENDING: "Pending",
    STARTING: "Starting",
    RUNNING: "Running",
    DEGRADED: "Degraded",
    FAILED: "Failed",
    TERMINATING: "Terminating",
    TERMINATED: "Terminated",
}


def phase_name(phase: int) -> str:
    """'Running' for GROUP_PHASE_RUNNING."""
    return PHASE_NAMES.get(phase, "Unknown")


@dataclass
class GroupRecord:
    """One group: what it was created with, who owns it, and its status."""

    name: str
    uid: str
    owner: str  # the principal that created it, e.g. "token:alice"
    generation: int
    created_at: float
    document: AgentGroupDocument
    kernels: dict[str, KernelSpecModel]  # each role's kernel as resolved at creation
    status: mpb.GroupStatus = field(default_factory=mpb.GroupStatus)

    @classmethod
    def new(
        cls,
        document: AgentGroupDocument,
        kernels: dict[str, KernelSpecModel],
        owner: str,
        now: float,
    ) -> GroupRecord:
        """A group just accepted: Pending, generation 1."""
        status = mpb.GroupStatus(phase=PENDING, transitioned_at=now)
        return cls(
            name=document.metadata.name,
            uid=uuid.uuid4().hex[:12],
            owner=owner,
            generation=1,
            created_at=now,
            document=document,
            kernels=kernels,
            status=status,
        )

    def plan(self) -> GroupPlan:
        """The roles in waves."""
        return build_plan(self.document, self.kernels)

    @property
    def document_json(self) -> str:
        """The document as stored (camelCase keys)."""
        return self.document.model_dump_json(by_alias=True, exclude_none=True)

    @property
    def kernels_json(self) -> str:
        """The resolved kernels as stored."""
        return json.dumps(
            {
                role: spec.model_dump(mode="json", by_alias=True, exclude_none=True)
                for role, spec in self.kernels.items()
            }
        )

    @classmethod
    def load(
        cls,
        name: str,
        uid: str,
        owner: str,
        generation: int,
        created_at: float,
        document_json: str,
        kernels_json: str,
        status: bytes,
    ) -> GroupRecord:
        """A record read back from its row."""
        raw: dict[str, Any] = json.loads(kernels_json)
        return cls(
            name=name,
            uid=uid,
            owner=owner,
            generation=generation,
            created_at=created_at,
            document=AgentGroupDocument.model_validate_json(document_json),
            kernels={r: KernelSpecModel.model_validate(k) for r, k in raw.items()},
            status=mpb.GroupStatus.FromString(status),
        )

    def to_proto(self) -> mpb.Group:
        """The group as answered."""
        spec = self.document.spec
        return mpb.Group(
            name=self.name,
            uid=self.uid,
            owner=self.owner,
            generation=self.generation,
            created_at=self.created_at,
            spec_json=spec.model_dump_json(by_alias=True, exclude_none=True),
            status=self.status,
            topology=spec.topology,
            startup_policy=spec.startup_policy,
        )

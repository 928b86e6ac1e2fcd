"""A group document checked as a whole, and resolved into the plan the runner follows.

Beyond the shapes the models check: role names unique, exactly one coordinator,
dependencies that name other roles of the group and do not loop (the message lists
the cycle), none under Peer, templates that exist, at most `MAX_MEMBERS` members,
no `AGENTHOST_` variables of the user's own. Every problem is listed in one
`InvalidArgument`, and nothing is created when there is one.

`resolve_kernels` merges each role's template (or inline kernel) with the role's
env, readiness and scaling group, once, at creation: the group keeps what it was
created with even if a template changes later. `build_plan` orders the roles into
waves. Pure: knows the document models and templates as specs; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from common.errors import InvalidArgument
from manager.groups.document import (
    MAX_MEMBERS,
    AgentGroupDocument,
    KernelSpecModel,
    Placement,
    Readiness,
)
from manager.groups.waves import DependencyCycle, kahn_waves

RESERVED_ENV_PREFIX = "AGENTHOST_"


@dataclass(frozen=True)
class RolePlan:
    """One role as it will be started."""

    name: str
    replicas: int
    coordinator: bool
    depends_on: tuple[str, ...]  # under Peer: every other role
    restart_policy: str  # Never | OnFailure
    kernel: KernelSpecModel  # resolved: template, role env, readiness, scaling group
    placement: Placement
    wave: int  # from 1

    @property
    def readiness(self) -> Readiness | None:
        """The check that makes a member ready (None: running is ready)."""
        return self.kernel.readiness

    @property
    def scaling_group(self) -> str:
        """Where its members are scheduled."""
        return self.kernel.scaling_group or ""

    @property
    def port_names(self) -> list[str]:
        """Its named ports in the order written."""
        return [p.name for p in self.kernel.ports]


@dataclass(frozen=True)
class GroupPlan:
    """Every role of a group, in start order, and its waves."""

    document: AgentGroupDocument
    roles: tuple[RolePlan, ...]
    waves: tuple[tuple[str, ...], ...]

    @property
    def name(self) -> str:
        """The group's name."""
        return self.document.metadata.name

    @cached_property
    def by_name(self) -> dict[str, RolePlan]:
        """Roles by name."""
        return {r.name: r for r in self.roles}

    @property
    def coordinator(self) -> RolePlan:
        """The coordinator role."""
        return next(r for r in self.roles if r.coordinator)

    @property
    def member_count(self) -> int:
        """Members over every role."""
        return sum(r.replicas for r in self.roles)


def resolve_kernels(
    document: AgentGroupDocument,
    templates: Mapping[str, KernelSpecModel],
    default_scaling_group: str,
) -> dict[str, KernelSpecModel]:
    """Each role's kernel as it will be created; InvalidArgument listing every problem."""
    problems: list[str] = []
    out: dict[str, KernelSpecModel] = {}
    for role in document.spec.roles:
        if role.kernel is not None:
            base = role.kernel
        elif role.template is not None and role.template in templates:
            base = templates[role.template]
        else:
            known = ", ".join(sorted(templates)[:20]) or "none"
            problems.append(
                f"role {role.name!r}: template {role.template!r} is not known; known: {known}"
            )
            continue
        reserved = sorted(k for k in role.env if k.startswith(RESERVED_ENV_PREFIX))
        if reserved:
            problems.append(
                f"role {role.name!r}: env {', '.join(reserved)}: variables starting with "
                f"{RESERVED_ENV_PREFIX} are set by agenthost"
            )
        readiness = role.readiness or base.readiness
        ports = [p.name for p in base.ports]
        if readiness is not None and readiness.port is not None and readiness.port not in ports:
            problems.append(
                f"role {role.name!r}: readiness port {readiness.port!r} is not a port of its "
                f"kernel; its ports: {', '.join(ports) or 'none'}"
            )
        out[role.name] = base.model_copy(
            update={
                "env": {**base.env, **role.env},
                "readiness": readiness,
                "scaling_group": role.placement.scaling_group
                or base.scaling_group
                or default_scaling_group,
            }
        )
    if problems:
        raise InvalidArgument(_joined(document, problems))
    return out


def build_plan(document: AgentGroupDocument, kernels: Mapping[str, KernelSpecModel]) -> GroupPlan:
    """The roles in waves; InvalidArgument listing every problem of the whole document."""
    spec = document.spec
    roles = spec.roles
    problems: list[str] = []
    names = [r.name for r in roles]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        problems.append(f"role names repeat: {', '.join(repeated)}")
    coordinators = [r.name for r in roles if r.coordinator]
    if not coordinators:
        problems.append("no role is the coordinator: set coordinator: true on exactly one role")
    elif len(coordinators) > 1:
        problems.append(
            f"roles {', '.join(repr(n) for n in coordinators)} are all coordinators; "
            "exactly one role may be"
        )
    peer = spec.topology == "Peer"
    known = set(names)
    for role in roles:
        for need in role.depends_on:
            if peer:
                problems.append(
                    f"role {role.name!r}: dependsOn is refused under topology Peer (every "
                    "member discovers every other, all in one wave)"
                )
                break
            if need == role.name:
                problems.append(f"role {role.name!r} depends on itself")
            elif need not in known:
                problems.append(
                    f"role {role.name!r} depends on unknown role {need!r} (roles: "
                    + ", ".join(names)
                    + ")"
                )
    members = sum(r.replicas for r in roles)
    if members > MAX_MEMBERS:
        problems.append(f"{members} members (replicas over all roles); at most {MAX_MEMBERS}")
    waves: list[list[str]] = [names]
    if not problems and not peer:
        graph = {r.name: list(dict.fromkeys(r.depends_on)) for r in roles}
        try:
            waves = kahn_waves(graph)
        except DependencyCycle as exc:
            problems.append(str(exc))
    if problems:
        raise InvalidArgument(_joined(document, problems))
    wave_of = {role: i + 1 for i, wave in enumerate(waves) for role in wave}
    by_name = {r.name: r for r in roles}
    plans = tuple(
        RolePlan(
            name=name,
            replicas=by_name[name].replicas,
            coordinator=by_name[name].coordinator,
            depends_on=tuple(n for n in names if n != name)
            if peer
            else tuple(dict.fromkeys(by_name[name].depends_on)),
            restart_policy=by_name[name].restart_policy,
            kernel=kernels[name],
            placement=by_name[name].placement,
            wave=wave_of[name],
        )
        for wave in waves
        for name in wave
    )
    return GroupPlan(document, plans, tuple(tuple(w) for w in waves))


def _joined(document: AgentGroupDocument, problems: list[str]) -> str:
    return f"AgentGroup {document.metadata.name!r}: " + "; ".join(problems)

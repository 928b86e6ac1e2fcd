"""Delegated spawning: what a kernel created with `delegate = true` may spend, and the
arithmetic that keeps everything it spawns within that.

A delegating kernel holds a token of its own (`manager/tokens.py`: hashed like any
token, bound to the kernel, its scaling group and its limits). Its children are
owned by that token's principal. The limits bound the children *and all their
descendants together*, so a child that delegates further is charged its own request
plus the whole of the limits it passes on: a delegation can only ever be narrowed
as it is passed down, never widened (`charge`, `refusal`). A limit the creator
leaves unset is the delegating kernel's own request (one kernel for the count;
devices are always its own request), so `--delegate` alone lets a kernel spend
again what it was given, and no more.

What is charged is recomputed from the manager's kernel table at each create (no
counter that could drift): a child holding resources is charged its request, plus
its delegation's limits while that delegation is active; a child that has ended
is charged only what its descendants still hold (they are being ended with it).

Pure: no I/O and no awaits. Knows protocol messages and the kernel table's records;
nothing of gRPC, storage or who is calling.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from common.formatting import format_bytes
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

if TYPE_CHECKING:  # the kernel table scrubs ENV_TOKEN, so it imports this module
    from manager.kernels import KernelRecord

PARENT_LABEL = "agenthost.parent"  # on every child: the id of the kernel that created it
# On a delegating kernel: the id of its token (which delegation is this kernel's,
# should a later kernel reuse its id).
DELEGATION_LABEL = "agenthost.delegation"
ENV_TOKEN = "AGENTHOST_TOKEN"
ENV_MANAGER = "AGENTHOST_MANAGER"
ENV_CA = "AGENTHOST_CA"  # the manager's CA certificate as PEM (a TLS manager)
ENV_INSECURE = "AGENTHOST_INSECURE"  # "1" for a plaintext (loopback) manager
DELEGATION_ENV = (ENV_TOKEN, ENV_MANAGER, ENV_CA, ENV_INSECURE)
DEFAULT_KERNELS = 1  # --delegate-kernels unset: the delegating kernel is one kernel


@dataclass(frozen=True)
class Budget:
    """Cores, memory, devices by kind and kernels: a delegation's limits, or a charge."""

    cores: int = 0
    memory_bytes: int = 0
    kernels: int = 0
    devices: tuple[tuple[str, int], ...] = ()  # (kind, count), sorted, no zero counts

    @classmethod
    def of(
        cls,
        cores: int = 0,
        memory_bytes: int = 0,
        kernels: int = 0,
        devices: Mapping[str, int] | None = None,
    ) -> Budget:
        """A budget with devices given as a mapping."""
        pairs = tuple(sorted((k, n) for k, n in (devices or {}).items() if n))
        return cls(cores, memory_bytes, kernels, pairs)

    @classmethod
    def of_spec(cls, spec: pb.KernelSpec) -> Budget:
        """What one kernel of spec reserves: its cores, memory and devices, and one kernel."""
        r = spec.resources
        return cls.of(r.cpu_count or len(r.cores), r.memory_bytes, 1, dict(r.devices))

    @property
    def device_counts(self) -> dict[str, int]:
        """Devices by kind."""
        return dict(self.devices)

    def __add__(self, other: Budget) -> Budget:
        devices = self.device_counts
        for kind, count in other.devices:
            devices[kind] = devices.get(kind, 0) + count
        return Budget.of(
            self.cores + other.cores,
            self.memory_bytes + other.memory_bytes,
            self.kernels + other.kernels,
            devices,
        )

    def to_proto(self) -> mpb.DelegateLimits:
        """As DelegateLimits (every field set)."""
        return mpb.DelegateLimits(
            cores=self.cores, memory_bytes=self.memory_bytes, kernels=self.kernels
        )

    def to_json(self) -> dict[str, object]:
        """As stored."""
        return {
            "cores": self.cores,
            "memory_bytes": self.memory_bytes,
            "kernels": self.kernels,
            "devices": self.device_counts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Budget:
        """Back from to_json."""
        devices = data.get("devices") or {}
        assert isinstance(devices, dict)
        return cls.of(
            int(data.get("cores", 0)),  # type: ignore[call-overload]
            int(data.get("memory_bytes", 0)),  # type: ignore[call-overload]
            int(data.get("kernels", 0)),  # type: ignore[call-overload]
            {str(k): int(v) for k, v in devices.items()},
        )


ZERO = Budget()


def resolve_limits(spec: pb.KernelSpec, asked: mpb.DelegateLimits) -> Budget:
    """The limits of a kernel of spec created with delegate = true and asked's limits.

    An unset limit is the kernel's own request (cores, memory); the count is
    DEFAULT_KERNELS; devices are always its own request.
    """
    own = Budget.of_spec(spec)
    return Budget.of(
        asked.cores if asked.HasField("cores") else own.cores,
        asked.memory_bytes if asked.HasField("memory_bytes") else own.memory_bytes,
        asked.kernels if asked.HasField("kernels") else DEFAULT_KERNELS,
        own.device_counts,
    )


class Grant(Protocol):
    """A delegation as the arithmetic needs it (a delegated token's record)."""

    @property
    def limits(self) -> Budget | None: ...

    @property
    def owner(self) -> str: ...

    @property
    def revoked_at(self) -> float: ...


GrantOf = Callable[["KernelRecord"], "Grant | None"]  # a kernel's delegation, if any


def owned_by(records: Iterable[KernelRecord]) -> dict[str, list[KernelRecord]]:
    """Records grouped by owner (one pass over the table for a whole check)."""
    out: dict[str, list[KernelRecord]] = defaultdict(list)
    for record in records:
        if record.owner:
            out[record.owner].append(record)
    return out


def used(owner: str, by_owner: Mapping[str, Sequence[KernelRecord]], grant_of: GrantOf) -> Budget:
    """What the kernels owner created, and everything below them, are charged now."""
    total = ZERO
    for record in by_owner.get(owner, ()):
        total += charge(record, by_owner, grant_of)
    return total


def charge(
    record: KernelRecord, by_owner: Mapping[str, Sequence[KernelRecord]], grant_of: GrantOf
) -> Budget:
    """What one kernel costs its creator's delegation: its request while it holds
    resources, plus its own delegation's limits while that is active (else what its
    descendants still hold)."""
    own = Budget.of_spec(record.kernel.spec) if record.holds_resources else ZERO
    grant = grant_of(record)
    if grant is None or grant.limits is None:
        return own
    if record.holds_resources and not grant.revoked_at:
        return own + grant.limits
    return own + used(grant.owner, by_owner, grant_of)


def refusal(limits: Budget, in_use: Budget, adding: Budget) -> str | None:
    """Why adding to in_use would pass limits (each limit passed, named), or None."""
    total = in_use + adding
    problems = []
    if total.kernels > limits.kernels:
        problems.append(_passed("kernels", limits.kernels, in_use.kernels, adding.kernels, str))
    if total.cores > limits.cores:
        problems.append(_passed("cores", limits.cores, in_use.cores, adding.cores, str))
    if total.memory_bytes > limits.memory_bytes:
        problems.append(
            _passed(
                "memory",
                limits.memory_bytes,
                in_use.memory_bytes,
                adding.memory_bytes,
                format_bytes,
            )
        )
    allowed = limits.device_counts
    held = in_use.device_counts
    for kind, count in total.devices:
        if count > allowed.get(kind, 0):
            problems.append(
                f"{kind} devices: limit {allowed.get(kind, 0)}, {held.get(kind, 0)} in use, "
                f"this create adds {count - held.get(kind, 0)}"
            )
    return "; ".join(problems) or None


def _passed(name: str, limit: int, in_use: int, adding: int, show: Callable[[int], str]) -> str:
    return (
        f"{name}: limit {show(limit)} (--delegate-{name}), {show(in_use)} in use, "
        f"this create adds {show(adding)}"
    )


def delegation_env(token: str, manager_address: str, ca_pem: bytes | None) -> dict[str, str]:
    """The env that lets a kernel reach the manager as its delegation (ca_pem: TLS)."""
    env = {ENV_TOKEN: token, ENV_MANAGER: manager_address}
    if ca_pem is None:
        env[ENV_INSECURE] = "1"
    else:
        env[ENV_CA] = ca_pem.decode()
    return env

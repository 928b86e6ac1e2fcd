"""The one protocol every backend implements, and the values it exchanges.

A backend knows processes, containers or pods. It knows nothing of agents'
slices, port pools, routing or gRPC: the agent hands it a fully decided
`LaunchSpec` and keeps the returned handle (small, versioned, serialisable) in its
checkpoint. `recover`-style calls (`is_alive`) take only that handle.
Optional features are separate small protocols (`NetworkCapable`, `Recovering`).

Between the agent and a backend a handle is its serialised form (`Handle`, a
dict), which the agent persists as it is; each backend parses it into its own
typed handle (`handle.py` of its package) on entry and never indexes the dict.
A backend class also declares `settings_model` and is built by
`await cls.create(agent_id, settings, identity)` from that model alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.backends.logfiles import LogTail

Handle = dict[str, Any]

# Labels/env every backend puts on what it starts, so ownership can be recovered.
LABEL_AGENT_ID = "agenthost.agent_id"
LABEL_KERNEL_ID = "agenthost.kernel_id"
LABEL_DAEMON = "agenthost.daemon"


# A kernel's output file in its working directory (local kernels write it as they
# run; docker keeps the output of an ended container there).
KERNEL_LOG = "kernel.log"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start (or exec in) one kernel, already decided."""

    agent_id: AgentId
    kernel_id: KernelId
    image: str
    command: tuple[str, ...]
    env: Mapping[str, str]  # the caller's env plus AGENTHOST_* and PORT_*
    labels: Mapping[str, str]  # the caller's labels plus agenthost.* labels
    workdir: Path
    cores: tuple[int, ...]  # cores to pin to (exclusive ones, or the slice)
    memory_limit: int  # bytes; 0 = no limit
    cpu_quota: float = 0.0  # fractional CPU limit; 0 = none
    devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)  # name -> host port
    container_ports: Mapping[str, int] = field(default_factory=dict)  # name -> kernel port
    networks: tuple[str, ...] = ()
    log_max_bytes: int = 0  # cap of the kernel's kept output; 0: none


@dataclass(frozen=True)
class Started:
    """What start() returns: the handle to persist and what the caller may show."""

    handle: Handle
    memory_limit: str  # how memory is enforced: cgroup, rlimit, docker, none
    backend_ref: str  # pid, container id, pod name
    # Which limits are in force and how, e.g. {"cpuset": "cgroup-v1", "memory": "rlimit",
    # "pids": "none", "user": "uid-range"}; each backend documents its keys and values.
    limits: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None  # whom the kernel runs as, when the backend knows
    gid: int | None = None


@dataclass(frozen=True)
class Exit:
    """How a kernel ended."""

    exit_code: int | None  # None when it could not be known
    reason: str  # "exited", "OOMKilled", "killed by SIGKILL", ...
    end: EndReason = EndReason.EXITED  # the one-word class of reason


@dataclass(frozen=True)
class ExecOutput:
    """A chunk of an exec'd command's output."""

    stream: Literal["stdout", "stderr"]
    data: bytes


@dataclass(frozen=True)
class ExecExit:
    """The end of an exec'd command."""

    exit_code: int
    timed_out: bool = False


ExecEvent = ExecOutput | ExecExit


class Backend(Protocol):
    """The verbs of a backend: start, wait, stop, is_alive, execute, logs, reap."""

    name: str

    async def start(self, launch: LaunchSpec) -> Started:
        """Start the kernel; raise a domain error and leave nothing behind on failure."""
        ...

    async def wait(self, handle: Handle) -> Exit:
        """Return once the kernel has ended (by itself or by stop())."""
        ...

    async def stop(self, handle: Handle, grace: float) -> None:
        """End the kernel (TERM, grace, KILL) and remove what it left; idempotent."""
        ...

    async def is_alive(self, handle: Handle) -> bool:
        """True when the kernel behind handle still runs (used after a restart too)."""
        ...

    def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv in the kernel's context, yielding output as produced, then ExecExit."""
        ...

    async def logs(
        self, handle: Handle, launch: LaunchSpec, tail_lines: int, max_bytes: int
    ) -> LogTail:
        """The end of the kernel's output: its last tail_lines lines (0: all kept), at
        most max_bytes of them; reads no more than it returns."""
        ...

    def stream_logs(
        self,
        handle: Handle,
        launch: LaunchSpec,
        tail_lines: int,
        follow: bool,
        alive: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """The kernel's output in chunks, from the start (or its last tail_lines lines);
        with follow, then what it writes while alive() holds."""
        ...

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """End kernels this daemon started for agent_id that are not in known."""
        ...

    async def check(self) -> None:
        """Raise Unavailable when the backend cannot serve right now."""
        ...

    async def close(self) -> None:
        """Release the backend's own connections (kernels keep running)."""
        ...


@runtime_checkable
class LogTrimming(Protocol):
    """Backends whose kernels' output the daemon must cap itself (files it does not
    rotate on its own: the local backend's); the agent calls this every reconcile."""

    async def trim_logs(self, workdirs: Sequence[Path], max_bytes: int) -> None:
        """Rotate the output of each kernel (by its working directory) past max_bytes:
        all in one go, so a pass over many kernels costs the loop one step."""


@runtime_checkable
class Recovering(Protocol):
    """Backends that hold something of their own per kernel (the local backend's uids)."""

    async def recover(self, handle: Handle) -> None:
        """Take back what the kernel behind handle holds; called once per kernel re-adopted
        after a restart, before the agent serves. Idempotent."""
        ...


@runtime_checkable
class NetworkCapable(Protocol):
    """Backends with agent-scoped networks."""

    async def create_network(self, agent_id: AgentId, name: str) -> str:
        """Create the network; return its backend id."""
        ...

    async def destroy_network(self, agent_id: AgentId, name: str) -> None:
        """Remove the network."""
        ...

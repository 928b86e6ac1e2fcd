"""The daemon's side of the manager: register every agent, then heartbeat.

Started by the daemon server when `[daemon] manager` is set. It registers all
agents with every kernel (so the manager can reconcile), then sends a heartbeat
every `heartbeat_interval` (per agent: occupancy, health, scaling group and each
kernel's state). A heartbeat refused with NOT_FOUND means the manager no longer
knows this daemon's session (it restarted, or marked the daemon LOST): the link
registers again at once. A manager that is down or slow is logged once and
retried every interval; nothing here ever blocks or stops the daemon. Every call
has a deadline. With `[daemon.tls]` it speaks mutual TLS with the daemon's
certificate, and the manager takes the daemon's identity from that certificate.
Knows the runtime's read side and the manager's protocol; nothing of the
manager's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc

from common.ids import KernelId
from daemon import convert
from daemon.events import KernelEvent
from daemon.runtime import AgentRuntime
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc

log = logging.getLogger(__name__)

_WILDCARDS = ("0.0.0.0", "::", "[::]", "")


CHUNK_BYTES = 2 << 20  # registration and heartbeat messages stay well under gRPC's 4 MiB

T = TypeVar("T")


def chunked(
    items: Sequence[T], limit: int | None = None, size: Callable[[T], int] | None = None
) -> Iterator[list[T]]:
    """items in consecutive lists of at most limit (default CHUNK_BYTES) bytes each (at
    least one list, and at least one item per list)."""
    limit = limit or CHUNK_BYTES
    measure = size or (lambda item: item.ByteSize())  # type: ignore[attr-defined]
    part: list[T] = []
    total = 0
    for item in items:
        n = measure(item)
        if part and total + n > limit:
            yield part
            part, total = [], 0
        part.append(item)
        total += n
    yield part


def _without_kernels(beat: mpb.AgentHeartbeat) -> mpb.AgentHeartbeat:
    out = mpb.AgentHeartbeat()
    out.CopyFrom(beat)
    del out.kernels[:]
    del out.removed_kernel_ids[:]
    return out


def advertised_address(bound: str, manager: str) -> str:
    """The address the manager can reach this daemon on.

    A wildcard listen address (0.0.0.0, [::]) is replaced by the local address
    this host uses to reach the manager.
    """
    host, _, port = bound.rpartition(":")
    if host not in _WILDCARDS:
        return bound
    manager_host = manager.rpartition(":")[0].strip("[]")
    try:
        family = socket.AF_INET6 if ":" in manager_host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((manager_host, 9))  # UDP: nothing is sent
            local = probe.getsockname()[0]
    except OSError:
        local = socket.gethostname()
    return f"[{local}]:{port}" if ":" in local else f"{local}:{port}"


class ManagerLink:
    """Keeps this daemon's agents registered with its manager."""

    def __init__(self, runtime: AgentRuntime, daemon_address: str, manager_address: str) -> None:
        self.runtime = runtime
        self.manager_address = manager_address
        self.daemon_address = advertised_address(daemon_address, manager_address)
        self.interval = runtime.config.daemon.heartbeat_interval
        self.timeout = max(2 * self.interval, 2.0)
        self.session_id = ""
        self._acked_seq = 0  # the kernel journal as far as the manager has heard it
        options = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", int(max(self.interval, 1.0) * 1000)),
        ]
        tls = runtime.config.tls
        self._channel = (
            grpc.aio.secure_channel(manager_address, tls.channel_credentials(), options=options)
            if tls is not None
            else grpc.aio.insecure_channel(manager_address, options=options)
        )
        # With TLS the manager knows this daemon by its certificate's name; plaintext
        # daemons name themselves (node and state directory).
        self.daemon_id = (
            tls.identity.name
            if tls is not None
            else f"{runtime.config.daemon.node}/{runtime.identity}"
        )
        self._stub = manager_pb2_grpc.ManagerServiceStub(self._channel)
        self._last_problem = ""
        self._task = asyncio.create_task(self._run(), name="manager-link")
        log.info(
            "reporting to manager %s as %s every %.1fs",
            manager_address,
            self.daemon_address,
            self.interval,
        )

    async def close(self) -> None:
        """Stop heartbeating and close the channel."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._channel.close(None)

    async def _run(self) -> None:
        while True:
            try:
                if self.session_id:
                    await self._heartbeat()
                else:
                    await self._register()
                self._recovered()
            except grpc.aio.AioRpcError as exc:
                if exc.code() is grpc.StatusCode.NOT_FOUND and self.session_id:
                    log.info("manager %s: %s", self.manager_address, exc.details())
                    self.session_id = ""
                    continue  # register again at once
                self._problem(f"{exc.code().name}: {exc.details()}")
            except Exception as exc:
                log.exception("manager link failed")
                self._problem(repr(exc))
            await asyncio.sleep(self.interval)

    async def _register(self) -> None:
        """Register every agent and kernel, the kernels in chunks of bounded size."""
        taken_at = time.time()
        kernels = self.runtime.list_kernels("")
        seq = self.runtime.kernels.journal.last_seq  # the snapshot's place in the journal
        # Records are immutable: converting many of them can leave the loop.
        parts = await asyncio.to_thread(
            lambda: list(chunked([convert.kernel_to_proto(k) for k in kernels]))
        )
        request = mpb.RegisterAgentsRequest(
            daemon_address=self.daemon_address,
            node=self.runtime.config.daemon.node,
            agents=[convert.agent_to_proto(s) for s in self.runtime.list_agents()],
            kernels=parts[0],
            taken_at=taken_at,
            heartbeat_interval=self.interval,
            daemon_id=self.daemon_id,
            more_kernels=len(parts) > 1,
        )
        response = await self._stub.RegisterAgents(request, timeout=self.timeout)
        for i, part in enumerate(parts[1:], start=2):
            await self._stub.RegisterKernels(
                mpb.RegisterKernelsRequest(
                    session_id=response.session_id, kernels=part, last=i == len(parts)
                ),
                timeout=self.timeout,
            )
        self.session_id = response.session_id
        self._acked_seq = seq
        log.info(
            "registered agents %s with manager %s (%d kernels in %d messages)",
            ", ".join(self.runtime.agents),
            self.manager_address,
            len(kernels),
            len(parts),
        )

    async def _heartbeat(self) -> None:
        """Send each agent's occupancy and health, and the kernels that changed since the
        last acknowledged heartbeat (from the kernel journal), in bounded messages."""
        taken_at = time.time()
        journal = self.runtime.kernels.journal
        seq = journal.last_seq
        events = journal.since(self._acked_seq)
        if events is None:  # fell behind what the journal keeps: start over
            log.info(
                "manager %s: too many changes since the last heartbeat; registering again",
                self.manager_address,
            )
            self.session_id = ""
            await self._register()
            return
        latest: dict[KernelId, KernelEvent] = {}
        for event in events:
            latest[event.kernel.kernel_id] = event
        beats: list[mpb.AgentHeartbeat] = []
        index: dict[str, int] = {}
        for status in self.runtime.list_agents():
            occupied = status.occupied
            index[status.agent_id] = len(beats)
            beats.append(
                mpb.AgentHeartbeat(
                    agent_id=status.agent_id,
                    scaling_group=status.scaling_group,
                    occupied=convert.resources_to_proto(
                        occupied.cores, occupied.memory, occupied.devices, status.ports_used
                    ),
                    kernel_count=status.kernel_count,
                    healthy=status.healthy,
                    status_message=status.status_message,
                )
            )
        changes: list[tuple[int, mpb.KernelStatus]] = []
        for kernel_id, event in latest.items():
            k = event.kernel
            where = index.get(k.agent_id)
            if where is None:
                continue
            if event.kind == "removed":
                beats[where].removed_kernel_ids.append(kernel_id)
                if k.alive:
                    continue
                # and how it ended, so the manager does not take it for lost
            changes.append(
                (
                    where,
                    mpb.KernelStatus(
                        kernel_id=kernel_id,
                        state=convert.KERNEL_STATES[k.state],
                        exit_code=k.exit_code,
                        status_message=k.status_message,
                        finished_at=k.finished_at,
                        end_reason=k.end_reason or "",
                    ),
                )
            )
        for part in chunked(changes, size=lambda item: item[1].ByteSize()):
            request = mpb.HeartbeatRequest(
                daemon_address=self.daemon_address,
                session_id=self.session_id,
                taken_at=taken_at,
                delta=True,
            )
            request.agents.extend(beats)
            for where, change in part:
                request.agents[where].kernels.append(change)
            await self._stub.Heartbeat(request, timeout=self.timeout)
            beats = [_without_kernels(b) for b in beats]  # told once is enough
        self._acked_seq = seq

    def _problem(self, problem: str) -> None:
        if problem != self._last_problem:
            log.warning(
                "manager %s: %s (retrying every %.1fs)",
                self.manager_address,
                problem,
                self.interval,
            )
        self._last_problem = problem

    def _recovered(self) -> None:
        if self._last_problem:
            log.info("manager %s answers again", self.manager_address)
        self._last_problem = ""

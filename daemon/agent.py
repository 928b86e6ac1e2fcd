"""`Agent`: one agent of the daemon, owning its state (slice, ports, records) and backend.

Kernel lifecycle lives here: all-or-nothing batch creation (admitted first by the
pre_create hooks, before anything is allocated), destroy, restart, exec, logs;
recovery from the checkpoint at start and a periodic reconcile loop, so a kernel
that ended behind the daemon's back never keeps its slots or ports. Every end is a
`terminate` of the state, which is how post_terminate hooks hear of it.
Every change to a kernel goes through the agent's `CheckpointedState`
(`daemon/state.py`), which writes it to disk; the agent awaits that write before
it reports the change. Knows nothing of gRPC or of other agents (the registry
enforces daemon-wide ids), nor how the state is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import shutil
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from common.errors import (
    Aborted,
    AgentHostError,
    FailedPrecondition,
    Unavailable,
    Unsupported,
)
from common.ids import AgentId, KernelId, new_kernel_id
from common.kernel_events import EndReason
from common.locks import KeyedLocks
from common.timings import Timings
from daemon.backends import create_backend
from daemon.backends.base import (
    LABEL_AGENT_ID,
    LABEL_DAEMON,
    LABEL_KERNEL_ID,
    Backend,
    ExecEvent,
    Exit,
    LaunchSpec,
    LogTrimming,
    NetworkCapable,
    Recovering,
)
from daemon.backends.logfiles import LogTail
from daemon.checkpoint import Checkpoint
from daemon.config import AgentConfig
from daemon.errors import CheckpointError
from daemon.hooks import KernelHooks
from daemon.kernels import Kernel, KernelRegistry, KernelSpec, KernelState
from daemon.ports import PortPool
from daemon.resources import Allocation, NodeCores, ResourceAllocator, ResourceSlice
from daemon.state import AgentState, CheckpointedState, MemoryState
from daemon.state_dir import checkpoint_path

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds reconcile waits before declaring a dead kernel "vanished", so that the
# kernel's own exit watcher (which knows the exit code) can record it first.
DEAD_KERNEL_GRACE = 0.5
# Seconds a destroy waits for the kernel's watcher to report its exit code.
EXIT_REPORT_WAIT = 1.0
# Every this many reconcile passes the agent also looks for dangling kernels
# (started by this daemon, owned by no record): a full process or container scan.
REAP_DANGLING_EVERY = 12
# Kernel starts one agent has in flight at once. A batch's starts are queued for the
# backend's threads anyway (the local backend has one); starting all of a 128-kernel
# batch at once only floods the event loop with their steps, so every other call
# waits behind them. A few keep the backend busy.
STARTS_IN_FLIGHT = 4


@dataclass(frozen=True)
class AgentStatus:
    """A snapshot of one agent for ListAgents and the manager."""

    agent_id: AgentId
    backend: str
    scaling_group: str
    port_range: tuple[int, int]
    capacity: ResourceSlice
    occupied: Allocation
    ports_total: int
    ports_used: int
    kernel_count: int
    healthy: bool
    status_message: str


class Agent:
    """One agent: its state (slice, ports, kernel records) and its backend."""

    def __init__(
        self,
        config: AgentConfig,
        backend: Backend,
        registry: KernelRegistry,
        state_dir: Path,
        identity: str,
        node_cores: NodeCores | None = None,
        retention: float = 0.0,
        hooks: KernelHooks | None = None,
    ) -> None:
        self.config = config
        self.hooks = hooks or KernelHooks()
        self.retention = retention  # seconds an ended kernel is kept; 0: until destroyed
        self.id: AgentId = config.id
        self.scaling_group = config.scaling_group
        self.backend = backend
        self.identity = identity
        self.checkpoint_path = checkpoint_path(state_dir, config.id)
        self.dir = self.checkpoint_path.parent
        checkpoint = Checkpoint(self.checkpoint_path, config.id)
        self.state: AgentState = CheckpointedState(
            MemoryState(
                registry,
                ResourceAllocator(config.slice, node_cores),
                PortPool(*config.port_range),
            ),
            checkpoint,
        )
        self.healthy = True
        self.status_message = ""
        self._watchers: dict[KernelId, asyncio.Task[Exit | None]] = {}
        self._busy: set[KernelId] = set()  # being destroyed or restarted: watchers stand back
        # One lifecycle step of a kernel at a time (restart, destroy, starting an exec);
        # the calls that run execs, to end with their kernel.
        self._lifecycle = KeyedLocks[KernelId]()
        self._execs: dict[KernelId, set[asyncio.Task[Any]]] = {}
        self._ending: dict[asyncio.Task[Any], str] = {}  # exec calls a lifecycle step ends
        # Lifecycle steps under way (create, restart, destroy): each runs to its end even
        # when its caller gives up, since one stopped half-way would hold slots, ports and
        # processes that nobody ends.
        self._steps: set[asyncio.Task[Any]] = set()
        self._passes = 0  # reconcile passes so far
        # Kernel starts of this agent in flight at once (see STARTS_IN_FLIGHT).
        self._starting = asyncio.Semaphore(STARTS_IN_FLIGHT)
        # Its checkpoint cannot be used: the agent serves nothing (and ends nothing) until
        # the operator acts on the message; the other agents are not affected.
        self.broken: CheckpointError | None = None
        # How long reconcile passes and checkpoint writes take (the daemon's metrics).
        self.reconcile_timings = Timings()
        self.checkpoint_timings = checkpoint.write_timings

    @classmethod
    async def create(
        cls,
        config: AgentConfig,
        registry: KernelRegistry,
        state_dir: Path,
        identity: str,
        node_cores: NodeCores | None = None,
        retention: float = 0.0,
        hooks: KernelHooks | None = None,
    ) -> Agent:
        """Build the agent whole: backend connected, checkpoint recovered, dangling reaped.

        A checkpoint that cannot be used leaves this agent broken (unhealthy, saying
        what to do) instead of failing the daemon.
        """
        backend = await create_backend(config.backend, config.id, config.backend_settings, identity)
        agent = cls(config, backend, registry, state_dir, identity, node_cores, retention, hooks)
        await agent._recover()
        return agent

    # ------------------------------------------------------------- lifecycle

    async def create_kernels(self, specs: Sequence[KernelSpec]) -> list[Kernel]:
        """Create every kernel of specs or none; a failure returns all it took.

        specs were validated at the edge (`common/validation.py`). The pre_create
        hooks see each spec before anything (even an id) is allocated; one refusal
        refuses the batch. A caller that gives up meanwhile finds the batch created
        (or undone), never half-made.
        """
        await self.hooks.admit(self.id, specs)
        return await self._to_the_end(self._create_kernels(specs))

    async def _create_kernels(self, specs: Sequence[KernelSpec]) -> list[Kernel]:
        specs = [
            s if s.kernel_id else s.model_copy(update={"kernel_id": new_kernel_id()}) for s in specs
        ]
        ids = [s.kernel_id for s in specs]
        await self._require_healthy()

        # Ids, resources and ports for the whole batch in one claim: all or none.
        # Pending kernels are not checkpointed, so nothing is written yet.
        kernels = await self.state.claim(
            [
                Kernel(
                    kernel_id=spec.kernel_id, agent_id=self.id, backend=self.backend.name, spec=spec
                )
                for spec in specs
            ]
        )

        results = await asyncio.gather(*(self._start(k) for k in kernels), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            kernels = [self.state.find(k.kernel_id) or k for k in kernels]  # with their handles
            await asyncio.gather(
                *(self.backend.stop(k.handle, 0) for k in kernels if k.handle),
                return_exceptions=True,
            )
            for k in kernels:
                await asyncio.to_thread(shutil.rmtree, self._workdir(k.kernel_id), True)
            await self._forget(kernels)
            raise failures[0]
        # Every kernel turns running before the first await: one write holds them all.
        running = [self.state.update(k.kernel_id, state=KernelState.RUNNING) for k in kernels]
        try:
            kernels = [await written for written in running]
        except OSError as exc:
            # What a reply reports must survive a crash: not on disk, so not created.
            kernels = [self.state.find(k.kernel_id) or k for k in kernels]
            await asyncio.gather(
                *(self.backend.stop(k.handle, 0) for k in kernels if k.handle),
                return_exceptions=True,
            )
            for k in kernels:
                await asyncio.to_thread(shutil.rmtree, self._workdir(k.kernel_id), True)
            with contextlib.suppress(OSError):
                await self._forget(kernels)
            raise self._unwritable(exc, "the create was undone") from None
        for k in kernels:
            self._watch(k)
        self.hooks.created(kernels)
        log.info("agent %s: created kernels %s", self.id, ", ".join(ids))
        return kernels

    async def destroy_kernel(self, kernel_id: KernelId, grace: float = 0) -> Kernel:
        """End the kernel (and its execs), return everything it held and forget it.

        Serialised with restarts and exec starts of the same kernel: a destroy that
        races a restart ends with the kernel destroyed and no process left.
        """
        return await self._to_the_end(self._destroy_kernel(kernel_id, grace))

    async def _destroy_kernel(self, kernel_id: KernelId, grace: float) -> Kernel:
        async with self._lifecycle.hold(kernel_id):
            kernel = self.state.get(kernel_id)
            self._busy.add(kernel_id)
            try:
                await self._end_execs(kernel_id, "destroyed")
                if kernel.handle and kernel.alive:
                    await self.backend.stop(kernel.handle, grace or self.config.kill_grace)
                if self.state.get(kernel_id).alive:
                    seen = await self._exit_seen(kernel_id)
                    self._stop_watching(kernel_id)
                    code = seen.exit_code if seen else None
                    # written together with the removal below
                    self.state.terminate(kernel_id, code, "destroyed", EndReason.DESTROYED)
                removed = self.state.remove(kernel_id)
                await asyncio.to_thread(shutil.rmtree, self._workdir(kernel_id), True)
            finally:
                self._busy.discard(kernel_id)
            try:
                kernel = await removed
            except OSError as exc:
                # The kernel is ended and forgotten; the file catches up on a later write.
                kernel = removed.value
                log.warning("agent %s: %s", self.id, self._unwritable(exc, "written later"))
        log.info("agent %s: destroyed kernel %s", self.id, kernel_id)
        return kernel

    async def restart_kernel(self, kernel_id: KernelId) -> Kernel:
        """Stop and start the kernel again with the same slots and ports (one at a time)."""
        return await self._to_the_end(self._restart_kernel(kernel_id))

    async def _restart_kernel(self, kernel_id: KernelId) -> Kernel:
        async with self._lifecycle.hold(kernel_id):
            kernel = self.state.get(kernel_id)
            if not kernel.alive:
                raise FailedPrecondition(
                    f"kernel {kernel_id!r} is terminated and holds no resources; create it anew"
                )
            await self._require_healthy()
            self._busy.add(kernel_id)
            try:
                self._stop_watching(kernel_id)
                await self._end_execs(kernel_id, "restarted")
                await self.backend.stop(kernel.handle, self.config.kill_grace)
                kernel = await self.state.update(kernel_id, state=KernelState.PENDING)
                try:
                    await self._start(kernel)
                except AgentHostError as exc:
                    await self.state.terminate(
                        kernel_id, None, f"restart failed: {exc}", EndReason.DESTROYED
                    )
                    raise
                kernel = await self.state.update(
                    kernel_id,
                    state=KernelState.RUNNING,
                    exit_code=None,
                    status_message="restarted",
                )
                self._watch(kernel)
            finally:
                self._busy.discard(kernel_id)
            return kernel

    def get_kernel(self, kernel_id: KernelId) -> Kernel:
        """The kernel, if this agent owns it."""
        return self.state.get(kernel_id)

    def list_kernels(self) -> list[Kernel]:
        """This agent's kernels, oldest first."""
        return self.state.ordered()

    async def kernel_logs(self, kernel_id: KernelId, tail_lines: int, max_bytes: int) -> LogTail:
        """The end of what the kernel has written (at most max_bytes)."""
        kernel = self.state.get(kernel_id)
        return await self.backend.logs(
            kernel.handle, self._launch_spec(kernel), tail_lines, max_bytes
        )

    async def stream_logs(
        self, kernel_id: KernelId, tail_lines: int, follow: bool
    ) -> AsyncIterator[bytes]:
        """What the kernel has written in chunks; with follow, on until it ends."""
        kernel = self.state.get(kernel_id)

        def alive() -> bool:
            current = self.state.find(kernel_id)
            return current is not None and current.state is KernelState.RUNNING

        async for chunk in self.backend.stream_logs(
            kernel.handle, self._launch_spec(kernel), tail_lines, follow, alive
        ):
            yield chunk

    async def execute(
        self, kernel_id: KernelId, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv inside the kernel, yielding output as produced, then the exit.

        The exec starts only between lifecycle steps of its kernel, and a destroy or
        restart of the kernel ends it (its call is cancelled, its processes killed).
        """
        async with self._lifecycle.hold(kernel_id):
            kernel = self.state.get(kernel_id)
            if kernel.state is not KernelState.RUNNING:
                raise FailedPrecondition(
                    f"kernel {kernel_id!r} is {kernel.state.value}; only a running kernel can "
                    "execute"
                )
            task = asyncio.current_task()
            assert task is not None
            calls = self._execs.setdefault(kernel_id, set())
            calls.add(task)
        try:
            async for event in self.backend.execute(
                kernel.handle, self._launch_spec(kernel), argv, stdin, timeout
            ):
                yield event
        except asyncio.CancelledError:
            why = self._ending.pop(task, None)
            if why is None:
                raise  # the caller went away
            task.uncancel()  # ended by a destroy or restart: the caller is told so
            raise Aborted(f"kernel {kernel_id!r} was {why} while the command ran") from None
        finally:
            calls.discard(task)
            if not calls and self._execs.get(kernel_id) is calls:
                del self._execs[kernel_id]

    async def create_network(self, name: str) -> str:
        """Create an agent-scoped network (backends that have them)."""
        return await self._networks().create_network(self.id, name)

    async def destroy_network(self, name: str) -> None:
        """Remove an agent-scoped network."""
        await self._networks().destroy_network(self.id, name)

    def status(self) -> AgentStatus:
        """Capacity, occupancy and health right now."""
        return AgentStatus(
            agent_id=self.id,
            backend=self.backend.name,
            scaling_group=self.scaling_group,
            port_range=self.config.port_range,
            capacity=self.config.slice,
            occupied=self.state.occupied(),
            ports_total=self.state.ports_total,
            ports_used=self.state.ports_used(),
            kernel_count=self.state.alive_count(),
            healthy=self.healthy,
            status_message=self.status_message,
        )

    # ------------------------------------------------------- reconciliation

    async def reconcile(self) -> None:
        """Check the backend and every running kernel; free what has ended; forget what
        ended long ago; write a checkpoint a full disk held back. Timed."""
        with self.reconcile_timings.timed():
            await self._reconcile_pass()

    async def _reconcile_pass(self) -> None:
        if self.broken is not None:
            await self._recover()  # the operator may have moved the file aside meanwhile
            return
        try:
            await self.backend.check()
            if not self.healthy:
                log.info("agent %s: backend %s answers again", self.id, self.backend.name)
            self.healthy, self.status_message = True, ""
        except Unavailable as exc:
            if self.healthy:
                log.warning("agent %s: %s", self.id, exc)
            self.healthy, self.status_message = False, str(exc)
            return
        self._passes += 1
        if self._passes % REAP_DANGLING_EVERY == 0:
            await self._reap_dangling()
            await asyncio.to_thread(self._remove_orphan_dirs)
        await self._forget_old()
        try:
            await self.state.flush()
        except OSError as exc:
            log.warning("agent %s: %s", self.id, self._unwritable(exc, "retried"))
        if isinstance(self.backend, LogTrimming) and self.config.log_max_bytes:
            await self.backend.trim_logs(
                [
                    self._workdir(k.kernel_id)
                    for k in self.state.kernels()
                    if k.state is KernelState.RUNNING
                ],
                self.config.log_max_bytes,
            )
        dead: list[Kernel] = []
        for kernel in self.state.kernels():
            if kernel.state is not KernelState.RUNNING or kernel.kernel_id in self._busy:
                continue
            try:
                alive = await self.backend.is_alive(kernel.handle)
            except Unavailable:
                return
            if not alive:
                dead.append(kernel)
            elif kernel.kernel_id not in self._watchers:
                self._watch(kernel)  # the backend came back: watch again
        if not dead:
            return
        # A watcher that saw the exit knows its code and reason: give it the first word.
        await asyncio.sleep(DEAD_KERNEL_GRACE)
        for kernel in dead:
            if not self._is_running(kernel.kernel_id) or kernel.kernel_id in self._busy:
                continue
            self._stop_watching(kernel.kernel_id)
            self.state.terminate(
                kernel.kernel_id, None, "vanished", EndReason.LOST
            )  # flushed below
            with contextlib.suppress(AgentHostError):
                await self.backend.stop(kernel.handle, 0)  # remove what it left behind
            log.warning(
                "agent %s: kernel %s vanished; its slots are free", self.id, kernel.kernel_id
            )
        await self.state.flush()

    async def close(self, destroy_kernels: bool) -> None:
        """Let lifecycle steps under way end; stop watching; destroy the kernels too when
        asked; flush the checkpoint."""
        if self._steps:
            await asyncio.wait(self._steps)
        if destroy_kernels:
            await asyncio.gather(
                *(self.destroy_kernel(k.kernel_id) for k in self.state.kernels()),
                return_exceptions=True,
            )
        for kernel_id in list(self._watchers):
            self._stop_watching(kernel_id)
        try:
            await self.state.flush()
        except OSError as exc:  # a full disk: the next start reconciles with what runs
            log.warning("agent %s: %s", self.id, self._unwritable(exc, "not written"))
        finally:
            await self.backend.close()

    async def _to_the_end(self, step: Coroutine[Any, Any, T]) -> T:
        """step's result; step runs on to its end even if the caller is cancelled."""
        task = asyncio.ensure_future(step)
        self._steps.add(task)
        task.add_done_callback(self._steps.discard)
        return await asyncio.shield(task)

    async def _end_execs(self, kernel_id: KernelId, why: str) -> None:
        """End the calls running execs in kernel_id (ABORTED, saying why); let them clean up."""
        calls = [t for t in self._execs.pop(kernel_id, ()) if t is not asyncio.current_task()]
        for task in calls:
            self._ending[task] = why
            task.cancel()
        if calls:
            await asyncio.wait(calls, timeout=10)
        for task in calls:
            self._ending.pop(task, None)

    async def _recover(self) -> None:
        """Rebuild from the checkpoint and what really runs; reap what nobody owns."""
        restored: list[Kernel] = []
        watched: list[KernelId] = []
        lost: list[KernelId] = []  # running when the daemon stopped, gone since
        try:
            loaded = await self.state.load()
        except CheckpointError as exc:
            if self.broken is None:
                log.error("agent %s: %s", self.id, exc)
            self.broken = exc
            self.healthy, self.status_message = False, str(exc)
            return
        if self.broken is not None:
            log.info("agent %s: its checkpoint can be read again; recovering", self.id)
            self.broken = None
            self.healthy, self.status_message = True, ""
        for kernel in loaded:
            if kernel.state is KernelState.PENDING:
                continue  # never reported created; reap_dangling ends any leftover
            if kernel.state is KernelState.RUNNING:
                try:
                    alive = await self.backend.is_alive(kernel.handle)
                except Unavailable as exc:
                    # The backend is down: keep its slots until it can be asked.
                    log.warning(
                        "agent %s: cannot check kernel %s yet: %s", self.id, kernel.kernel_id, exc
                    )
                    self.healthy, self.status_message = False, str(exc)
                    alive = True
                if alive:
                    if isinstance(self.backend, Recovering):
                        await self.backend.recover(kernel.handle)  # e.g. its uid, held again
                    restored.append(kernel)
                    if self.healthy:
                        watched.append(kernel.kernel_id)
                    log.info(
                        "agent %s: re-adopted kernel %s (%s)",
                        self.id,
                        kernel.kernel_id,
                        kernel.backend_ref,
                    )
                    continue
                with contextlib.suppress(AgentHostError):
                    await self.backend.stop(kernel.handle, 0)
                lost.append(kernel.kernel_id)
                log.info(
                    "agent %s: kernel %s ended while the daemon was down", self.id, kernel.kernel_id
                )
            restored.append(kernel)
        restoring = self.state.restore(restored)  # the re-adopted slots and ports
        for kernel_id in lost:
            # Restored as it was, then ended like any kernel that ends, so whoever hears of
            # ends (post_terminate hooks, watchers) hears of it; one write holds both.
            self.state.terminate(kernel_id, None, "ended while the daemon was down", EndReason.LOST)
        try:
            await restoring  # on disk
        except OSError as exc:  # a full disk must not keep the agent from serving
            log.warning("agent %s: %s", self.id, self._unwritable(exc, "written later"))
        for kernel_id in watched:
            self._watch(self.state.get(kernel_id))
        if self.healthy:
            await self._reap_dangling()
            await asyncio.to_thread(self._remove_orphan_dirs)

    async def _reap_dangling(self) -> None:
        """End what the backend runs for this agent that no live kernel record owns."""
        try:
            reaped = await self.backend.reap_dangling(self.id, self.state.alive_ids())
        except Unavailable as exc:
            # The backend is down: serve the other agents meanwhile.
            log.warning("agent %s: cannot look for dangling kernels yet: %s", self.id, exc)
            self.healthy, self.status_message = False, str(exc)
            return
        for kernel_id in reaped:
            log.warning(
                "agent %s: ended dangling kernel %s (no record owns it)", self.id, kernel_id
            )

    # --------------------------------------------------------------- details

    async def _start(self, kernel: Kernel) -> None:
        async with self._starting:
            await self._start_now(kernel)

    async def _start_now(self, kernel: Kernel) -> None:
        launch = self._launch_spec(kernel)
        try:
            await asyncio.to_thread(launch.workdir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise Unavailable(
                f"agent {self.id!r}: cannot make the working directory {launch.workdir}: "
                f"{exc.strerror or exc} (errno {exc.errno})"
            ) from None
        started = await self.backend.start(launch)
        await self.state.update(
            kernel.kernel_id,
            handle=started.handle,
            memory_limit=started.memory_limit,
            limits=dict(started.limits),
            uid=started.uid,
            gid=started.gid,
            backend_ref=started.backend_ref,
        )

    def _launch_spec(self, kernel: Kernel) -> LaunchSpec:
        spec = kernel.spec
        env = dict(spec.env)
        env.update(
            AGENTHOST_AGENT_ID=self.id,
            AGENTHOST_KERNEL_ID=kernel.kernel_id,
            AGENTHOST_DAEMON=self.identity,
        )
        env.update({f"PORT_{name.upper()}": str(port) for name, port in kernel.ports.items()})
        labels = dict(spec.labels)
        labels.update(
            {
                LABEL_AGENT_ID: self.id,
                LABEL_KERNEL_ID: kernel.kernel_id,
                LABEL_DAEMON: self.identity,
            }
        )
        return LaunchSpec(
            agent_id=self.id,
            kernel_id=kernel.kernel_id,
            image=spec.image,
            command=spec.command,
            env=env,
            labels=labels,
            workdir=self._workdir(kernel.kernel_id),
            cores=kernel.allocation.cores or self.config.slice.cores,
            memory_limit=kernel.allocation.memory or self.config.slice.memory,
            cpu_quota=kernel.allocation.cpu_quota,
            devices=kernel.allocation.devices,
            ports=kernel.ports,
            container_ports={p.name: p.container_port for p in spec.ports},
            networks=spec.networks,
            log_max_bytes=self.config.log_max_bytes,
        )

    def _workdir(self, kernel_id: KernelId) -> Path:
        return self.config.kernels_dir / kernel_id

    def _watch(self, kernel: Kernel) -> None:
        # In a context of its own: the call that started the watch (a create, a restart)
        # is not the caller of the kernel's end, for the logs nor for the hooks.
        self._watchers[kernel.kernel_id] = asyncio.create_task(
            self._await_exit(kernel),
            name=f"watch {self.id}/{kernel.kernel_id}",
            context=contextvars.Context(),
        )

    def _stop_watching(self, kernel_id: KernelId) -> None:
        task = self._watchers.pop(kernel_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _await_exit(self, kernel: Kernel) -> Exit | None:
        """Wait for the kernel's end and record it; returns the exit (None: not seen)."""
        try:
            exit_ = await self.backend.wait(kernel.handle)
        except Unavailable:
            self._watchers.pop(kernel.kernel_id, None)  # reconcile re-watches later
            return None
        if kernel.kernel_id in self._busy or not self._is_running(kernel.kernel_id):
            return exit_  # a destroy or restart ended it: theirs to record
        with contextlib.suppress(AgentHostError):
            await self.backend.stop(kernel.handle, 0)
        if not self._is_running(kernel.kernel_id):
            return exit_  # ended or forgotten meanwhile
        self._stop_watching(kernel.kernel_id)
        await self.state.terminate(kernel.kernel_id, exit_.exit_code, exit_.reason, exit_.end)
        code = "" if exit_.exit_code is None else f" with exit code {exit_.exit_code}"
        log.info("agent %s: kernel %s ended: %s%s", self.id, kernel.kernel_id, exit_.reason, code)
        return exit_

    async def _exit_seen(self, kernel_id: KernelId) -> Exit | None:
        """How a kernel just stopped ended, as its watcher saw it (bounded wait)."""
        task = self._watchers.get(kernel_id)
        if task is None:
            return None
        done, _ = await asyncio.wait({task}, timeout=EXIT_REPORT_WAIT)
        if not done or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def _is_running(self, kernel_id: KernelId) -> bool:
        kernel = self.state.find(kernel_id)
        return kernel is not None and kernel.state is KernelState.RUNNING

    async def _forget(self, kernels: Sequence[Kernel]) -> None:
        """Drop the records of a batch that did not start (pending: nothing to write)."""
        for k in kernels:
            if self.state.find(k.kernel_id) is not None:
                await self.state.remove(k.kernel_id)

    async def _forget_old(self) -> None:
        """Forget kernels that ended by themselves kernel_retention ago (their output too)."""
        retention = self.retention
        if not retention:
            return
        now = time.time()
        for kernel in self.state.kernels():
            if kernel.state is KernelState.TERMINATED and now - kernel.finished_at > retention:
                if kernel.kernel_id in self._busy:
                    continue
                async with self._lifecycle.hold(kernel.kernel_id):
                    if self.state.find(kernel.kernel_id) is None:
                        continue
                    removed = self.state.remove(kernel.kernel_id)
                    await asyncio.to_thread(shutil.rmtree, self._workdir(kernel.kernel_id), True)
                    with contextlib.suppress(OSError):
                        await removed
                log.info(
                    "agent %s: forgot kernel %s (ended %.0fs ago)",
                    self.id,
                    kernel.kernel_id,
                    now - kernel.finished_at,
                )

    def _remove_orphan_dirs(self) -> None:
        """Remove kernel working directories no record owns (left by a crash)."""
        try:
            entries = list(self.config.kernels_dir.iterdir())
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir() and self.state.find(KernelId(entry.name)) is None:
                shutil.rmtree(entry, ignore_errors=True)
                log.info("agent %s: removed orphaned kernel directory %s", self.id, entry)

    def _unwritable(self, exc: OSError, what: str) -> Unavailable:
        return Unavailable(
            f"agent {self.id!r}: cannot write its checkpoint {self.checkpoint_path}: "
            f"{exc.strerror or exc} (errno {exc.errno}); {what}"
        )

    async def _require_healthy(self) -> None:
        if self.broken is not None:
            raise self.broken
        if not self.healthy:
            await self.reconcile()
        if not self.healthy:
            raise Unavailable(f"agent {self.id!r}: {self.status_message}")

    def _networks(self) -> NetworkCapable:
        if not isinstance(self.backend, NetworkCapable):
            raise Unsupported(f"agent {self.id!r}: backend {self.backend.name!r} has no networks")
        return self.backend

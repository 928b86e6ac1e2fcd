"""The kubernetes backend's verbs: a kernel is one pod in the agent's namespace, on this node.

start creates the pod (see `spec`) and waits until its container runs, deleting
it again if it cannot start (an image that cannot be pulled, a command that
cannot run, a node that refuses it, no start within `start_timeout`); wait
resolves from the pod watch; stop keeps the output of a kernel that ended by
itself, deletes the pod with the grace period and waits until it is gone (then
deletes it without grace). Every call runs the synchronous client in a thread
(`api`) and every call that finds the API server gone raises `Unavailable`
naming its address. One instance serves one agent.
Knows pods only: nothing of agents' slices, port pools, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Container
from pathlib import Path
from typing import ClassVar, TypeVar

from common.errors import (
    AgentHostError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.backends import logfiles
from daemon.backends.base import ExecEvent, Exit, Handle, LaunchSpec, Started
from daemon.backends.kubernetes import execute, reconcile
from daemon.backends.kubernetes.api import JsonObject, KubeApi, Refusal
from daemon.backends.kubernetes.connection import load_configuration
from daemon.backends.kubernetes.handle import PodHandle
from daemon.backends.kubernetes.podstatus import exit_of, pending_reason, start_outcome
from daemon.backends.kubernetes.settings import KubernetesSettings
from daemon.backends.kubernetes.spec import pod_manifest, pod_name
from daemon.backends.kubernetes.watch import PodWatch
from daemon.backends.logfiles import LogTail

log = logging.getLogger(__name__)
T = TypeVar("T")

# Seconds a deleted pod may take beyond its grace period to disappear before it
# is deleted again without grace (its node may be gone).
STOP_MARGIN = 10.0


class KubernetesBackend:
    """Kernels as pods of one agent on one API server."""

    name = "kubernetes"
    settings_model: ClassVar[type[KubernetesSettings]] = KubernetesSettings

    def __init__(
        self, agent_id: AgentId, identity: str, settings: KubernetesSettings, api: KubeApi
    ) -> None:
        self.agent_id = agent_id
        self.identity = identity
        self.settings = settings
        self.api = api
        self.owner = reconcile.Owner(identity, agent_id, settings.node_name)
        self.pods = PodWatch(api, self.owner.label_selector, self.owner.field_selector)

    @classmethod
    async def create(
        cls, agent_id: AgentId, settings: KubernetesSettings, identity: str
    ) -> KubernetesBackend:
        """Build the backend of one agent; an API server that is down only makes it unhealthy.

        Credentials that cannot be loaded (no kubeconfig, not in a pod) are a
        FailedPrecondition: the daemon does not start until the set-up is fixed.
        """
        configuration = await asyncio.to_thread(load_configuration, agent_id, settings.kubeconfig)
        return cls(agent_id, identity, settings, KubeApi(configuration, settings.namespace))

    # ------------------------------------------------------------------ verbs

    async def start(self, launch: LaunchSpec) -> Started:
        """Create the kernel's pod and wait until it runs; on any failure delete it."""
        image = launch.image or self.settings.default_image
        if not image:
            raise InvalidArgument(
                f"image: a kubernetes kernel needs an image (or set kubernetes.default_image "
                f"for agent {launch.agent_id!r})"
            )
        manifest = pod_manifest(launch, image, self.identity, self.settings)
        pod = await self._create(pod_name(self.identity, launch.kernel_id), manifest, launch)
        handle = PodHandle(
            namespace=self.settings.namespace,
            name=pod["metadata"]["name"],
            uid=pod["metadata"]["uid"],
            workdir=launch.workdir,
        )
        try:
            outcome = await self.pods.wait_for(
                handle.name,
                handle.uid,
                lambda p: start_outcome(p, launch.kernel_id, image),
                timeout=self.settings.start_timeout,
            )
        except TimeoutError:
            current = await self._quietly_get(handle.name)
            await self._remove_quietly(handle)
            raise FailedPrecondition(
                f"kernel {launch.kernel_id!r}: its pod did not start within "
                f"{self.settings.start_timeout:g}s ({pending_reason(current)}); kubernetes."
                "start_timeout sets how long a start may take"
            ) from None
        except BaseException:
            await self._remove_quietly(handle)
            raise
        if outcome.error is not None:
            await self._remove_quietly(handle)
            raise outcome.error
        return Started(
            handle=handle.to_dict(),
            memory_limit="kubernetes" if launch.memory_limit else "none",
            backend_ref=handle.ref,
        )

    async def wait(self, handle: Handle) -> Exit:
        """Return when the pod's kernel has ended (from the pod watch)."""
        h = PodHandle.parse(handle)
        if h is None:
            return Exit(exit_code=None, reason="unknown handle version", end=EndReason.LOST)
        return await self.pods.wait_for(h.name, h.uid, exit_of)

    async def stop(self, handle: Handle, grace: float) -> None:
        """Delete the pod with grace seconds (then without), keeping an ended kernel's output."""
        h = PodHandle.parse(handle)
        if h is None:
            return
        pod = await self._translated(self.api.get_pod(h.name), f"pod {h.name}")
        if pod is None or pod["metadata"].get("uid") != h.uid:
            return
        if exit_of(pod) is not None:
            await self._keep_output(h)
        await self._delete(h, math.ceil(grace))
        try:
            await self.pods.wait_for(h.name, h.uid, _gone, timeout=grace + STOP_MARGIN)
        except TimeoutError:
            log.warning(
                "agent %s: pod %s outlived its grace period; deleting it without grace",
                self.agent_id,
                h.name,
            )
            await self._delete(h, 0)

    async def is_alive(self, handle: Handle) -> bool:
        """True when the handle's pod exists, is this agent's, and its kernel runs."""
        h = PodHandle.parse(handle)
        if h is None:
            return False
        return await self._translated(reconcile.is_alive(self.api, h, self.owner), f"pod {h.name}")

    async def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv in the kernel's container through the exec subresource, streaming output."""
        h = self._require(handle, launch)
        async for event in execute.run(self.api, h.name, launch.kernel_id, argv, stdin, timeout):
            yield event

    async def logs(
        self, handle: Handle, launch: LaunchSpec, tail_lines: int, max_bytes: int
    ) -> LogTail:
        """The end of the pod's output (the log subresource; the kubelet rotates it); the
        kept output once the pod is deleted."""
        h = self._require(handle, launch)
        try:
            data = await self.api.pod_log(h.name, tail_lines)
        except Refusal as refusal:
            if refusal.code == 404:
                return await asyncio.to_thread(
                    logfiles.read_tail, h.log_path, tail_lines, max_bytes
                )
            if refusal.code == 400:  # not started yet: nothing written
                return LogTail(b"", False)
            raise refusal.domain_error(f"kernel {launch.kernel_id!r}: logs") from None
        if len(data) > max_bytes:
            return LogTail(data[-max_bytes:], True)
        return LogTail(data, False)

    async def stream_logs(
        self,
        handle: Handle,
        launch: LaunchSpec,
        tail_lines: int,
        follow: bool,
        alive: Callable[[], bool],
    ) -> AsyncIterator[bytes]:
        """The pod's output as the API server streams it; the kept output once deleted."""
        h = self._require(handle, launch)
        try:
            async for chunk in self.api.pod_log_stream(h.name, tail_lines, follow):
                yield chunk
        except Refusal as refusal:
            if refusal.code == 404:
                async for chunk in logfiles.stream(h.log_path, tail_lines, False, alive):
                    yield chunk
                return
            if refusal.code == 400:
                return
            raise refusal.domain_error(f"kernel {launch.kernel_id!r}: logs") from None

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """Delete pods labelled as this daemon's and agent_id's that no kernel owns."""
        owner = reconcile.Owner(self.identity, agent_id, self.settings.node_name)
        return await self._translated(
            reconcile.reap_dangling(self.api, owner, known), "dangling pods"
        )

    async def check(self) -> None:
        """Raise Unavailable (naming the API server) when it does not answer."""
        await self.api.ping()

    async def close(self) -> None:
        """Stop the watch and the client's threads; the pods keep running."""
        await self.pods.close()
        self.api.close()

    # ---------------------------------------------------------------- details

    async def _create(self, name: str, manifest: object, launch: LaunchSpec) -> JsonObject:
        where = f"namespace {self.settings.namespace!r} of the API server at {self.api.url}"
        replaced = False
        while True:
            try:
                return await self.api.create_pod(manifest)
            except Refusal as refusal:
                error = refusal
            if error.code == 409 and not replaced:
                # A pod of that name is left from a kernel that was never recorded
                # (the daemon died in between): ours to replace.
                await self._replace_leftover(name, launch)
                replaced = True
            elif error.code == 404:
                raise FailedPrecondition(
                    f"agent {launch.agent_id!r}: {where} does not exist ({error.message}); "
                    "create it, or set kubernetes.namespace"
                )
            elif error.code in (400, 422):
                raise InvalidArgument(
                    f"kernel {launch.kernel_id!r}: the API server at {self.api.url} refused "
                    f"its pod: {error.message}"
                )
            else:
                raise error.domain_error(
                    f"kernel {launch.kernel_id!r}: cannot create its pod in {where}"
                )

    async def _replace_leftover(self, name: str, launch: LaunchSpec) -> None:
        pod = await self._translated(self.api.get_pod(name), f"pod {name}")
        if pod is not None and not self.owner.owns(pod):
            raise AlreadyExists(
                f"kernel {launch.kernel_id!r}: a pod named {name!r} exists in namespace "
                f"{self.settings.namespace!r} and is not this agent's"
            )
        if pod is not None:
            leftover = PodHandle(self.settings.namespace, name, pod["metadata"]["uid"], Path())
            await self._delete(leftover, 0)
            with contextlib.suppress(TimeoutError):
                await self.pods.wait_for(name, leftover.uid, _gone, timeout=STOP_MARGIN)

    async def _delete(self, h: PodHandle, grace: int) -> None:
        try:
            await self.api.delete_pod(h.name, grace, uid=h.uid)
        except Refusal as refusal:
            raise refusal.domain_error(f"cannot delete pod {h.name}") from None

    async def _remove_quietly(self, h: PodHandle) -> None:
        with contextlib.suppress(AgentHostError, Refusal):
            await self.api.delete_pod(h.name, 0, uid=h.uid)

    async def _quietly_get(self, name: str) -> JsonObject | None:
        with contextlib.suppress(AgentHostError, Refusal):
            return await self.api.get_pod(name)
        return None

    async def _keep_output(self, h: PodHandle) -> None:
        """Copy an ended pod's output next to the kernel before the pod is deleted."""
        with contextlib.suppress(AgentHostError, Refusal, OSError):
            data = await self.api.pod_log(h.name, 0)
            await asyncio.to_thread(_write, h.log_path, data)

    async def _translated(self, call: Awaitable[T], what: str) -> T:
        """Await call (a check the reconcile loop makes); an error Status becomes a domain error.

        A refusal of the daemon's credentials or permissions is Unavailable here:
        the agent turns unhealthy saying so, and the daemon's other agents serve.
        """
        context = f"kubernetes API server at {self.api.url}: {what}"
        try:
            return await call
        except Refusal as refusal:
            if refusal.code in (401, 403):
                raise Unavailable(
                    f"{context}: the daemon's credentials are refused: {refusal.message}"
                ) from None
            raise refusal.domain_error(context) from None

    def _require(self, handle: Handle, launch: LaunchSpec) -> PodHandle:
        h = PodHandle.parse(handle)
        if h is None:
            raise NotFound(f"kernel {launch.kernel_id!r} has no pod handle this daemon reads")
        return h


def _gone(pod: JsonObject | None) -> bool | None:
    return True if pod is None else None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

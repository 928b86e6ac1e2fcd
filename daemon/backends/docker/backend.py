"""The docker backend's verbs: a kernel is one container on the agent's engine.

start creates the container (image, command, env, ownership labels, the kernel's
cores/memory/devices, published ports, agent networks) and starts it, removing it
again if anything fails midway; wait resolves from the engine's event stream;
stop gives the container its grace period, keeps the output of a kernel that ended
by itself, and removes it. Every call that finds the engine gone raises
`Unavailable` naming the engine's address. One instance serves one agent.
Knows containers only: nothing of agents' slices, port pools, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Container
from pathlib import Path
from typing import Any, ClassVar

from aiodocker.exceptions import DockerError

from common.errors import (
    AgentHostError,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon.backends import logfiles
from daemon.backends.base import ExecEvent, Exit, Handle, LaunchSpec, Started
from daemon.backends.docker import execute, reconcile
from daemon.backends.docker.engine import Engine, is_not_found, resolve_url
from daemon.backends.docker.events import ExitWatcher
from daemon.backends.docker.handle import ContainerHandle
from daemon.backends.docker.images import ImagePuller, is_missing_image, missing_image
from daemon.backends.docker.networks import AgentNetworks
from daemon.backends.docker.settings import DockerSettings
from daemon.backends.docker.spec import container_config, container_name, numeric_user
from daemon.backends.logfiles import LogTail

log = logging.getLogger(__name__)

# Fragments of the engine's start errors and what they mean for the caller.
PORT_TAKEN = ("port is already allocated", "address already in use")
CANNOT_EXEC = ("executable file not found", "no such file or directory", "permission denied")


class DockerBackend:
    """Kernels as containers of one agent on one Docker engine."""

    name = "docker"
    settings_model: ClassVar[type[DockerSettings]] = DockerSettings

    def __init__(
        self, agent_id: AgentId, identity: str, settings: DockerSettings, engine: Engine
    ) -> None:
        self.agent_id = agent_id
        self.identity = identity
        self.settings = settings
        self.engine = engine
        self.exits = ExitWatcher(engine, reconcile.ownership_labels(identity, agent_id))
        self.images = ImagePuller(engine)
        self.networks = AgentNetworks(engine, identity)

    @classmethod
    async def create(
        cls, agent_id: AgentId, settings: DockerSettings, identity: str
    ) -> DockerBackend:
        """Build the backend of one agent; an engine that is down only makes it unhealthy."""
        return cls(agent_id, identity, settings, Engine(resolve_url(settings.url)))

    # ------------------------------------------------------------------ verbs

    async def start(self, launch: LaunchSpec) -> Started:
        """Create and start the kernel's container; on any failure remove what was made."""
        image = launch.image or self.settings.default_image
        if not image:
            raise InvalidArgument(
                f"image: a docker kernel needs an image (or set docker.default_image "
                f"for agent {launch.agent_id!r})"
            )
        networks = await self.networks.resolve(launch.agent_id, launch.networks)
        config = container_config(
            launch,
            image,
            host_ip=self.settings.host_ip,
            init=self.settings.init,
            stop_timeout=self.settings.stop_timeout,
            networks=networks,
            user=self.settings.run_as,
        )
        name = container_name(self.identity, launch.agent_id, launch.kernel_id)
        container_id = await self._create(name, config, image, launch)
        try:
            for network in networks[1:]:
                await self.networks.connect(network, container_id, launch.kernel_id)
            await self._start(container_id, launch)
        except BaseException:
            await self._remove_quietly(container_id)
            raise
        handle = ContainerHandle(container_id=container_id, name=name, workdir=launch.workdir)
        memory = "docker" if launch.memory_limit else "none"
        uid, gid = numeric_user(self.settings.run_as)
        return Started(
            handle=handle.to_dict(),
            memory_limit=memory,
            backend_ref=f"container {container_id[:12]}",
            limits={
                "cpuset": "docker" if launch.cores else "none",
                "memory": memory,
                "user": "run-as" if self.settings.run_as else "image",
            },
            uid=uid,
            gid=gid,
        )

    async def wait(self, handle: Handle) -> Exit:
        """Return when the container has ended (from the engine's event stream)."""
        h = ContainerHandle.parse(handle)
        if h is None:
            return Exit(exit_code=None, reason="unknown handle version", end=EndReason.LOST)
        return await self.exits.wait(h.container_id)

    async def stop(self, handle: Handle, grace: float) -> None:
        """SIGTERM, grace seconds, SIGKILL; keep an ended kernel's output; remove; idempotent."""
        h = ContainerHandle.parse(handle)
        if h is None:
            return
        container = self.engine.client.containers.container(h.container_id)
        ended_by_itself = self.exits.has_exited(h.container_id)
        try:
            with self.engine.call("stop container"):
                if grace > 0 and not ended_by_itself:
                    await container.stop(t=math.ceil(grace))
                if ended_by_itself:
                    await self._keep_output(h)
                await container.delete(force=True)
        except DockerError as exc:
            if not (is_not_found(exc) or "already in progress" in exc.message):
                raise AgentHostError(
                    f"docker engine at {self.engine.url}: cannot remove container "
                    f"{h.name}: {exc.message}"
                ) from None
        self.exits.forget(h.container_id)

    async def is_alive(self, handle: Handle) -> bool:
        """True when the handle's container exists, is this agent's, and runs."""
        h = ContainerHandle.parse(handle)
        if h is None:
            return False
        return await reconcile.is_alive(self.engine, h, self.identity, self.agent_id)

    async def execute(
        self, handle: Handle, launch: LaunchSpec, argv: list[str], stdin: bytes, timeout: float
    ) -> AsyncIterator[ExecEvent]:
        """Run argv in the kernel's container through docker exec, streaming its output."""
        h = self._require(handle, launch)
        async for event in execute.run(
            self.engine, h.container_id, launch.kernel_id, argv, stdin, timeout
        ):
            yield event

    async def logs(
        self, handle: Handle, launch: LaunchSpec, tail_lines: int, max_bytes: int
    ) -> LogTail:
        """The container's stdout and stderr (the engine keeps at most log_max_bytes); the
        kept output once the container is removed."""
        h = self._require(handle, launch)
        params: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "tail": str(tail_lines) if tail_lines > 0 else "all",
        }
        try:
            with self.engine.call("logs"):
                raw = await self.engine.read(f"containers/{h.container_id}/logs", params)
        except DockerError as exc:
            if not is_not_found(exc):
                raise AgentHostError(
                    f"docker engine at {self.engine.url}: cannot read logs of kernel "
                    f"{launch.kernel_id!r}: {exc.message}"
                ) from None
            return await asyncio.to_thread(logfiles.read_tail, h.log_path, tail_lines, max_bytes)
        data = execute.demultiplex(raw)
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
        """The container's output as the engine streams it (follow: until it ends)."""
        h = self._require(handle, launch)
        params: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "follow": follow,
            "tail": str(tail_lines) if tail_lines > 0 else "all",
        }
        try:
            with self.engine.call("logs"):
                async with self.engine.stream(f"containers/{h.container_id}/logs", params) as resp:
                    frames = execute.Demultiplexer()
                    async for raw in resp.content.iter_chunked(logfiles.BLOCK):
                        if data := frames.feed(raw):
                            yield data
        except DockerError as exc:
            if not is_not_found(exc):
                raise AgentHostError(
                    f"docker engine at {self.engine.url}: cannot read logs of kernel "
                    f"{launch.kernel_id!r}: {exc.message}"
                ) from None
            async for chunk in logfiles.stream(h.log_path, tail_lines, False, alive):
                yield chunk

    async def reap_dangling(self, agent_id: AgentId, known: Container[KernelId]) -> list[KernelId]:
        """Remove containers labelled as this daemon's and agent_id's that no kernel owns."""
        return await reconcile.reap_dangling(self.engine, self.identity, agent_id, known)

    async def check(self) -> None:
        """Raise Unavailable (naming the engine's address) when the engine does not answer."""
        await self.engine.ping()

    async def close(self) -> None:
        """Stop watching events and close the client; the containers keep running."""
        await self.exits.close()
        await self.engine.close()

    # --------------------------------------------------------------- networks

    async def create_network(self, agent_id: AgentId, name: str) -> str:
        """Create the agent's bridge network name; return the engine's id for it."""
        return await self.networks.create(agent_id, name)

    async def destroy_network(self, agent_id: AgentId, name: str) -> None:
        """Remove the agent's network name (no kernel may be attached)."""
        await self.networks.destroy(agent_id, name)

    # ---------------------------------------------------------------- details

    async def _create(
        self, name: str, config: dict[str, Any], image: str, launch: LaunchSpec
    ) -> str:
        pulled = False
        replaced = False
        while True:
            try:
                with self.engine.call("create container"):
                    container = await self.engine.client.containers.create(config, name=name)
                    container_id: str = container.id
                    return container_id
            except DockerError as exc:
                error = exc
            if is_missing_image(error):
                if not self.settings.allow_pull or pulled:
                    raise missing_image(image, self.engine.url, launch.agent_id)
                log.info("agent %s: pulling image %s", launch.agent_id, image)
                await self.images.pull(image)
                pulled = True
            elif error.status == 404:
                raise NotFound(f"kernel {launch.kernel_id!r}: {error.message}")
            elif error.status == 409 and not replaced:
                # A container of that name is left from a kernel that was never
                # recorded (the daemon died in between): ours to replace.
                await self._replace_leftover(name, launch)
                replaced = True
            elif error.status == 400:
                raise InvalidArgument(f"kernel {launch.kernel_id!r}: {error.message}")
            else:
                raise AgentHostError(
                    f"docker engine at {self.engine.url}: cannot create the container of "
                    f"kernel {launch.kernel_id!r}: {error.message}"
                )

    async def _replace_leftover(self, name: str, launch: LaunchSpec) -> None:
        info = await reconcile.inspect(self.engine, name)
        labels = (info or {}).get("Config", {}).get("Labels")
        if info is not None and not reconcile.owned_by(labels, self.identity, launch.agent_id):
            raise AlreadyExists(
                f"kernel {launch.kernel_id!r}: a container named {name!r} exists on the docker "
                f"engine at {self.engine.url} and is not this agent's"
            )
        if info is not None:
            await self._remove_quietly(info["Id"])

    async def _start(self, container_id: str, launch: LaunchSpec) -> None:
        try:
            with self.engine.call("start container"):
                await self.engine.client.containers.container(container_id).start()
        except DockerError as exc:
            message = exc.message.strip()
            lowered = message.lower()
            if any(fragment in lowered for fragment in PORT_TAKEN):
                raise ResourceExhausted(
                    f"kernel {launch.kernel_id!r}: a host port is taken "
                    f"({', '.join(f'{n}={p}' for n, p in sorted(launch.ports.items()))}): "
                    f"{message}"
                ) from None
            if any(fragment in lowered for fragment in CANNOT_EXEC):
                raise InvalidArgument(
                    f"kernel {launch.kernel_id!r} cannot start: {message}"
                ) from None
            raise AgentHostError(
                f"docker engine at {self.engine.url}: cannot start kernel "
                f"{launch.kernel_id!r}: {message}"
            ) from None

    async def _remove_quietly(self, container_id: str) -> None:
        with contextlib.suppress(AgentHostError, DockerError), self.engine.call("remove"):
            await self.engine.client.containers.container(container_id).delete(force=True)
        self.exits.forget(container_id)

    async def _keep_output(self, h: ContainerHandle) -> None:
        """Copy an ended container's output next to the kernel before it is removed."""
        with contextlib.suppress(DockerError, OSError):
            raw = await self.engine.read(
                f"containers/{h.container_id}/logs", {"stdout": True, "stderr": True}
            )
            await asyncio.to_thread(_write, h.log_path, execute.demultiplex(raw))

    def _require(self, handle: Handle, launch: LaunchSpec) -> ContainerHandle:
        h = ContainerHandle.parse(handle)
        if h is None:
            raise NotFound(f"kernel {launch.kernel_id!r} has no container handle this daemon reads")
        return h


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

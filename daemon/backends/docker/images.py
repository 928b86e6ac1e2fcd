"""Images: the clear error for a missing one, and de-duplicated pulls.

A kernel's image must be on the engine. When it is not, the agent's
`docker.allow_pull` decides: without it the kernel fails with `FailedPrecondition`
naming the image; with it the image is pulled once however many kernels wait for
it, and a failed pull is reported the same way, with the engine's reason.
Knows images and the engine; nothing of kernels or agents beyond the names.
"""

from __future__ import annotations

import asyncio

from aiodocker.exceptions import DockerError

from common.errors import FailedPrecondition
from daemon.backends.docker.engine import Engine


def is_missing_image(exc: DockerError) -> bool:
    """True for the engine's answer to a create whose image is not present."""
    return exc.status == 404 and "no such image" in exc.message.lower()


def missing_image(image: str, url: str, agent_id: str) -> FailedPrecondition:
    """The error for an image that is not on the engine and may not be pulled."""
    return FailedPrecondition(
        f"image {image!r} is not present on the docker engine at {url}; load or build it "
        f"there, or set docker.allow_pull = true for agent {agent_id!r}"
    )


class ImagePuller:
    """Pulls images, one pull per image at a time whatever the number of callers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pulls: dict[str, asyncio.Task[None]] = {}

    async def pull(self, image: str) -> None:
        """Pull image; FailedPrecondition naming it when the engine cannot."""
        task = self._pulls.get(image)
        if task is None:
            task = asyncio.create_task(self._pull(image), name=f"pull {image}")
            self._pulls[image] = task
            task.add_done_callback(lambda _: self._pulls.pop(image, None))
        await asyncio.shield(task)

    async def _pull(self, image: str) -> None:
        with self.engine.call(f"pull {image}"):
            try:
                await self.engine.client.images.pull(image)
            except DockerError as exc:
                if exc.status == 900:
                    raise
                raise FailedPrecondition(
                    f"image {image!r} could not be pulled by the docker engine at "
                    f"{self.engine.url}: {exc.message.strip()}"
                ) from None

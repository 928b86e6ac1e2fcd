"""The connection to one Docker engine, and the translation of its failures.

`Engine` owns the aiodocker client of one docker agent and knows the engine's
address, so every error can name it. `Engine.call` turns "the engine does not
answer" (refused connection, missing socket, dropped stream, timeout) into
`Unavailable`; other engine errors pass through as `DockerError` for the caller,
who knows what a 404 or a 409 means in its context.

The engine API paths aiodocker has no public call for (raw logs, the event
stream, inspecting by name, connecting a created container) go through
`get_json`, `post_json`, `read` and `stream`: the one place that uses aiodocker's
private `_query`/`_query_json`, so an aiodocker upgrade that changes them is
fixed here alone. Knows nothing of kernels, agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiodocker
import aiohttp
from aiodocker.exceptions import DockerError

from common.errors import Unavailable

DEFAULT_URL = "unix:///var/run/docker.sock"
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to the engine
PING_TIMEOUT = 5.0  # seconds check() waits for the engine's version answer
NOT_CONNECTED = 900  # aiodocker's status for "cannot connect to the engine"


def resolve_url(configured: str | None) -> str:
    """The engine address: the agent's docker.url, else DOCKER_HOST, else the local socket."""
    return configured or os.environ.get("DOCKER_HOST") or DEFAULT_URL


def unavailable(url: str, what: str, cause: object) -> Unavailable:
    """The error for an engine that does not answer, naming its address."""
    return Unavailable(f"docker engine at {url} does not answer ({what}): {cause}")


class Engine:
    """One aiodocker client bound to one engine address."""

    def __init__(self, url: str) -> None:
        self.url = url
        # The address is always explicit, so aiodocker never looks for a docker
        # context or a socket at construction: an engine that is down at daemon
        # start only makes its agents unhealthy.
        self.client = aiodocker.Docker(
            url=url,
            timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
        )

    @property
    def is_local(self) -> bool:
        """True when the engine runs on this host (its processes' pids are ours to signal)."""
        return self.url.startswith("unix://")

    @contextlib.contextmanager
    def call(self, what: str) -> Iterator[None]:
        """Translate a lost engine into Unavailable; let other engine errors through."""
        try:
            yield
        except DockerError as exc:
            if exc.status == NOT_CONNECTED:
                raise unavailable(self.url, what, exc.message) from None
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise unavailable(self.url, what, str(exc) or type(exc).__name__) from None

    async def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, versioned_api: bool = True
    ) -> Any:
        """GET path (relative to the API version unless versioned_api is False); the JSON body."""
        return await self.client._query_json(path, params=params, versioned_api=versioned_api)

    async def post_json(self, path: str, data: Mapping[str, Any]) -> Any:
        """POST data as JSON to path; the JSON body of the answer."""
        return await self.client._query_json(path, method="POST", data=data)

    async def read(self, path: str, params: Mapping[str, Any] | None = None) -> bytes:
        """GET path; the raw body (e.g. a container's framed log stream)."""
        async with self.client._query(path, params=params) as response:
            body: bytes = await response.read()
            return body

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET path as a long-lived stream: only connecting is bounded, never the reading."""
        async with self.client._query(
            path,
            params=params,
            timeout=aiohttp.ClientTimeout(connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT),
        ) as response:
            yield response

    async def ping(self) -> None:
        """Raise Unavailable unless the engine answers within PING_TIMEOUT."""
        with self.call("ping"):
            try:
                async with asyncio.timeout(PING_TIMEOUT):
                    await self.get_json("version", versioned_api=False)
            except TimeoutError:
                raise unavailable(self.url, "ping", f"no answer within {PING_TIMEOUT:g}s") from None
            except DockerError as exc:
                raise unavailable(self.url, "ping", exc.message) from None

    async def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(Exception):
            await self.client.close()


def is_not_found(exc: DockerError) -> bool:
    """True for the engine's 'no such container/network/image' answer."""
    return exc.status == 404

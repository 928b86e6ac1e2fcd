"""The official kubernetes client of one agent, kept off the event loop.

The client is synchronous. `KubeApi` runs its calls in a small thread pool of
its own (never the loop's default executor, which the daemon's file I/O
shares), with a deadline on every call, and answers JSON as the API server sent
it (`_preload_content=False`): the backend reads pods as plain dicts and never
depends on the client's model deserialisation. Long streams (the pod watch, an
exec session) are opened here (`open_watch`, `open_exec`) but read in threads of
their own by their owners.

Failures are translated in one place: an API server that does not answer
(refused, reset, timed out) is `Unavailable` naming its address; an error
Status it answered with is a `Refusal` (code, reason, message) that the caller
turns into a domain error in its own context, since a 404 or a 409 means
different things to different verbs. Knows the REST paths of pods; nothing of
kernels, agents or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.stream.ws_client import WSClient, get_websocket_url
from websocket import WebSocketBadStatusException, WebSocketException

from common.errors import (
    AgentHostError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

JsonObject = dict[str, Any]
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0  # seconds to open a connection to the API server
CALL_TIMEOUT = 30.0  # seconds any one request may take to answer
FOLLOW_READ_TIMEOUT = 24 * 3600.0  # seconds a followed log may stay silent
PING_TIMEOUT = 5.0  # seconds check() waits for /version
WATCH_SECONDS = 50  # a watch request's server-side timeout; it is then resumed
CALL_THREADS = 4  # concurrent requests of one agent


class Refusal(Exception):
    """The API server answered with an error Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    def domain_error(self, context: str) -> AgentHostError:
        """The domain error for this answer, its message starting with context.

        Credentials the server rejects (401) make it as good as down for this
        daemon; a verb RBAC does not allow (403) is a set-up the operator fixes.
        """
        text = f"{context}: {self.message}"
        if self.code in (400, 422):
            return InvalidArgument(text)
        if self.code == 401:
            return Unavailable(f"{context}: the API server refuses the daemon's credentials")
        if self.code == 403:
            return FailedPrecondition(f"{text} (the daemon's service account is not allowed this)")
        if self.code == 404:
            return NotFound(text)
        if self.code == 409:
            return AlreadyExists(text)
        if self.code in (429, 503, 504):
            return Unavailable(text)
        return AgentHostError(text)


def refusal_of(code: int, reason: str, body: str | bytes | None) -> Refusal:
    """The Refusal for an error answer whose body is (normally) a Status object."""
    message = reason
    try:
        status = json.loads(body or b"")
    except (ValueError, TypeError):
        status = None
    if isinstance(status, dict):
        message = str(status.get("message") or message)
        reason = str(status.get("reason") or reason)
    return Refusal(code, reason or "Error", message or f"HTTP {code}")


def describe(exc: BaseException) -> str:
    """The useful part of a connection error (urllib3 wraps the cause twice)."""
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    text = str(exc) or type(exc).__name__
    # "<urllib3...HTTPConnection object at 0x...>: Failed to establish ...": drop the object.
    return text.split(">: ", 1)[-1]


def delete_options(grace: int, uid: str | None) -> client.V1DeleteOptions:
    """The body of a pod deletion: its grace period, and the one pod instance it is for."""
    return client.V1DeleteOptions(
        grace_period_seconds=grace,
        preconditions=client.V1Preconditions(uid=uid) if uid else None,
    )


class KubeApi:
    """The client of one agent's API server, bound to the agent's namespace."""

    def __init__(self, configuration: client.Configuration, namespace: str) -> None:
        self.url: str = configuration.host
        self.namespace = namespace
        self.client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.client)
        self._executor = ThreadPoolExecutor(CALL_THREADS, thread_name_prefix="kubernetes-api")
        self._closed = False

    # ------------------------------------------------------------ plumbing

    def unavailable(self, what: str, cause: object) -> Unavailable:
        """The error for an API server that does not answer, naming its address."""
        return Unavailable(f"kubernetes API server at {self.url} does not answer ({what}): {cause}")

    def blocking(self, what: str, call: Callable[[], T]) -> T:
        """Run call here (in a thread), translating failures (see the module docstring)."""
        try:
            return call()
        except ApiException as exc:
            if not exc.status:
                raise self.unavailable(what, exc.reason) from None
            raise refusal_of(exc.status, exc.reason or "", exc.body) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.unavailable(what, describe(exc)) from None

    async def run(self, what: str, call: Callable[[], T]) -> T:
        """Run call in this API's threads; the loop never blocks on the client."""
        if self._closed:
            raise Unavailable(f"kubernetes API client of {self.url} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.blocking, what, call)

    def _json(self, response: Any) -> JsonObject:
        data: JsonObject = json.loads(response.data)
        return data

    @property
    def _timeout(self) -> tuple[float, float]:
        return (CONNECT_TIMEOUT, CALL_TIMEOUT)

    # ---------------------------------------------------------------- pods

    async def create_pod(self, body: Any) -> JsonObject:
        """POST the pod (a client model or a dict); the stored pod."""
        call = functools.partial(
            self.core.create_namespaced_pod,
            self.namespace,
            body,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        return self._json(await self.run("create pod", call))

    async def get_pod(self, name: str) -> JsonObject | None:
        """The pod, or None when there is none of that name."""
        call = functools.partial(
            self.core.read_namespaced_pod,
            name,
            self.namespace,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            return self._json(await self.run("read pod", call))
        except Refusal as refusal:
            if refusal.code == 404:
                return None
            raise

    def list_pods_blocking(
        self, label_selector: str, field_selector: str | None = None
    ) -> tuple[list[JsonObject], str]:
        """The selected pods and the list's resourceVersion (blocking)."""
        response = self.blocking(
            "list pods",
            functools.partial(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
        )
        listed = self._json(response)
        return list(listed.get("items") or []), str(listed["metadata"]["resourceVersion"])

    async def list_pods(
        self, label_selector: str, field_selector: str | None = None
    ) -> list[JsonObject]:
        """The selected pods."""
        loop = asyncio.get_running_loop()
        items, _ = await loop.run_in_executor(
            self._executor, self.list_pods_blocking, label_selector, field_selector
        )
        return items

    async def delete_pod(self, name: str, grace: int, uid: str | None = None) -> bool:
        """Delete the pod (only the instance with uid, when given); False when it is gone."""
        call = functools.partial(
            self.core.delete_namespaced_pod,
            name,
            self.namespace,
            body=delete_options(grace, uid),
            grace_period_seconds=grace,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        try:
            await self.run("delete pod", call)
        except Refusal as refusal:
            # 409: the precondition failed, the pod of that name is another one.
            if refusal.code in (404, 409):
                return False
            raise
        return True

    async def pod_log(self, name: str, tail_lines: int) -> bytes:
        """The pod's output (stdout and stderr as the runtime interleaved them), raw."""
        call = functools.partial(
            self.core.read_namespaced_pod_log,
            name,
            self.namespace,
            tail_lines=tail_lines if tail_lines > 0 else None,
            _preload_content=False,
            _request_timeout=self._timeout,
        )
        response: Any = await self.run("read pod log", call)  # raw: not the decoded str
        data: bytes = response.data
        return data

    async def pod_log_stream(
        self, name: str, tail_lines: int, follow: bool, chunk: int = 64 << 10
    ) -> AsyncIterator[bytes]:
        """The pod's output in chunks as the API server sends it (follow: until the
        container ends). Read in one of this API's threads, handed to the loop."""
        call = functools.partial(
            self.core.read_namespaced_pod_log,
            name,
            self.namespace,
            tail_lines=tail_lines if tail_lines > 0 else None,
            follow=follow,
            _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT, FOLLOW_READ_TIMEOUT) if follow else self._timeout,
        )
        response: Any = await self.run("stream pod log", call)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(maxsize=16)

        def pump() -> None:
            try:
                for data in response.stream(chunk, decode_content=True):
                    asyncio.run_coroutine_threadsafe(queue.put(data), loop).result()
                asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()
            except BaseException as exc:  # handed to the reader, which raises it
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(queue.put(exc), loop).result()

        reader = loop.run_in_executor(self._executor, pump)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise Unavailable(
                        f"kubernetes API server at {self.url}: the log stream broke: {item}"
                    )
                yield item
        finally:
            with contextlib.suppress(Exception):
                response.release_conn()
            reader.cancel()

    async def ping(self) -> None:
        """Raise Unavailable unless the API server answers /version within PING_TIMEOUT."""
        version = client.VersionApi(self.client)
        call = functools.partial(
            version.get_code, _preload_content=False, _request_timeout=PING_TIMEOUT
        )
        try:
            await self.run("version", call)
        except Refusal as refusal:
            if refusal.code in (401, 403):
                raise Unavailable(
                    f"kubernetes API server at {self.url} refuses the daemon's credentials: "
                    f"{refusal.message}"
                ) from None
            raise self.unavailable("version", refusal) from None

    # ------------------------------------------------------------- streams

    def open_watch(
        self, label_selector: str, field_selector: str | None, resource_version: str
    ) -> Any:
        """Start watching the selected pods after resource_version (blocking); the response.

        Read it line by line (one JSON event each) in the caller's own thread;
        `response.shutdown()` from another thread ends the reading.
        """
        return self.blocking(
            "watch pods",
            functools.partial(
                self.core.list_namespaced_pod,
                self.namespace,
                label_selector=label_selector,
                field_selector=field_selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT, WATCH_SECONDS + CALL_TIMEOUT),
            ),
        )

    def open_exec(self, name: str, container: str, argv: list[str], stdin: bool) -> WSClient:
        """Open an exec session in the pod's container over the channel websocket (blocking).

        The client's own `stream()` helper swaps the shared ApiClient's transport
        while it runs, which other threads would see; the request is built here
        with the public serialiser instead and the websocket opened directly.
        """
        query: list[tuple[str, str]] = [("command", arg) for arg in argv]
        query += [
            ("container", container),
            ("stdin", str(stdin).lower()),
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "false"),
        ]
        _, url, headers, _, _ = self.client.param_serialize(
            "GET",
            "/api/v1/namespaces/{namespace}/pods/{name}/exec",
            path_params={"namespace": self.namespace, "name": name},
            query_params=query,
            auth_settings=["BearerToken"],
        )
        try:
            return WSClient(
                self.client.configuration,
                get_websocket_url(url),
                headers,
                capture_all=False,
                binary=True,
            )
        except WebSocketBadStatusException as exc:
            raise refusal_of(exc.status_code, exc.status_message or "", exc.resp_body) from None
        except (WebSocketException, OSError) as exc:
            raise self.unavailable("exec", describe(exc)) from None

    # ------------------------------------------------------------ shutdown

    def close(self) -> None:
        """Stop taking calls and close the connections (calls in flight finish)."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.client.close()

"""A stand-in Kubernetes API server for tests. It is NOT a real API server.

It serves, over plain HTTP on 127.0.0.1, the REST paths a pod-running backend uses, so
the official `kubernetes` Python client talks to it unmodified: pods (create, get, list
with label and field selectors, delete with grace, watch from a resourceVersion with 410
on expired history, logs with tail/follow, exec over the v5/v4 channel websocket),
namespaces (get, list, create), nodes (get, list), /version, /api, /api/v1, /apis.
Bodies are checked against the official OpenAPI schemas (`kubernetes-validate`, pinned at
`schemas.KUBERNETES_VERSION`) plus a subset of the apiserver's own pod validation, and
every error is the Status object a real server sends.

What it does NOT model: scheduling (pods go to the first declared node or the one they
name), the kubelet and container runtime (pod life is simulated, exec and optionally the
main process run as local processes, images are never pulled), admission plugins
(quotas, limit ranges, pod security, service-account token mounting, default
tolerations), authentication beyond one optional bearer token, RBAC, PATCH/PUT/update of
any object, server-side apply, any resource other than pods, namespaces and nodes
(no services, configmaps, secrets, events, deployments, CRDs), namespace deletion,
finalizers and owner references/garbage collection, protobuf, TLS, HTTP/2, SPDY,
port-forward and attach, watch bookmarks except at a watch's timeout, `sendInitialEvents`,
consistent list snapshots for `continue`, and API priority and fairness.

Test hooks (all on `StandinApiServer`): `set_behaviour` (what created pods do),
`write_log`, `exit_pod`, `delete_pod_now` (behind the client's back), `fail` (answer
matching requests with an error Status), `compact` (forget watch history: 410),
`go_down` / `come_up` (refuse connections, then listen again on the same port, with or
without the state), `requests` (every request received), `wait_for_pod`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from kubernetes import client

from tests.kubeapi import schemas
from tests.kubeapi.cluster import FIELD_VALIDATION, BehaviourRule, Cluster
from tests.kubeapi.handlers import Handlers, error_response
from tests.kubeapi.kubeconfig import client_configuration, write_kubeconfig
from tests.kubeapi.kubelet import Behaviour
from tests.kubeapi.remotecommand import SUPPORTED_PROTOCOLS
from tests.kubeapi.status import (
    ApiError,
    internal_error,
    path_not_found,
    status_for,
    unauthorized,
)
from tests.kubeapi.store import JsonObject

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the stand-in received it (refused ones included)."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class Fault:
    """Answer requests matching `method` and `path` (a regex searched in the path) with an error.

    `times` is how many requests it catches (None: all of them).
    """

    method: str
    path: str
    code: int = 500
    reason: str = "InternalError"
    message: str = "injected by the test"
    times: int | None = 1
    hits: int = field(default=0, init=False)

    def catches(self, method: str, path: str) -> bool:
        """Whether this fault answers a request now (and count it)."""
        if self.times is not None and self.hits >= self.times:
            return False
        if method.upper() != self.method.upper() or not re.search(self.path, path):
            return False
        self.hits += 1
        return True

    def error(self) -> ApiError:
        """The Status the request gets."""
        if self.code == 500 and self.reason == "InternalError":
            return ApiError(internal_error(self.message))
        return status_for(self.code, self.reason, self.message)


class StandinApiServer:
    """The stand-in, as an async context manager: `async with StandinApiServer() as api:`."""

    def __init__(
        self,
        *,
        namespaces: tuple[str, ...] = ("default",),
        nodes: tuple[str, ...] = ("standin-node",),
        token: str | None = None,
        port: int = 0,
        history_limit: int = 1000,
        startup_delay: float = 0.02,
        restart_backoff: float = 0.2,
        field_validation: str = "Strict",
        exec_protocols: tuple[str, ...] = SUPPORTED_PROTOCOLS,
        expired_watch: str = "event",
    ) -> None:
        """Declare the cluster; nothing listens until `start()` (or `async with`).

        `field_validation` is what applies when a request gives no `fieldValidation`:
        "Strict" (the default here, to catch typos in manifests; a real server defaults
        to "Warn"), "Warn" or "Ignore". `expired_watch` is how a too-old watch is
        refused: "event" (HTTP 200 then an ERROR event, as the watch cache does) or
        "http" (HTTP 410).
        """
        if field_validation not in FIELD_VALIDATION:
            raise ValueError(f"field_validation must be one of {FIELD_VALIDATION}")
        if expired_watch not in ("event", "http"):
            raise ValueError('expired_watch must be "event" or "http"')
        self.namespaces = namespaces
        self.nodes = nodes
        self.token = token
        self.history_limit = history_limit
        self.startup_delay = startup_delay
        self.restart_backoff = restart_backoff
        self.field_validation = field_validation
        self.exec_protocols = exec_protocols
        self.expired_watch = expired_watch
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self._root = Path(tempfile.mkdtemp(prefix="kube-standin-"))
        self._cluster = self._new_cluster(first_revision=1)
        self._port = port
        self._runner: web.AppRunner | None = None
        self._active: set[asyncio.Task[Any]] = set()

    def _new_cluster(self, first_revision: int) -> Cluster:
        return Cluster(
            namespaces=self.namespaces,
            nodes=self.nodes,
            root=self._root / f"rev{first_revision}",
            history_limit=self.history_limit,
            startup_delay=self.startup_delay,
            restart_backoff=self.restart_backoff,
            first_revision=first_revision,
        )

    # lifecycle ------------------------------------------------------------------

    async def __aenter__(self) -> StandinApiServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Load the schemas and start listening (on `port`, or a free one the first time)."""
        await asyncio.to_thread(schemas.preload, [("Pod", "v1"), ("Namespace", "v1")])
        await self._listen()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        sock.listen(128)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        handlers = Handlers(
            self._cluster,
            field_validation=self.field_validation,
            exec_protocols=self.exec_protocols,
            expired_watch=self.expired_watch,
            port=self._port,
        )
        app = web.Application(
            middlewares=[self._record, self._authenticate, self._inject_faults, self._statuses]
        )
        app.add_routes(handlers.routes())
        app.router.add_route("*", "/{tail:.*}", self._unknown_path)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def _stop_listening(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._cluster.store.close_watchers()
        for task in list(self._active):
            task.cancel()
        await runner.cleanup()

    async def go_down(self) -> None:
        """Stop listening and cut every open connection: clients get connection refused."""
        await self._stop_listening()

    async def come_up(self, keep_state: bool = True) -> None:
        """Listen again on the same port; `keep_state=False` starts from an empty cluster.

        A lost state keeps revisions growing from a fresh counter at 1, so a watch from an
        old resourceVersion is answered "too large" (504), as from a rebuilt cluster.
        """
        if self._runner is not None:
            raise RuntimeError("the stand-in is already up; call go_down() first")
        if not keep_state:
            await self._cluster.close()
            self._cluster = self._new_cluster(first_revision=1)
        await self._listen()

    async def close(self) -> None:
        """Stop listening, stop every simulated pod, remove scratch directories."""
        await self._stop_listening()
        await self._cluster.close()
        await asyncio.to_thread(shutil.rmtree, self._root, True)

    # where it is ----------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port it listens on (stable across go_down / come_up)."""
        return self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def is_up(self) -> bool:
        """Whether it is listening now."""
        return self._runner is not None

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at the stand-in (with the token, if any)."""
        return write_kubeconfig(path, self.url, self.token, namespace)

    def configuration(self) -> client.Configuration:
        """A client `Configuration` pointing at the stand-in."""
        return client_configuration(self.url, self.token)

    # middleware -----------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read() if request.can_read_body else b""
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query={k: request.query.getall(k) for k in request.query},
                body=body,
                headers=dict(request.headers),
            )
        )
        task = asyncio.current_task()
        if task is not None:
            self._active.add(task)
        try:
            return await handler(request)
        finally:
            if task is not None:
                self._active.discard(task)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return error_response(unauthorized())
        return await handler(request)

    @web.middleware
    async def _inject_faults(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        for fault in self.faults:
            if fault.catches(request.method, request.path):
                return error_response(fault.error())
        return await handler(request)

    @web.middleware
    async def _statuses(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error)
        except (asyncio.CancelledError, web.HTTPException):
            raise
        except Exception as exc:  # a stand-in bug: say so in the answer and the log
            log.error(
                "stand-in failed on %s %s:\n%s",
                request.method,
                request.path,
                traceback.format_exc(),
            )
            return error_response(ApiError(internal_error(f"stand-in bug: {exc!r}")))

    async def _unknown_path(self, request: web.Request) -> web.Response:
        raise path_not_found()

    # test hooks -----------------------------------------------------------------

    def set_behaviour(
        self, behaviour: Behaviour, *, name: str | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """Pods created from now on whose name fully matches `name` (a regex) and carry
        `labels` get `behaviour`; the latest matching call wins, else `Runs()`."""
        self._cluster.rules.append(
            BehaviourRule(behaviour, name, tuple(sorted((labels or {}).items())))
        )

    def add_namespace(self, name: str) -> JsonObject:
        """Make a namespace exist."""
        return self._cluster.add_namespace(name)

    def add_node(
        self,
        name: str,
        capacity: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> JsonObject:
        """Declare a node (with a simulated kubelet)."""
        return self._cluster.add_node(name, capacity, labels)

    def write_log(
        self, namespace: str, pod: str, data: str | bytes, container: str | None = None
    ) -> None:
        """Append to a running container's log (the first container by default)."""
        rt = self._cluster.kubelet.runtime(namespace, pod)
        if rt is None:
            raise KeyError(f"pod {namespace}/{pod} does not exist in the stand-in")
        name = container or next(iter(rt.containers))
        rt.containers[name].log.write(data.encode() if isinstance(data, str) else data)

    def exit_pod(
        self,
        namespace: str,
        pod: str,
        exit_code: int = 0,
        reason: str | None = None,
        message: str | None = None,
        container: str | None = None,
    ) -> None:
        """Make a container (all by default) exit: reason defaults to Completed/Error;
        use reason="OOMKilled", exit_code=137 for an OOM kill."""
        self._cluster.kubelet.exit_container(namespace, pod, container, exit_code, reason, message)

    def delete_pod_now(self, namespace: str, pod: str) -> bool:
        """Remove a pod at once, as a force-delete by someone else would; False if absent."""
        return self._cluster.remove_pod(namespace, pod) is not None

    def fail(self, fault: Fault) -> Fault:
        """Answer matching requests with an error Status (e.g. make pod creation fail)."""
        self.faults.append(fault)
        return fault

    def compact(self) -> None:
        """Forget the watch history: a watch from any earlier resourceVersion gets 410."""
        self._cluster.store.compact()

    def get_pod(self, namespace: str, name: str) -> JsonObject | None:
        """The stored pod (a copy), or None."""
        return self._cluster.store.get("pods", namespace, name)

    def pods(self, namespace: str | None = None) -> list[JsonObject]:
        """Every stored pod (copies)."""
        return self._cluster.store.items("pods", namespace)

    @property
    def revision(self) -> int:
        """The current resourceVersion counter."""
        return self._cluster.store.revision

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """The recorded requests with this method whose path matches the regex."""
        return [
            r
            for r in self.requests
            if r.method == method.upper() and re.search(path_pattern, r.path)
        ]

    async def wait_for_pod(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[JsonObject | None], bool],
        timeout: float = 30.0,
    ) -> JsonObject | None:
        """Wait until `predicate(pod or None)` holds; returns that state. Raises TimeoutError."""
        store = self._cluster.store
        watcher = store.watch("pods", namespace, None)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    pod = store.get("pods", namespace, name)
                    if predicate(pod):
                        return pod
                    if await watcher.queue.get() is None:
                        watcher = store.watch("pods", namespace, None)
        except TimeoutError:
            raise TimeoutError(
                f"pod {namespace}/{name} did not reach the state within {timeout}s; last: "
                f"{json.dumps(store.get('pods', namespace, name))[:2000]}"
            ) from None
        finally:
            store.unwatch(watcher)

    def phase_is(self, phase: str) -> Callable[[JsonObject | None], bool]:
        """A `wait_for_pod` predicate: the pod exists with this phase."""
        return lambda pod: pod is not None and pod.get("status", {}).get("phase") == phase


def gone(pod: JsonObject | None) -> bool:
    """A `wait_for_pod` predicate: the pod no longer exists."""
    return pod is None


__all__ = ["Fault", "RecordedRequest", "StandinApiServer", "gone"]

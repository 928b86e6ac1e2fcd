"""The REST surface: HTTP requests in, `Cluster` calls, JSON (or streams) out.

Paths, query parameters, list/watch framing, log streaming and the exec upgrade follow
the real apiserver. Errors are raised as `ApiError` and written as Status objects by the
server's middleware; handlers never build error responses themselves.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

from aiohttp import web

from tests.kubeapi import schemas
from tests.kubeapi.cluster import FIELD_VALIDATION, Cluster
from tests.kubeapi.kubelet import container_env
from tests.kubeapi.logs import ContainerLog
from tests.kubeapi.remotecommand import ExecOptions, ExecSession
from tests.kubeapi.selectors import (
    GENERIC_FIELDS,
    POD_FIELDS,
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from tests.kubeapi.status import (
    ApiError,
    bad_request,
    expired,
    method_not_allowed,
    not_found,
    status_object,
    too_large_resource_version,
)
from tests.kubeapi.store import Event, Expired, JsonObject, TooLarge

KIND_OF = {"pods": "Pod", "namespaces": "Namespace", "nodes": "Node"}


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(f'invalid value for {name}: "{raw}"') from None


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


def _listed(obj: JsonObject) -> JsonObject:
    # Items of a list carry no kind/apiVersion on the wire.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class Handlers:
    """aiohttp handlers bound to one `Cluster` (replaced when a test loses state)."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        field_validation: str,
        exec_protocols: tuple[str, ...],
        expired_watch: str,
        port: int,
    ) -> None:
        self.cluster = cluster
        self.field_validation = field_validation
        self.exec_protocols = exec_protocols
        self.expired_watch = expired_watch
        self.port = port

    def routes(self) -> list[web.RouteDef]:
        """The route table."""
        ns_pods = "/api/v1/namespaces/{namespace}/pods"
        return [
            web.get("/version", self.version),
            web.get("/version/", self.version),
            web.get("/api", self.api_versions),
            web.get("/api/", self.api_versions),
            web.get("/api/v1", self.api_resources),
            web.get("/api/v1/", self.api_resources),
            web.get("/apis", self.api_groups),
            web.get("/apis/", self.api_groups),
            web.get("/healthz", self.healthy),
            web.get("/livez", self.healthy),
            web.get("/readyz", self.healthy),
            web.route("*", "/api/v1/pods", self.all_pods),
            web.route("*", ns_pods, self.pods),
            web.route("*", ns_pods + "/{name}", self.pod),
            web.route("*", ns_pods + "/{name}/log", self.pod_log),
            web.route("*", ns_pods + "/{name}/exec", self.pod_exec),
            web.route("*", "/api/v1/namespaces", self.namespaces),
            web.route("*", "/api/v1/namespaces/{name}", self.namespace),
            web.route("*", "/api/v1/nodes", self.nodes),
            web.route("*", "/api/v1/nodes/{name}", self.node),
        ]

    # discovery ------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        """GET /version."""
        major, minor = schemas.KUBERNETES_VERSION.split(".")
        return web.json_response(
            {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{schemas.KUBERNETES_VERSION}.0",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        )

    async def api_versions(self, request: web.Request) -> web.Response:
        """GET /api."""
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                ],
            }
        )

    async def api_groups(self, request: web.Request) -> web.Response:
        """GET /apis: no groups beyond the core one."""
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})

    async def api_resources(self, request: web.Request) -> web.Response:
        """GET /api/v1: the resources this stand-in serves."""

        def resource(name: str, kind: str, namespaced: bool, verbs: list[str]) -> JsonObject:
            return {
                "name": name,
                "singularName": "",
                "namespaced": namespaced,
                "kind": kind,
                "verbs": verbs,
            }

        return web.json_response(
            {
                "kind": "APIResourceList",
                "groupVersion": "v1",
                "resources": [
                    resource("namespaces", "Namespace", False, ["create", "get", "list"]),
                    resource("nodes", "Node", False, ["get", "list"]),
                    resource("pods", "Pod", True, ["create", "delete", "get", "list", "watch"]),
                    resource("pods/exec", "PodExecOptions", True, ["create", "get"]),
                    resource("pods/log", "Pod", True, ["get"]),
                ],
            }
        )

    async def healthy(self, request: web.Request) -> web.Response:
        """GET /healthz, /livez, /readyz."""
        return web.Response(text="ok")

    # lists and watches ----------------------------------------------------------

    async def _list_or_watch(
        self, request: web.Request, resource: str, namespace: str | None
    ) -> web.StreamResponse:
        fields = POD_FIELDS if resource == "pods" else GENERIC_FIELDS
        labels = parse_label_selector(request.query.get("labelSelector"))
        selected = parse_field_selector(request.query.get("fieldSelector"), fields)
        if _flag(request, "watch"):
            return await self._watch(request, resource, namespace, labels, selected)
        items = [
            o
            for o in self.cluster.store.items(resource, namespace)
            if labels.matches(o["metadata"].get("labels")) and selected.matches(o)
        ]
        requested = request.query.get("resourceVersion", "")
        if (
            requested not in ("", "0")
            and requested.isdigit()
            and int(requested) > self.cluster.store.revision
        ):
            raise too_large_resource_version(int(requested), self.cluster.store.revision)
        metadata: JsonObject = {"resourceVersion": str(self.cluster.store.revision)}
        start = request.query.get("continue")
        if start:
            try:
                after = json.loads(base64.urlsafe_b64decode(start.encode()))["start"]
            except (ValueError, KeyError, TypeError):
                raise bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion"
                ) from None
            items = [o for o in items if self._key(o) > after]
        limit = _int(request, "limit")
        if limit and len(items) > limit:
            rest = len(items) - limit
            items = items[:limit]
            token = json.dumps({"rv": self.cluster.store.revision, "start": self._key(items[-1])})
            metadata["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            metadata["remainingItemCount"] = rest
        return web.json_response(
            {
                "kind": f"{KIND_OF[resource]}List",
                "apiVersion": "v1",
                "metadata": metadata,
                "items": [_listed(o) for o in items],
            }
        )

    @staticmethod
    def _key(obj: JsonObject) -> str:
        return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    async def _watch(
        self,
        request: web.Request,
        resource: str,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> web.StreamResponse:
        store = self.cluster.store
        raw_rv = request.query.get("resourceVersion", "")
        since = None if raw_rv in ("", "0") else _int(request, "resourceVersion")
        timeout = _int(request, "timeoutSeconds")
        bookmarks = _flag(request, "allowWatchBookmarks")

        def selected(obj: JsonObject | None) -> bool:
            return (
                obj is not None
                and labels.matches(obj["metadata"].get("labels"))
                and fields.matches(obj)
            )

        initial: list[JsonObject] = []
        try:
            watcher = store.watch(resource, namespace, since)
        except Expired as exc:
            status = expired(exc.requested, exc.oldest)
            if self.expired_watch == "http":
                raise ApiError(status) from None
            response = await self._start_stream(request)
            await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
            return response
        except TooLarge as exc:
            raise too_large_resource_version(exc.requested, exc.current) from None
        if since is None:
            initial = [o for o in store.items(resource, namespace) if selected(o)]
        response = await self._start_stream(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        try:
            for obj in initial:
                await self._send_event(response, "ADDED", obj)
            while True:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if event is None:
                    return response
                kind = self._transition(event, selected)
                if kind is not None:
                    await self._send_event(response, kind, event.object)
            if bookmarks:
                bookmark = {
                    "kind": KIND_OF[resource],
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(store.revision)},
                }
                await self._send_event(response, "BOOKMARK", bookmark)
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        finally:
            store.unwatch(watcher)
        return response

    @staticmethod
    def _transition(event: Event, selected: Any) -> str | None:
        # A watch with a selector sees an object enter (ADDED) or leave (DELETED) the
        # selection when a change moves it across, as the apiserver's watch cache does.
        now, before = selected(event.object), selected(event.previous)
        if event.type == "MODIFIED":
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            if before:
                return "DELETED"
            return None
        if event.type == "DELETED":
            return "DELETED" if before else None
        return event.type if now else None

    @staticmethod
    async def _start_stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        return response

    @staticmethod
    async def _send_event(response: web.StreamResponse, kind: str, obj: JsonObject) -> None:
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # pods -----------------------------------------------------------------------

    async def all_pods(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/pods: list or watch across namespaces."""
        if request.method != "GET":
            raise method_not_allowed(request.method, "pods")
        return await self._list_or_watch(request, "pods", None)

    async def pods(self, request: web.Request) -> web.StreamResponse:
        """GET (list/watch) and POST (create) on a namespace's pods."""
        namespace = request.match_info["namespace"]
        if request.method == "GET":
            return await self._list_or_watch(request, "pods", namespace)
        if request.method != "POST":
            raise method_not_allowed(request.method, "pods")
        validation = request.query.get("fieldValidation") or self.field_validation
        if validation not in FIELD_VALIDATION:
            raise bad_request(
                f'fieldValidation must be one of "Ignore", "Warn", "Strict"; got "{validation}"'
            )
        body = await _json_body(request)
        pod, warnings = await self.cluster.create_pod(
            namespace, body, validation, request.query.get("dryRun") == "All"
        )
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return web.json_response(pod, status=201, headers=headers)

    async def pod(self, request: web.Request) -> web.Response:
        """GET and DELETE one pod."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if request.method == "GET":
            return web.json_response(self.cluster.get_pod(namespace, name))
        if request.method != "DELETE":
            raise method_not_allowed(request.method, "pods")
        options = await _json_body(request) or {}
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions must be an object")
        grace = _int(request, "gracePeriodSeconds")
        if grace is None:
            grace = options.get("gracePeriodSeconds")
        pod = self.cluster.delete_pod(namespace, name, grace, options.get("preconditions") or {})
        return web.json_response(pod)

    def _container(self, pod: JsonObject, requested: str | None) -> str:
        names = [c["name"] for c in pod["spec"]["containers"]]
        name = pod["metadata"]["name"]
        if not requested:
            if len(names) > 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(names)}]"
                )
            return str(names[0])
        init = [c["name"] for c in pod["spec"].get("initContainers") or []]
        if requested not in names + init:
            raise bad_request(f"container {requested} is not valid for pod {name}")
        return str(requested)

    async def pod_log(self, request: web.Request) -> web.StreamResponse:
        """GET .../pods/{name}/log (tailLines, limitBytes, sinceSeconds, timestamps, previous,
        follow, container)."""
        if request.method != "GET":
            raise method_not_allowed(request.method, "pods/log")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.cluster.get_pod(namespace, name)
        container = self._container(pod, request.query.get("container"))
        if not pod["spec"].get("nodeName"):
            return web.Response(body=b"", content_type="text/plain")
        log = self._log_of(pod, container, _flag(request, "previous"))
        tail, limit = _int(request, "tailLines"), _int(request, "limitBytes")
        since = _int(request, "sinceSeconds")
        timestamps = _flag(request, "timestamps")
        start = log.start_index(tail, since)
        if not _flag(request, "follow"):
            data = b"".join(line.render(timestamps) for line in log.lines[start:])
            return web.Response(body=data[:limit] if limit else data, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            async for line in log.follow(start):
                data = line.render(timestamps)
                if limit is not None and sent + len(data) >= limit:
                    await response.write(data[: limit - sent])
                    break
                await response.write(data)
                sent += len(data)
        return response

    def _log_of(self, pod: JsonObject, container: str, previous: bool) -> ContainerLog:
        meta = pod["metadata"]
        rt = self.cluster.kubelet.runtime(meta["namespace"], meta["name"])
        statuses = {s["name"]: s for s in pod.get("status", {}).get("containerStatuses", [])}
        status = statuses.get(container)
        crt = rt.containers.get(container) if rt is not None else None
        if previous:
            if crt is None or crt.previous_log is None:
                raise bad_request(
                    f'previous terminated container "{container}" in pod "{meta["name"]}" not found'
                )
            return crt.previous_log
        if (
            crt is None
            or status is None
            or ("waiting" in status["state"] and not status.get("restartCount"))
        ):
            reason = "ContainerCreating"
            if status is not None and "waiting" in status["state"]:
                reason = status["state"]["waiting"].get("reason", reason)
            raise bad_request(
                f'container "{container}" in pod "{meta["name"]}" is waiting to start: {reason}'
            )
        return crt.log

    async def pod_exec(self, request: web.Request) -> web.StreamResponse:
        """GET/POST .../pods/{name}/exec, upgraded to a channel websocket."""
        if request.method not in ("GET", "POST"):
            raise method_not_allowed(request.method, "pods/exec")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.cluster.get_pod(namespace, name)
        container = self._container(pod, request.query.get("container"))
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        tty = _flag(request, "tty")
        options = ExecOptions(
            command=tuple(request.query.getall("command", [])),
            stdin=_flag(request, "stdin"),
            stdout=_flag(request, "stdout"),
            stderr=_flag(request, "stderr") and not tty,
            tty=tty,
        )
        if not (options.stdin or options.stdout or options.stderr):
            raise bad_request("you must specify at least 1 of stdin, stdout, stderr")
        if not options.command:
            raise bad_request("you must specify at least one command for the container")
        rt = self.cluster.kubelet.runtime(namespace, name)
        crt = rt.containers.get(container) if rt is not None else None
        if rt is None or crt is None or not crt.running:
            raise bad_request(f'unable to upgrade connection: container not found ("{container}")')
        ws = web.WebSocketResponse(protocols=self.exec_protocols)
        ready = ws.can_prepare(request)
        if not ready.ok:
            raise bad_request("Upgrade request required")
        if ready.protocol is None:
            offered = request.headers.get("Sec-WebSocket-Protocol", "")
            raise bad_request(
                f"requested protocol(s) are not supported: [{offered}]; supports "
                f"[{' '.join(self.exec_protocols)}]"
            )
        spec_c = next(c for c in pod["spec"]["containers"] if c["name"] == container)
        node = self.cluster.node_objects().get(pod["spec"]["nodeName"], {})
        env = container_env(pod, spec_c, node)
        await asyncio.to_thread(rt.scratch.mkdir, parents=True, exist_ok=True)
        await ws.prepare(request)
        await ExecSession(ws, options, env, rt.scratch).run()
        return ws

    # namespaces and nodes -------------------------------------------------------

    async def namespaces(self, request: web.Request) -> web.StreamResponse:
        """GET (list/watch) and POST (create) namespaces."""
        if request.method == "GET":
            return await self._list_or_watch(request, "namespaces", None)
        if request.method != "POST":
            raise method_not_allowed(request.method, "namespaces")
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        return web.json_response(self.cluster.create_namespace(body), status=201)

    async def namespace(self, request: web.Request) -> web.Response:
        """GET one namespace."""
        if request.method != "GET":
            raise method_not_allowed(request.method, "namespaces")
        name = request.match_info["name"]
        obj = self.cluster.store.get("namespaces", "", name)
        if obj is None:
            raise not_found("namespaces", name)
        return web.json_response(obj)

    async def nodes(self, request: web.Request) -> web.StreamResponse:
        """GET (list/watch) nodes."""
        if request.method != "GET":
            raise method_not_allowed(request.method, "nodes")
        return await self._list_or_watch(request, "nodes", None)

    async def node(self, request: web.Request) -> web.Response:
        """GET one node."""
        if request.method != "GET":
            raise method_not_allowed(request.method, "nodes")
        name = request.match_info["name"]
        obj = self.cluster.store.get("nodes", "", name)
        if obj is None:
            raise not_found("nodes", name)
        return web.json_response(obj)


def error_response(error: ApiError) -> web.Response:
    """An ApiError as the JSON Status response."""
    return web.json_response(error.status, status=error.code)


__all__ = ["Handlers", "error_response", "status_object"]

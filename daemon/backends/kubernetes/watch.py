"""One watch of an agent's pods, in a thread, feeding waiters on the event loop.

`PodWatch.wait_for(name, uid, predicate)` returns the first non-None value of
`predicate(pod)` over the states of that one pod instance (`None` once it is
gone): a create waits for its kernel to start, `wait` for it to end, `stop`
for the pod to be deleted. The watch is a list then a watch from the list's
resourceVersion (resumed from the last event seen when the server ends it, and
listed again when that version has expired), read line by line in a thread of
its own that hands each event to the loop (`call_soon_threadsafe`). It is
connected *before* a waiter reads the pod's current state, so a change that
happens in between is never missed. Events are matched by uid: a pod recreated
under the same name never answers a waiter of the old one.

When the API server is lost the thread ends and every waiter fails with
`Unavailable`; the next `wait_for` starts the watch again. Knows pods and the
watch protocol; nothing of kernels' slots, ports or gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubernetes.watch.watch import iter_resp_lines

from common.errors import AgentHostError, Unavailable
from daemon.backends.kubernetes.api import JsonObject, KubeApi, Refusal

log = logging.getLogger(__name__)

T = TypeVar("T")
Predicate = Callable[[JsonObject | None], T | None]

JOIN_TIMEOUT = 2.0  # seconds close() waits for the watch thread


@dataclass(eq=False)
class _Waiter(Generic[T]):
    """One wait_for call: a pod instance, what it waits for, and the answer."""

    name: str
    uid: str
    predicate: Predicate[T]
    future: asyncio.Future[T] = field(repr=False)

    def offer(self, pod: JsonObject | None) -> None:
        """Check the pod's state (None: gone); answer once the predicate gives a value."""
        if self.future.done():
            return
        try:
            result = self.predicate(pod)
        except AgentHostError as exc:
            self.future.set_exception(exc)
            return
        if result is not None:
            self.future.set_result(result)

    def fail(self, exc: BaseException) -> None:
        """End the wait with exc (the watch is lost)."""
        if not self.future.done():
            self.future.set_exception(exc)


def _uid(pod: JsonObject) -> str:
    return str(pod.get("metadata", {}).get("uid", ""))


class PodWatch:
    """The watch of one agent's pods (by label selector) and the waiters on single pods."""

    def __init__(self, api: KubeApi, label_selector: str, field_selector: str | None) -> None:
        self.api = api
        self.label_selector = label_selector
        self.field_selector = field_selector
        self._waiters: dict[str, set[_Waiter[Any]]] = {}
        self._thread: _WatchThread | None = None
        self._connected: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait_for(
        self, name: str, uid: str, predicate: Predicate[T], timeout: float | None = None
    ) -> T:
        """The first value predicate gives for pod name (instance uid); TimeoutError after timeout.

        Unavailable when the API server is lost meanwhile.
        """
        loop = asyncio.get_running_loop()
        waiter: _Waiter[T] = _Waiter(name, uid, predicate, loop.create_future())
        self._waiters.setdefault(name, set()).add(waiter)
        try:
            async with asyncio.timeout(timeout):
                await self._ensure_connected()
                await self._check(waiter)
                return await waiter.future
        finally:
            waiting = self._waiters.get(name)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[name]

    async def close(self) -> None:
        """Stop the watch; pending waits are cancelled (the pods keep running)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
            await asyncio.to_thread(thread.join, JOIN_TIMEOUT)
        for task in list(self._tasks):
            task.cancel()
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.future.cancel()
        self._waiters.clear()

    # ------------------------------------------------------------- details

    async def _ensure_connected(self) -> None:
        if self._connected is None or (
            self._connected.done() and self._connected.exception() is not None
        ):
            loop = asyncio.get_running_loop()
            self._connected = loop.create_future()
            self._thread = _WatchThread(self, loop)
            self._thread.start()
        await asyncio.shield(self._connected)

    async def _check(self, waiter: _Waiter[Any]) -> None:
        """Offer the waiter its pod's current state, read now."""
        try:
            pod = await self.api.get_pod(waiter.name)
        except Refusal as refusal:
            raise Unavailable(
                f"kubernetes API server at {self.api.url}: cannot read pod {waiter.name}: "
                f"{refusal.message}"
            ) from None
        waiter.offer(pod if pod is not None and _uid(pod) == waiter.uid else None)

    def _spawn_check(self, waiter: _Waiter[Any]) -> None:
        async def check() -> None:
            try:
                await self._check(waiter)
            except AgentHostError as exc:
                waiter.fail(exc)

        task = asyncio.create_task(check())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Called on the loop by the thread (through call_soon_threadsafe).

    def on_connected(self, thread: _WatchThread, relisted: bool) -> None:
        """The watch is established; after a new list, every waiter looks again."""
        if thread is not self._thread or self._connected is None:
            return
        if not self._connected.done():
            self._connected.set_result(None)
        elif relisted:  # events may have been missed while the history had expired
            for waiters in self._waiters.values():
                for waiter in waiters:
                    self._spawn_check(waiter)

    def on_event(self, thread: _WatchThread, kind: str, pod: JsonObject) -> None:
        """One pod changed: offer it to the waiters of that pod instance."""
        if thread is not self._thread:
            return
        name = pod.get("metadata", {}).get("name", "")
        for waiter in list(self._waiters.get(name, ())):
            if waiter.uid == _uid(pod):
                waiter.offer(None if kind == "DELETED" else pod)

    def on_lost(self, thread: _WatchThread, error: Unavailable) -> None:
        """The watch ended for good: every waiter fails, the next wait starts it again."""
        if thread is not self._thread:
            return
        self._thread = None
        if self._connected is not None and not self._connected.done():
            self._connected.set_exception(error)
        else:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(error)
            self._connected = failed
        self._connected.exception()  # retrieved: nobody may be waiting right now
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.fail(error)


class _WatchThread(threading.Thread):
    """List, then watch and resume, until stopped or the API server is lost."""

    def __init__(self, owner: PodWatch, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name=f"kubernetes-watch {owner.label_selector}", daemon=True)
        self.owner = owner
        self.api = owner.api
        self.loop = loop
        self._stopped = threading.Event()
        self._response: Any = None
        self._lock = threading.Lock()

    def stop(self) -> None:
        """End the watch: the read in progress is cut."""
        self._stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self.loop.call_soon_threadsafe(callback, self, *args)

    def run(self) -> None:
        try:
            self._watch()
        except Unavailable as exc:
            if not self._stopped.is_set():
                log.warning("%s", exc)
                self._post(self.owner.on_lost, exc)
        except Exception as exc:  # a bug or a malformed answer: as good as lost
            if not self._stopped.is_set():
                log.exception("kubernetes watch of %s failed", self.owner.label_selector)
                self._post(
                    self.owner.on_lost,
                    Unavailable(f"kubernetes API server at {self.api.url}: watch failed: {exc}"),
                )

    def _watch(self) -> None:
        version: str | None = None
        relisted = False
        while not self._stopped.is_set():
            if version is None:
                _, version = self.api.list_pods_blocking(
                    self.owner.label_selector, self.owner.field_selector
                )
                relisted = True
            try:
                response = self.api.open_watch(
                    self.owner.label_selector, self.owner.field_selector, version
                )
            except Refusal as refusal:
                if refusal.code == 410:
                    version = None  # expired: list again
                    continue
                raise Unavailable(
                    f"kubernetes API server at {self.api.url} refuses the watch of pods: "
                    f"{refusal.message}"
                ) from None
            with self._lock:
                self._response = response
            if self._stopped.is_set():
                break
            self._post(self.owner.on_connected, relisted)
            relisted = False
            try:
                version = self._read(response, version)
            finally:
                with self._lock:
                    self._response = None
                with contextlib.suppress(Exception):
                    response.release_conn()

    def _read(self, response: Any, version: str) -> str | None:
        """Hand every event to the loop; the version to resume from (None: list again)."""
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise Unavailable(
                        f"kubernetes API server at {self.api.url}: watch of pods ended: "
                        f"{obj.get('message')}"
                    )
                version = obj.get("metadata", {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._post(self.owner.on_event, kind, obj)
        except Unavailable:
            raise
        except Exception as exc:  # a cut connection, in whatever form
            if self._stopped.is_set():
                return version
            raise self.api.unavailable("watch pods", exc) from None
        return version

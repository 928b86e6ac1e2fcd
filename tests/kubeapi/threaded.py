"""The stand-in for synchronous callers: its event loop runs in a thread of its own.

`with standin_in_thread() as api:` gives a `ThreadedStandin` whose hooks are plain
methods; each runs on the server's loop and waits for the answer, so a sync test (or a
backend calling the blocking `kubernetes` client) never shares a loop with the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client

from tests.kubeapi.kubelet import Behaviour
from tests.kubeapi.server import Fault, RecordedRequest, StandinApiServer
from tests.kubeapi.store import JsonObject

T = TypeVar("T")


class ThreadedStandin:
    """Synchronous handle on a `StandinApiServer` running in another thread."""

    def __init__(self, server: StandinApiServer, loop: asyncio.AbstractEventLoop) -> None:
        self.server = server
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async def call() -> T:
            return fn(*args, **kwargs)

        return self._run(call())

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT`."""
        return self.server.url

    @property
    def port(self) -> int:
        """The listening port."""
        return self.server.port

    @property
    def token(self) -> str | None:
        """The bearer token it checks, if any."""
        return self.server.token

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far."""
        return self._call(lambda: list(self.server.requests))

    @property
    def revision(self) -> int:
        """The current resourceVersion counter."""
        return self._call(lambda: self.server.revision)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig pointing at the stand-in."""
        return self.server.kubeconfig(path, namespace)

    def configuration(self) -> client.Configuration:
        """A client `Configuration` pointing at the stand-in."""
        return self.server.configuration()

    def set_behaviour(
        self, behaviour: Behaviour, *, name: str | None = None, labels: dict[str, str] | None = None
    ) -> None:
        """See `StandinApiServer.set_behaviour`."""
        self._call(self.server.set_behaviour, behaviour, name=name, labels=labels)

    def add_namespace(self, name: str) -> JsonObject:
        """Make a namespace exist."""
        return self._call(self.server.add_namespace, name)

    def add_node(
        self,
        name: str,
        capacity: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> JsonObject:
        """Declare a node."""
        return self._call(self.server.add_node, name, capacity, labels)

    def write_log(
        self, namespace: str, pod: str, data: str | bytes, container: str | None = None
    ) -> None:
        """Append to a container's log."""
        self._call(self.server.write_log, namespace, pod, data, container)

    def exit_pod(
        self,
        namespace: str,
        pod: str,
        exit_code: int = 0,
        reason: str | None = None,
        message: str | None = None,
        container: str | None = None,
    ) -> None:
        """Make a container (all by default) exit."""
        self._call(self.server.exit_pod, namespace, pod, exit_code, reason, message, container)

    def delete_pod_now(self, namespace: str, pod: str) -> bool:
        """Remove a pod at once, behind the client's back."""
        return self._call(self.server.delete_pod_now, namespace, pod)

    def fail(self, fault: Fault) -> Fault:
        """Answer matching requests with an error Status."""
        return self._call(self.server.fail, fault)

    def compact(self) -> None:
        """Forget the watch history."""
        self._call(self.server.compact)

    def get_pod(self, namespace: str, name: str) -> JsonObject | None:
        """The stored pod, or None."""
        return self._call(self.server.get_pod, namespace, name)

    def pods(self, namespace: str | None = None) -> list[JsonObject]:
        """Every stored pod."""
        return self._call(self.server.pods, namespace)

    def requests_to(self, method: str, path_pattern: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path matches the regex."""
        return self._call(self.server.requests_to, method, path_pattern)

    def wait_for_pod(
        self,
        namespace: str,
        name: str,
        predicate: Callable[[JsonObject | None], bool],
        timeout: float = 30.0,
    ) -> JsonObject | None:
        """Wait until `predicate(pod or None)` holds."""
        return self._run(self.server.wait_for_pod(namespace, name, predicate, timeout))

    def phase_is(self, phase: str) -> Callable[[JsonObject | None], bool]:
        """A `wait_for_pod` predicate: the pod exists with this phase."""
        return self.server.phase_is(phase)

    def go_down(self) -> None:
        """Stop listening and cut open connections."""
        self._run(self.server.go_down())

    def come_up(self, keep_state: bool = True) -> None:
        """Listen again on the same port."""
        self._run(self.server.come_up(keep_state))


@contextmanager
def standin_in_thread(**options: Any) -> Iterator[ThreadedStandin]:
    """Run a `StandinApiServer(**options)` on a loop in a daemon thread for the block."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kube-standin", daemon=True)
    thread.start()
    try:
        server = StandinApiServer(**options)
        asyncio.run_coroutine_threadsafe(server.start(), loop).result()
        try:
            yield ThreadedStandin(server, loop)
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

"""Objects, resourceVersions and watch fan-out: the stand-in's etcd plus watch cache.

One revision counter for everything (as etcd has); each write stamps the object's
`metadata.resourceVersion` with the new revision and appends an event to a bounded
history. A watch from revision N replays the kept events after N and then follows live
ones; N older than the history is `Expired` (410), N newer than the counter is
`TooLarge` (504), as on a real server. `compact()` drops the history on demand so a
test can provoke the 410 deterministically.

All methods run on the server's event loop; nothing here is thread-safe, nothing here
knows HTTP or what a pod does.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from dataclasses import dataclass, field
from typing import Any

JsonObject = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace is "" for cluster-scoped objects


@dataclass(frozen=True)
class Event:
    """One change: ADDED, MODIFIED or DELETED, with the object after (and before) it."""

    type: str
    resource: str
    object: JsonObject
    previous: JsonObject | None
    revision: int


class Expired(Exception):
    """The requested revision is older than the kept history."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


class TooLarge(Exception):
    """The requested revision is newer than anything the store has written."""

    def __init__(self, requested: int, current: int) -> None:
        super().__init__(f"too large resource version: {requested}, current: {current}")
        self.requested = requested
        self.current = current


@dataclass(eq=False)
class Watcher:
    """A live subscription: events for one resource (and namespace) arrive on `queue`.

    `None` on the queue means the watch was closed by the server (shutdown, go-down).
    """

    resource: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: Event) -> bool:
        """Whether this watcher subscribed to `event`'s resource and namespace."""
        if event.resource != self.resource:
            return False
        ns = event.object.get("metadata", {}).get("namespace", "")
        return self.namespace is None or ns == self.namespace


class ObjectStore:
    """Versioned objects by resource and key, with a bounded event history and watchers."""

    def __init__(self, history_limit: int = 1000, first_revision: int = 1) -> None:
        self.history_limit = history_limit
        self.revision = first_revision
        self.compacted = first_revision
        self._objects: dict[str, dict[Key, JsonObject]] = {}
        self._history: deque[Event] = deque()
        self._watchers: set[Watcher] = set()

    # reads -------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> JsonObject | None:
        """A copy of the stored object, or None."""
        obj = self._objects.get(resource, {}).get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def items(self, resource: str, namespace: str | None = None) -> list[JsonObject]:
        """Copies of the stored objects of a resource, sorted by namespace and name."""
        table = self._objects.get(resource, {})
        return [
            copy.deepcopy(table[key])
            for key in sorted(table)
            if namespace is None or key[0] == namespace
        ]

    # writes ------------------------------------------------------------------

    def _stamp(self, obj: JsonObject) -> JsonObject:
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        return stored

    @staticmethod
    def _key(obj: JsonObject) -> Key:
        meta = obj["metadata"]
        return (meta.get("namespace", ""), meta["name"])

    def create(self, resource: str, obj: JsonObject) -> JsonObject:
        """Store a new object (the caller checked it does not exist); emits ADDED."""
        stored = self._stamp(obj)
        self._objects.setdefault(resource, {})[self._key(stored)] = stored
        self._emit(Event("ADDED", resource, stored, None, self.revision))
        return copy.deepcopy(stored)

    def update(self, resource: str, obj: JsonObject) -> JsonObject:
        """Replace an existing object; emits MODIFIED."""
        key = self._key(obj)
        previous = self._objects[resource][key]
        stored = self._stamp(obj)
        self._objects[resource][key] = stored
        self._emit(Event("MODIFIED", resource, stored, previous, self.revision))
        return copy.deepcopy(stored)

    def remove(self, resource: str, namespace: str, name: str) -> JsonObject:
        """Delete an object; emits DELETED carrying the final object at a new revision."""
        previous = self._objects[resource].pop((namespace, name))
        final = self._stamp(previous)
        self._emit(Event("DELETED", resource, final, previous, self.revision))
        return copy.deepcopy(final)

    def _emit(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.compacted = self._history.popleft().revision
        for watcher in self._watchers:
            if watcher.wants(event):
                watcher.queue.put_nowait(event)

    # watches -----------------------------------------------------------------

    def watch(self, resource: str, namespace: str | None, since: int | None) -> Watcher:
        """Subscribe; with `since`, replay kept events after it first.

        Without `since` the caller lists current objects itself (synthetic ADDED events).
        Raises Expired or TooLarge for a revision the store cannot serve.
        """
        watcher = Watcher(resource, namespace)
        if since is not None:
            if since < self.compacted:
                raise Expired(since, self.compacted)
            if since > self.revision:
                raise TooLarge(since, self.revision)
            for event in self._history:
                if event.revision > since and watcher.wants(event):
                    watcher.queue.put_nowait(event)
        self._watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        """End a subscription (idempotent)."""
        self._watchers.discard(watcher)

    def compact(self) -> None:
        """Forget all history: any watch from an earlier revision is now Expired."""
        self._history.clear()
        self.compacted = self.revision

    def close_watchers(self) -> None:
        """End every watch (the server is going down)."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        self._watchers.clear()

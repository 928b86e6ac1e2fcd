"""Revisions, history and watch replay of the stand-in's store."""

from __future__ import annotations

import pytest

from tests.kubeapi.store import Expired, ObjectStore, TooLarge


def obj(name: str) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "default"}}


class TestObjectStore:
    async def test_every_write_bumps_the_revision(self) -> None:
        store = ObjectStore()
        created = store.create("pods", obj("a"))
        updated = store.update("pods", created)
        final = store.remove("pods", "default", "a")
        revisions = [int(o["metadata"]["resourceVersion"]) for o in (created, updated, final)]
        assert revisions == [2, 3, 4]

    async def test_watch_replays_events_after_the_revision(self) -> None:
        store = ObjectStore()
        store.create("pods", obj("a"))
        since = store.revision
        store.create("pods", obj("b"))
        watcher = store.watch("pods", "default", since)
        event = watcher.queue.get_nowait()
        assert event is not None and event.object["metadata"]["name"] == "b"
        assert watcher.queue.empty()

    async def test_history_beyond_the_limit_expires(self) -> None:
        store = ObjectStore(history_limit=2)
        since = store.revision
        for name in "abc":
            store.create("pods", obj(name))
        with pytest.raises(Expired):
            store.watch("pods", None, since)
        store.watch("pods", None, store.revision - 2)

    async def test_future_revision_is_too_large(self) -> None:
        store = ObjectStore()
        with pytest.raises(TooLarge):
            store.watch("pods", None, store.revision + 1)

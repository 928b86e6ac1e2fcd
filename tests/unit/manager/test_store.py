"""The manager's SQLite store: round trips through a temporary file, and files it refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from manager.errors import StoreError
from manager.store import SCHEMA_VERSION, AgentRow, KernelRow, Store
from protos import agent_pb2 as pb


def agent_row(agent_id: str = "a0", address: str = "127.0.0.1:6001", **fields: object) -> AgentRow:
    values: dict[str, object] = {
        "agent_id": agent_id,
        "daemon_id": "node1/abc",
        "daemon_address": address,
        "node": "node1",
        "heartbeat_interval": 0.5,
        "status": "alive",
        "last_heartbeat": 1700000000.5,
        "info": pb.AgentInfo(
            agent_id=agent_id,
            backend="local",
            scaling_group="default",
            port_range=pb.PortRange(start=30000, end=30099),
            capacity=pb.Resources(
                cores=[0, 1],
                memory_bytes=1 << 30,
                ports=100,
                devices={"cuda": pb.DeviceIds(ids=["0"])},
            ),
            healthy=True,
        ),
    }
    values.update(fields)
    return AgentRow(**values)  # type: ignore[arg-type]


def kernel_row(kernel_id: str = "k1", agent_id: str = "a0", **fields: object) -> KernelRow:
    kernel = pb.Kernel(
        kernel_id=kernel_id,
        agent_id=agent_id,
        backend="local",
        state=pb.KERNEL_STATE_RUNNING,
        spec=pb.KernelSpec(kernel_id=kernel_id, command=["sleep", "300"], env={"A": "1"}),
        allocated=pb.Resources(cores=[1], memory_bytes=1 << 20, ports=1),
        ports={"http": 30001},
        created_at=1700000001.25,
        **fields,  # type: ignore[arg-type]
    )
    return KernelRow(kernel_id, agent_id, "127.0.0.1:6001", kernel)


class TestRoundTrip:
    async def test_agents_and_kernels_survive_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / "sub" / "manager.db"
        store = await Store.open(path)
        await store.save_agents([agent_row("a0"), agent_row("a1", status="lost")])
        await store.save_kernels([kernel_row("k1"), kernel_row("k2", "a1", exit_code=0)])
        await store.close()

        store = await Store.open(path)
        agents, kernels = await store.load()
        await store.close()
        assert agents == [agent_row("a0"), agent_row("a1", status="lost")]
        assert kernels == [kernel_row("k1"), kernel_row("k2", "a1", exit_code=0)]
        assert kernels[1].kernel.HasField("exit_code")
        assert not kernels[0].kernel.HasField("exit_code")

    async def test_save_replaces_and_delete_forgets(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_agents([agent_row("a0")])
        await store.save_agents([agent_row("a0", address="10.0.0.2:6001")])
        await store.save_kernels([kernel_row("k1"), kernel_row("k2")])
        moved = kernel_row("k1")
        moved.kernel.state = pb.KERNEL_STATE_TERMINATED
        await store.save_kernels([moved])
        await store.delete_kernels(["k2", "never-there"])
        agents, kernels = await store.load()
        assert [a.daemon_address for a in agents] == ["10.0.0.2:6001"]
        assert [(k.kernel_id, k.kernel.state) for k in kernels] == [
            ("k1", pb.KERNEL_STATE_TERMINATED)
        ]
        await store.delete_agents(["a0"])
        assert (await store.load())[0] == []
        await store.close()

    async def test_empty_saves_are_no_ops(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_agents([])
        await store.save_kernels([])
        await store.delete_agents([])
        await store.delete_kernels([])
        assert await store.load() == ([], [])
        await store.close()

    async def test_state_column_is_readable_with_plain_sqlite(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_kernels([kernel_row("k1")])
        await store.close()
        with sqlite3.connect(tmp_path / "m.db") as conn:
            rows = conn.execute("SELECT kernel_id, agent_id, state FROM kernels").fetchall()
        assert rows == [("k1", "a0", "KERNEL_STATE_RUNNING")]


class TestRefusedFiles:
    async def test_newer_schema_is_refused_with_what_to_do(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        await (await Store.open(path)).close()
        with sqlite3.connect(path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(StoreError) as err:
            await Store.open(path)
        assert str(err.value) == (
            f"{path}: schema version {SCHEMA_VERSION + 1} was written by a newer agenthost "
            f"(this one reads {SCHEMA_VERSION}): run that newer agenthost, or move it aside "
            f"(mv {path} {path}.broken) to start with an empty manager; the daemons register "
            "their agents and kernels again"
        )

    async def test_garbage_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        path.write_bytes(b"this is not sqlite at all" * 100)
        with pytest.raises(StoreError) as err:
            await Store.open(path)
        assert str(err.value).startswith(f"{path}: not a usable SQLite database (")
        assert str(err.value).endswith(
            f"move it aside (mv {path} {path}.broken) to start with an empty manager"
        )

    async def test_someone_elses_sqlite_file_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE other (x)")
        with pytest.raises(StoreError) as err:
            await Store.open(path)
        assert "not an agenthost manager database" in str(err.value)

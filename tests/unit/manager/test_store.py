"""The manager's SQLite store: record round trips, version-1 files it reads, files it refuses."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from common.ids import AgentId
from manager.delegation import Budget
from manager.errors import StoreError
from manager.kernels import KernelRecord
from manager.registry import AgentRecord, Liveness
from manager.store import _MIGRATIONS, SCHEMA_VERSION, SavedAgent, Store
from manager.tokens import new_delegated_token, new_token
from protos import agent_pb2 as pb

INTERVAL = 0.5


def agent_record(
    agent_id: str = "a0", address: str = "127.0.0.1:6001", **fields: object
) -> AgentRecord:
    values: dict[str, object] = {
        "agent_id": AgentId(agent_id),
        "daemon_id": "node1/abc",
        "daemon_address": address,
        "node": "node1",
        "status": Liveness.ALIVE,
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
    return AgentRecord(**values)  # type: ignore[arg-type]


def saved(record: AgentRecord, interval: float = INTERVAL) -> SavedAgent:
    return SavedAgent(record, interval)


def every_interval(agent_id: AgentId) -> float:
    return INTERVAL


def kernel_record(kernel_id: str = "k1", agent_id: str = "a0", **fields: object) -> KernelRecord:
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
    return KernelRecord(kernel, "127.0.0.1:6001")


class TestRoundTrip:
    async def test_agents_and_kernels_survive_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / "sub" / "manager.db"
        store = await Store.open(path)
        await store.save_agents(
            [agent_record("a0"), agent_record("a1", status=Liveness.LOST)], every_interval
        )
        await store.save_kernels([kernel_record("k1"), kernel_record("k2", "a1", exit_code=0)])
        await store.close()

        store = await Store.open(path)
        agents, kernels = await store.load()
        await store.close()
        assert agents == [
            saved(agent_record("a0")),
            saved(agent_record("a1", status=Liveness.LOST)),
        ]
        assert kernels == [kernel_record("k1"), kernel_record("k2", "a1", exit_code=0)]
        assert kernels[1].kernel.HasField("exit_code")
        assert not kernels[0].kernel.HasField("exit_code")

    async def test_save_replaces_and_delete_forgets(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_agents([agent_record("a0")], every_interval)
        await store.save_agents([agent_record("a0", address="10.0.0.2:6001")], every_interval)
        await store.save_kernels([kernel_record("k1"), kernel_record("k2")])
        moved = kernel_record("k1")
        moved.kernel.state = pb.KERNEL_STATE_TERMINATED
        await store.save_kernels([moved])
        await store.delete_kernels(["k2", "never-there"])
        agents, kernels = await store.load()
        assert [a.record.daemon_address for a in agents] == ["10.0.0.2:6001"]
        assert [(k.kernel_id, k.kernel.state) for k in kernels] == [
            ("k1", pb.KERNEL_STATE_TERMINATED)
        ]
        await store.delete_agents(["a0"])
        assert (await store.load())[0] == []
        await store.close()

    async def test_empty_saves_are_no_ops(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_agents([], every_interval)
        await store.save_kernels([])
        await store.delete_agents([])
        await store.delete_kernels([])
        assert await store.load() == ([], [])
        await store.close()

    async def test_state_column_is_readable_with_plain_sqlite(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_kernels([kernel_record("k1")])
        await store.close()
        with sqlite3.connect(tmp_path / "m.db") as conn:
            rows = conn.execute("SELECT kernel_id, agent_id, state FROM kernels").fetchall()
        assert rows == [("k1", "a0", "KERNEL_STATE_RUNNING")]

    async def test_each_agent_keeps_its_daemons_heartbeat_interval(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        intervals = {"a0": 0.5, "a1": 7.0}
        await store.save_agents([agent_record("a0"), agent_record("a1")], intervals.__getitem__)
        agents, _ = await store.load()
        await store.close()
        assert [(a.record.agent_id, a.heartbeat_interval) for a in agents] == [
            ("a0", 0.5),
            ("a1", 7.0),
        ]

    async def test_a_kernel_saved_twice_in_one_call_is_one_row_as_last_given(
        self, tmp_path: Path
    ) -> None:
        store = await Store.open(tmp_path / "m.db")
        first, last = kernel_record("k1"), kernel_record("k1", exit_code=3)
        await store.save_kernels([first, kernel_record("k2"), last])
        _, kernels = await store.load()
        await store.close()
        assert kernels == [last, kernel_record("k2")]


# The version-1 file exactly as the first manager wrote it. A manager restarted on
# such a file must read it; the schema text is repeated here on purpose, so that a
# change to the store's schema fails this test instead of old files.
V1_SCHEMA = """
CREATE TABLE agents (
    agent_id TEXT PRIMARY KEY, daemon_id TEXT NOT NULL, daemon_address TEXT NOT NULL,
    node TEXT NOT NULL, scaling_group TEXT NOT NULL, heartbeat_interval REAL NOT NULL,
    status TEXT NOT NULL, last_heartbeat REAL NOT NULL, info BLOB NOT NULL
);
CREATE TABLE kernels (
    kernel_id TEXT PRIMARY KEY, agent_id TEXT NOT NULL, daemon_address TEXT NOT NULL,
    state TEXT NOT NULL, kernel BLOB NOT NULL
);
CREATE INDEX kernels_by_agent ON kernels (agent_id);
PRAGMA user_version = 1;
"""


class TestVersionOneFiles:
    async def test_a_file_written_by_the_first_manager_is_read(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        a1, k1 = agent_record("a1", status=Liveness.LOST), kernel_record("k1", "a1")
        with sqlite3.connect(path) as conn:
            conn.executescript(V1_SCHEMA)
            conn.execute(
                "INSERT INTO agents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    "a1",
                    "node1/abc",
                    "127.0.0.1:6001",
                    "node1",
                    "default",
                    2.5,
                    "lost",
                    1700000000.5,
                    a1.info.SerializeToString(),
                ),
            )
            conn.execute(
                "INSERT INTO kernels VALUES (?, ?, ?, ?, ?)",
                (
                    "k1",
                    "a1",
                    "127.0.0.1:6001",
                    "KERNEL_STATE_RUNNING",
                    k1.kernel.SerializeToString(),
                ),
            )
        conn.close()
        store = await Store.open(path)
        agents, kernels = await store.load()
        await store.close()
        assert agents == [saved(a1, 2.5)]
        assert kernels == [k1]

    async def test_rows_are_written_in_the_version_one_layout(self, tmp_path: Path) -> None:
        store = await Store.open(tmp_path / "m.db")
        await store.save_agents([agent_record("a1", status=Liveness.LOST)], every_interval)
        await store.save_kernels([kernel_record("k1", "a1")])
        await store.close()
        with sqlite3.connect(tmp_path / "m.db") as conn:
            agents = conn.execute(
                "SELECT agent_id, daemon_id, daemon_address, node, scaling_group, "
                "heartbeat_interval, status, last_heartbeat FROM agents"
            ).fetchall()
            kernels = conn.execute("SELECT kernel_id, agent_id, daemon_address, state FROM kernels")
            assert agents == [
                (
                    "a1",
                    "node1/abc",
                    "127.0.0.1:6001",
                    "node1",
                    "default",
                    INTERVAL,
                    "lost",
                    1700000000.5,
                )
            ]
            assert kernels.fetchall() == [("k1", "a1", "127.0.0.1:6001", "KERNEL_STATE_RUNNING")]
        conn.close()


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


class TestTemplatesAndGroups:
    async def test_a_version_1_file_gains_templates_and_groups(self, tmp_path: Path) -> None:
        path = tmp_path / "m.db"
        with sqlite3.connect(path) as conn:
            conn.executescript(V1_SCHEMA)
        conn.close()
        store = await Store.open(path)
        assert await store.load_templates() == [] and await store.load_groups() == []
        await store.close()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        conn.close()

    async def test_templates_and_groups_survive_reopening(self, tmp_path: Path) -> None:
        from manager.groups.document import load_group, load_template
        from manager.groups.plan import resolve_kernels
        from manager.groups.record import RUNNING, GroupRecord
        from manager.templates import TemplateRecord

        template = TemplateRecord(
            load_template(
                {
                    "apiVersion": "agenthost.io/v1alpha1",
                    "kind": "KernelTemplate",
                    "metadata": {"name": "web"},
                    "spec": {"command": ["x"], "readiness": {"exec": ["true"]}},
                }
            ),
            "token:alice",
            1.0,
            2.0,
        )
        document = load_group(
            {
                "apiVersion": "agenthost.io/v1alpha1",
                "kind": "AgentGroup",
                "metadata": {"name": "g"},
                "spec": {
                    "roles": [
                        {"name": "a", "coordinator": True, "template": "web"},
                        {"name": "b", "kernel": {"command": ["y"]}, "dependsOn": ["a"]},
                    ],
                    "idleTimeout": "1h",
                },
            }
        )
        group = GroupRecord.new(
            document,
            resolve_kernels(document, {"web": template.spec}, "default"),
            "token:alice",
            5.0,
        )
        group.status.members.add(role="a", kernel_id="g-a-0-abcd", ready=True)
        store = await Store.open(tmp_path / "m.db")
        await store.save_template(template)
        await store.save_group(group)
        group.status.phase = RUNNING
        await store.save_group_status("g", group.status.SerializeToString())
        await store.close()

        store = await Store.open(tmp_path / "m.db")
        (loaded_template,) = await store.load_templates()
        (loaded,) = await store.load_groups()
        await store.delete_template("web")
        await store.delete_group("g")
        assert await store.load_groups() == [] and await store.load_templates() == []
        await store.close()
        assert loaded_template == template
        assert (loaded.name, loaded.uid, loaded.owner, loaded.created_at) == (
            "g",
            group.uid,
            "token:alice",
            5.0,
        )
        assert loaded.document == document and loaded.kernels == group.kernels
        assert loaded.status == group.status and loaded.plan().waves == (("a",), ("b",))


class TestTokens:
    async def test_delegated_tokens_keep_their_kernel_and_limits(self, tmp_path: Path) -> None:
        _, plain = new_token("alice", admin=False, scaling_groups=["g1"])
        _, delegated = new_delegated_token(
            "k1", "g1", Budget.of(2, 1 << 30, 3, {"cuda": 1}), "token:alice"
        )
        store = await Store.open(tmp_path / "m.db")
        await store.save_token(plain)
        await store.save_token(delegated)
        await store.close()
        store = await Store.open(tmp_path / "m.db")
        assert await store.load_tokens() == [plain, delegated]
        await store.close()

    async def test_a_version_3_file_gains_delegations_and_keeps_its_tokens(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "m.db"
        _, alice = new_token("alice", admin=False, scaling_groups=["g1"], now=5.0)
        with sqlite3.connect(path) as conn:
            conn.executescript(V1_SCHEMA)
            for step in _MIGRATIONS[:2]:
                conn.executescript(step)
            conn.execute("PRAGMA user_version = 3")
            conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (alice.token_id, "alice", alice.secret_hash, 0, '["g1"]', 5.0, 0, 0, "", 0),
            )
        conn.close()
        store = await Store.open(path)
        assert await store.load_tokens() == [alice]
        await store.close()

"""Persistence of the manager: agents, kernels, token hashes, templates and groups in
one SQLite file.

Every change is written through before the manager answers, so a restart (even
after kill -9) loses nothing: the database runs in WAL mode, where a committed
transaction survives the process dying. The schema carries a version
(`PRAGMA user_version`): an older file is migrated in place, a file this version
cannot use is refused with the one thing the operator should do. The file and its
directory are private to the manager's user (0600, 0700). All SQLite work runs
on one dedicated thread, so the event loop never blocks on the disk.

Maps the registry's agent records and the kernel table's records to rows and back
(protocol messages stored as serialised bytes), so the file's layout is decided
here alone. Knows those records and SQL; nothing of scheduling, routing or gRPC.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from common.ids import AgentId
from manager.delegation import Budget
from manager.errors import StoreError
from manager.groups.document import load_template
from manager.groups.record import GroupRecord
from manager.kernels import KernelRecord
from manager.registry import AgentRecord, Liveness
from manager.templates import TemplateRecord
from manager.tokens import TokenRecord
from protos import agent_pb2 as pb

SCHEMA_VERSION = 4
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    daemon_id TEXT NOT NULL,
    daemon_address TEXT NOT NULL,
    node TEXT NOT NULL,
    scaling_group TEXT NOT NULL,
    heartbeat_interval REAL NOT NULL,
    status TEXT NOT NULL,
    last_heartbeat REAL NOT NULL,
    info BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS kernels (
    kernel_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    daemon_address TEXT NOT NULL,
    state TEXT NOT NULL,
    kernel BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS kernels_by_agent ON kernels (agent_id);
"""

# Each step takes a file from the version before it to its own (index + 2 = target).
_MIGRATIONS = (
    # 2: kernels have an owner; users have tokens (hashes only).
    """
    ALTER TABLE kernels ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE TABLE IF NOT EXISTS tokens (
        token_id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        admin INTEGER NOT NULL,
        scaling_groups TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        viewer INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 3: templates (named kernel specs) and agent groups.
    """
    CREATE TABLE IF NOT EXISTS templates (
        name TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        document TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS groups (
        name TEXT PRIMARY KEY,
        uid TEXT NOT NULL,
        owner TEXT NOT NULL,
        generation INTEGER NOT NULL,
        created_at REAL NOT NULL,
        document TEXT NOT NULL,
        kernels TEXT NOT NULL,
        status BLOB NOT NULL
    );
    """,
    # 4: delegated tokens: the kernel each was given to, and its limits (JSON).
    """
    ALTER TABLE tokens ADD COLUMN parent_kernel_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE tokens ADD COLUMN limits TEXT NOT NULL DEFAULT '';
    """,
)


@dataclass(frozen=True)
class SavedAgent:
    """An agent as the store gives it back: its record and its daemon's heartbeat interval."""

    record: AgentRecord
    heartbeat_interval: float


class Store:
    """The SQLite file of one manager."""

    def __init__(self, path: Path, conn: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        self.path = path
        self._conn = conn
        self._executor = executor

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating if needed) the database at path and check its schema version."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manager-store")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, conn, executor)

    async def load(self) -> tuple[list[SavedAgent], list[KernelRecord]]:
        """Every agent and kernel recorded, in the order they were first saved."""

        def read(conn: sqlite3.Connection) -> tuple[list[SavedAgent], list[KernelRecord]]:
            agents = [
                SavedAgent(
                    AgentRecord(
                        agent_id=AgentId(r[0]),
                        daemon_id=r[1],
                        daemon_address=r[2],
                        node=r[3],
                        info=pb.AgentInfo.FromString(r[7]),
                        status=Liveness(r[5]),
                        last_heartbeat=r[6],
                    ),
                    heartbeat_interval=r[4],
                )
                for r in conn.execute(
                    "SELECT agent_id, daemon_id, daemon_address, node, heartbeat_interval, "
                    "status, last_heartbeat, info FROM agents ORDER BY rowid"
                )
            ]
            kernels = [
                KernelRecord(pb.Kernel.FromString(r[0]), daemon_address=r[1], owner=r[2])
                for r in conn.execute(
                    "SELECT kernel, daemon_address, owner FROM kernels ORDER BY rowid"
                )
            ]
            return agents, kernels

        return await self._run(read)

    async def save_agents(
        self, records: Iterable[AgentRecord], interval_of: Callable[[AgentId], float]
    ) -> None:
        """Insert or replace agents as they are now, in one transaction.

        interval_of gives the heartbeat interval of an agent's daemon.
        """
        values = [
            (
                r.agent_id,
                r.daemon_id,
                r.daemon_address,
                r.node,
                r.info.scaling_group,
                interval_of(r.agent_id),
                r.status.value,
                r.last_heartbeat,
                r.info.SerializeToString(),
            )
            for r in records
        ]
        if values:
            await self._write(
                "INSERT INTO agents (agent_id, daemon_id, daemon_address, node, scaling_group, "
                "heartbeat_interval, status, last_heartbeat, info) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (agent_id) DO UPDATE SET daemon_id = excluded.daemon_id, "
                "daemon_address = excluded.daemon_address, node = excluded.node, "
                "scaling_group = excluded.scaling_group, "
                "heartbeat_interval = excluded.heartbeat_interval, status = excluded.status, "
                "last_heartbeat = excluded.last_heartbeat, info = excluded.info",
                values,
            )

    async def delete_agents(self, agent_ids: Iterable[str]) -> None:
        """Forget agents (their kernels are separate rows)."""
        values = [(a,) for a in agent_ids]
        if values:
            await self._write("DELETE FROM agents WHERE agent_id = ?", values)

    async def save_kernels(self, records: Iterable[KernelRecord]) -> None:
        """Insert or replace kernels as they are now (once each), in one transaction."""
        latest = {r.kernel_id: r for r in records}
        values = [
            (
                r.kernel_id,
                r.agent_id,
                r.daemon_address,
                pb.KernelState.Name(r.kernel.state),
                r.kernel.SerializeToString(),
                r.owner,
            )
            for r in latest.values()
        ]
        if values:
            await self._write(
                "INSERT INTO kernels (kernel_id, agent_id, daemon_address, state, kernel, owner) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kernel_id) DO UPDATE SET "
                "agent_id = excluded.agent_id, daemon_address = excluded.daemon_address, "
                "state = excluded.state, kernel = excluded.kernel, owner = excluded.owner",
                values,
            )

    async def delete_kernels(self, kernel_ids: Iterable[str]) -> None:
        """Forget kernels."""
        values = [(k,) for k in kernel_ids]
        if values:
            await self._write("DELETE FROM kernels WHERE kernel_id = ?", values)

    async def load_tokens(self) -> list[TokenRecord]:
        """Every token record (revoked ones included)."""

        def read(conn: sqlite3.Connection) -> list[TokenRecord]:
            return [
                TokenRecord(
                    token_id=r[0],
                    name=r[1],
                    secret_hash=r[2],
                    admin=bool(r[3]),
                    scaling_groups=tuple(json.loads(r[4])),
                    created_at=r[5],
                    expires_at=r[6],
                    revoked_at=r[7],
                    created_by=r[8],
                    viewer=bool(r[9]),
                    parent_kernel_id=r[10],
                    limits=Budget.from_json(json.loads(r[11])) if r[11] else None,
                )
                for r in conn.execute(
                    "SELECT token_id, name, secret_hash, admin, scaling_groups, created_at, "
                    "expires_at, revoked_at, created_by, viewer, parent_kernel_id, limits "
                    "FROM tokens ORDER BY rowid"
                )
            ]

        return await self._run(read)

    async def save_token(self, record: TokenRecord) -> None:
        """Insert or replace one token record."""
        await self._write(
            "INSERT INTO tokens (token_id, name, secret_hash, admin, scaling_groups, "
            "created_at, expires_at, revoked_at, created_by, viewer, parent_kernel_id, limits) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (token_id) DO UPDATE SET name = excluded.name, "
            "secret_hash = excluded.secret_hash, admin = excluded.admin, "
            "scaling_groups = excluded.scaling_groups, expires_at = excluded.expires_at, "
            "revoked_at = excluded.revoked_at",
            [
                (
                    record.token_id,
                    record.name,
                    record.secret_hash,
                    int(record.admin),
                    json.dumps(list(record.scaling_groups)),
                    record.created_at,
                    record.expires_at,
                    record.revoked_at,
                    record.created_by,
                    int(record.viewer),
                    record.parent_kernel_id,
                    json.dumps(record.limits.to_json()) if record.limits is not None else "",
                )
            ],
        )

    async def load_templates(self) -> list[TemplateRecord]:
        """Every template."""

        def read(conn: sqlite3.Connection) -> list[TemplateRecord]:
            return [
                TemplateRecord(load_template(json.loads(r[0])), r[1], r[2], r[3])
                for r in conn.execute(
                    "SELECT document, owner, created_at, updated_at FROM templates ORDER BY rowid"
                )
            ]

        return await self._run(read)

    async def save_template(self, record: TemplateRecord) -> None:
        """Insert or replace one template."""
        await self._write(
            "INSERT INTO templates (name, owner, document, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
            "document = excluded.document, updated_at = excluded.updated_at",
            [
                (
                    record.name,
                    record.owner,
                    record.document_json,
                    record.created_at,
                    record.updated_at,
                )
            ],
        )

    async def delete_template(self, name: str) -> None:
        """Forget a template."""
        await self._write("DELETE FROM templates WHERE name = ?", [(name,)])

    async def load_groups(self) -> list[GroupRecord]:
        """Every group, in the order created."""

        def read(conn: sqlite3.Connection) -> list[GroupRecord]:
            return [
                GroupRecord.load(*r)
                for r in conn.execute(
                    "SELECT name, uid, owner, generation, created_at, document, kernels, status "
                    "FROM groups ORDER BY rowid"
                )
            ]

        return await self._run(read)

    async def save_group(self, record: GroupRecord) -> None:
        """Insert or replace a group whole."""
        await self._write(
            "INSERT INTO groups (name, uid, owner, generation, created_at, document, kernels, "
            "status) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "uid = excluded.uid, owner = excluded.owner, generation = excluded.generation, "
            "created_at = excluded.created_at, document = excluded.document, "
            "kernels = excluded.kernels, status = excluded.status",
            [
                (
                    record.name,
                    record.uid,
                    record.owner,
                    record.generation,
                    record.created_at,
                    record.document_json,
                    record.kernels_json,
                    record.status.SerializeToString(deterministic=True),
                )
            ],
        )

    async def save_group_status(self, name: str, status: bytes) -> None:
        """Write a group's status (serialised GroupStatus)."""
        await self._write("UPDATE groups SET status = ? WHERE name = ?", [(status, name)])

    async def delete_group(self, name: str) -> None:
        """Forget a group."""
        await self._write("DELETE FROM groups WHERE name = ?", [(name,)])

    async def close(self) -> None:
        """Close the database and its thread."""
        await self._run(lambda conn: conn.close())
        self._executor.shutdown(wait=True)

    async def _write(self, sql: str, values: Sequence[tuple[object, ...]]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with conn:
                conn.executemany(sql, values)

        await self._run(write)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, work, self._conn)


def _connect(path: Path) -> sqlite3.Connection:
    """Open path, create the schema on a new file, refuse one this version cannot read."""
    aside = f"move it aside (mv {path} {path}.broken) to start with an empty manager"
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created private before SQLite opens it; its -wal and -shm files take its mode.
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        conn = sqlite3.connect(path, isolation_level="DEFERRED")
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(
            f"db_path {path}: cannot open the manager's database: {reason}; "
            "set [manager] db_path to a writable file"
        ) from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: schema version {version} was written by a newer agenthost (this one "
                f"reads {SCHEMA_VERSION}): run that newer agenthost, or {aside}; the daemons "
                "register their agents and kernels again"
            )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        if version == 0:
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                raise StoreError(
                    f"{path}: a SQLite file that is not an agenthost manager database: {aside}"
                )
            with conn:
                conn.executescript(_SCHEMA)
                conn.execute("PRAGMA user_version = 1")
            version = 1
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # executescript commits first; each step and its version bump are one script.
            conn.executescript(
                f"BEGIN; {_MIGRATIONS[target - 2]} PRAGMA user_version = {target}; COMMIT;"
            )
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(f"{path}: not a usable SQLite database ({exc}): {aside}") from None
    except BaseException:
        conn.close()
        raise
    return conn

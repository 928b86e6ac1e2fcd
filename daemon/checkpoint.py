"""An agent's checkpoint: its kernels and what they hold, written atomically.

The file is JSON with a schema version and a checksum of its payload, written to a
temporary file, fsynced and renamed over the previous one. Each record's encoding is
kept until the record changes (records are immutable), so a write encodes only the
records changed since the last one: a write of an agent with many kernels neither
re-encodes them all nor holds the interpreter lock long (`encode`). A file this version
cannot use is refused with the one thing the operator should do, never guessed at.
When to write is the agent's state's business (`daemon/state.py`), not this
module's. Knows kernel records and files; nothing of backends or gRPC.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from common.atomic_file import fsync_directory, write_atomically
from common.timings import Timings
from daemon.errors import CheckpointError
from daemon.kernels import Kernel

SCHEMA_VERSION = 1
_KERNELS = TypeAdapter(list[Kernel])
_KERNEL = TypeAdapter(Kernel)


def _checksum(payload: str) -> str:
    return "sha256:" + hashlib.sha256(payload.encode()).hexdigest()


class Checkpoint:
    """The state file of one agent."""

    def __init__(self, path: Path, agent_id: str) -> None:
        self.path = path
        self.agent_id = agent_id
        self.write_timings = Timings()  # how long writes take (read by the daemon's metrics)
        # kernel id -> (the record, its compact JSON with sorted keys), from the last encode.
        self._encoded: dict[str, tuple[Kernel, str]] = {}

    def load(self) -> list[Kernel]:
        """The kernels recorded in the file; none when there is no file yet."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        aside = (
            f"move it aside (mv {self.path} {self.path}.broken) to start agent "
            f"{self.agent_id!r} afresh; its kernels will then be ended"
        )
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{self.path}: not valid JSON ({exc.msg} at line {exc.lineno}); "
                f"the file is truncated or corrupt: {aside}"
            ) from None
        if not isinstance(doc, dict) or "schema_version" not in doc:
            raise CheckpointError(f"{self.path}: not an agenthost checkpoint: {aside}")
        version = doc["schema_version"]
        if version != SCHEMA_VERSION:
            if type(version) is int and version > SCHEMA_VERSION:
                raise CheckpointError(
                    f"{self.path}: schema_version {version} was written by a newer agenthost "
                    f"(this one reads {SCHEMA_VERSION}): run that newer agenthost, or {aside}"
                )
            raise CheckpointError(
                f"{self.path}: schema_version {version!r} cannot be read or migrated "
                f"(this agenthost reads {SCHEMA_VERSION}): {aside}"
            )
        if doc.get("agent_id") != self.agent_id:
            raise CheckpointError(
                f"{self.path}: belongs to agent {doc.get('agent_id')!r}, not {self.agent_id!r}: "
                f"{aside}"
            )
        payload = json.dumps(doc.get("kernels"), sort_keys=True, separators=(",", ":"))
        if doc.get("checksum") != _checksum(payload):
            raise CheckpointError(f"{self.path}: checksum mismatch, the file is corrupt: {aside}")
        try:
            return _KERNELS.validate_python(doc["kernels"])
        except ValidationError as exc:
            first = exc.errors()[0]
            index, *rest = first["loc"] or ("?",)
            where = f"kernels[{index}]" + "".join(f".{p}" for p in rest)
            raise CheckpointError(
                f"{self.path}: unreadable kernel record at {where}: {first['msg']}: {aside}"
            ) from None

    def encode(self, kernels: Iterable[Kernel]) -> str:
        """The file's content for kernels (a snapshot: later changes to them do not show).

        The payload is exactly `json.dumps(records, sort_keys=True, separators=(",", ":"))`
        (what `load` checks the checksum against), built from one fragment per record;
        a record's fragment is reused while the record is the same object. Called by one
        writer at a time.
        """
        encoded: dict[str, tuple[Kernel, str]] = {}
        fragments = []
        for kernel in kernels:
            cached = self._encoded.get(kernel.kernel_id)
            if cached is None or cached[0] is not kernel:
                record = _KERNEL.dump_python(kernel, mode="json")
                cached = (kernel, json.dumps(record, sort_keys=True, separators=(",", ":")))
            encoded[kernel.kernel_id] = cached
            fragments.append(cached[1])
        self._encoded = encoded
        header = json.dumps(
            {
                "schema_version": SCHEMA_VERSION,
                "agent_id": self.agent_id,
                "checksum": _checksum("[" + ",".join(fragments) + "]"),
            },
            indent=1,
        )
        # One record per line: whitespace between records is not part of the payload.
        listed = "[\n" + ",\n".join(fragments) + "\n ]" if fragments else "[]"
        return header[:-2] + ',\n "kernels": ' + listed + "\n}\n"

    def write(self, content: str) -> None:
        """Replace the file atomically with content from encode(), the content fsynced.

        The directory is not fsynced here (see `sync`): the file is whole at every
        moment, and another process (a daemon restarted after kill -9) reads the new
        one at once; only a crash of the machine before `sync` could bring back the
        previous, whole version.
        """
        with self.write_timings.timed():
            write_atomically(self.path, content, sync_directory=False)

    def sync(self) -> None:
        """fsync the directory: the last write's rename survives a crash of the machine."""
        fsync_directory(self.path.parent)

    def save(self, kernels: Iterable[Kernel]) -> None:
        """encode(), write() and sync()."""
        self.write(self.encode(kernels))
        self.sync()

"""Replacing a file atomically: a reader sees the old content or the new, never half.

Used for agents' checkpoints, for writing scaling groups back into the config,
and for keys, certificates and tokens.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(
    path: Path, content: str | bytes, mode: int | None = None, sync_directory: bool = True
) -> None:
    """Write content to a temporary file beside path, fsync it, rename it over path,
    and fsync the directory so the rename itself survives a crash.

    The file gets mode, or else the mode of the file it replaces, or else 0600:
    nothing is ever readable by others for a moment, even while it is written.
    sync_directory=False leaves the directory's fsync to the caller (`sync_directory`):
    the file is whole either way, and a crash before that fsync can only bring back
    the previous version, whole too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
    data = content.encode() if isinstance(content, str) else content
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync_directory:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """fsync a directory: the renames and creations in it survive a crash."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

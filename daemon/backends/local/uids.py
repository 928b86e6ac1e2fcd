"""Who a local kernel runs as: the uid pool, and the accounts a config may name.

Each kernel of an agent with a `uid_range` runs as a uid of its own (its gid the
same number), so kernels can neither signal nor read (`/proc/<pid>/environ`,
their directories) each other. `UidPool` hands those uids out. It is one per
daemon, shared by its local agents: each agent allocates from its own range,
but a uid held by any kernel of the daemon is never handed out twice, even when
agents' ranges overlap or changed between restarts. Allocation goes round the
range (the uid after the last one given), so a uid is reused as late as
possible; a kernel restarted in a working directory a free uid of the range
owns gets that uid back (its files stay its own).

A uid is held by its *owner*: the kernel's main process (pid and start time),
or a placeholder while it is being spawned. `release` frees a uid only for its
owner, so a second stop of an old handle never frees a uid a newer kernel took.
The pool is rebuilt after a restart from the handles the agents re-adopt.

Also `resolve_account` (a `run_as` user name or uid to uid and gid) and
`accounts_in` (the host's users and groups inside a range), which the settings
model uses to validate. Standard library only; knows nothing of processes,
agents or the daemon's configuration beyond a range and a name.
"""

from __future__ import annotations

import grp
import pwd
import threading
from collections.abc import Hashable

from common.errors import ResourceExhausted

UID_MAX = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel's set*id calls


def resolve_account(run_as: str | int) -> tuple[int, int]:
    """The uid and gid of a user name or numeric uid; ValueError naming it when unknown.

    A numeric uid with no passwd entry runs with the gid of the same number.
    """
    if isinstance(run_as, int) or run_as.isdigit():
        uid = int(run_as)
        if not 0 <= uid <= UID_MAX:
            raise ValueError(f"uid {uid} is outside 0-{UID_MAX}")
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            return uid, uid
    try:
        entry = pwd.getpwnam(run_as)
    except KeyError:
        raise ValueError(
            f"no user {run_as!r} on this host; give a user name from /etc/passwd or a uid"
        ) from None
    return entry.pw_uid, entry.pw_gid


def accounts_in(first: int, last: int) -> list[str]:
    """The host's users and groups whose id lies in first..last (e.g. "user 'bob' (2000005)")."""
    found = [
        f"user {u.pw_name!r} ({u.pw_uid})" for u in pwd.getpwall() if first <= u.pw_uid <= last
    ]
    found += [
        f"group {g.gr_name!r} ({g.gr_gid})" for g in grp.getgrall() if first <= g.gr_gid <= last
    ]
    return found


class UidPool:
    """The uids the daemon's kernels hold, each with its owner; thread-safe."""

    def __init__(self) -> None:
        self._held: dict[int, Hashable] = {}
        self._next: dict[tuple[int, int], int] = {}  # range -> where the next search starts
        self._lock = threading.Lock()

    def allocate(
        self, uid_range: tuple[int, int], owner: Hashable, prefer: int | None = None
    ) -> int:
        """A free uid of uid_range (prefer when it is free and in range), now held by owner."""
        first, last = uid_range
        with self._lock:
            if prefer is not None and first <= prefer <= last and prefer not in self._held:
                uid = prefer
            else:
                uid = self._search(first, last)
            self._held[uid] = owner
            self._next[uid_range] = first if uid == last else uid + 1
            return uid

    def bind(self, uid: int, old_owner: Hashable, owner: Hashable) -> None:
        """Hand uid from old_owner (the placeholder of a spawn) to owner (the running kernel)."""
        with self._lock:
            if self._held.get(uid) == old_owner:
                self._held[uid] = owner

    def adopt(self, uid: int, owner: Hashable) -> None:
        """Hold uid for owner, a kernel re-adopted after a restart (in range or not)."""
        with self._lock:
            self._held[uid] = owner

    def release(self, uid: int, owner: Hashable) -> bool:
        """Free uid if owner holds it; True when it did."""
        with self._lock:
            if self._held.get(uid) != owner:
                return False
            del self._held[uid]
            return True

    def held(self) -> dict[int, Hashable]:
        """A copy of what is held: uid -> owner."""
        with self._lock:
            return dict(self._held)

    def _search(self, first: int, last: int) -> int:
        start = self._next.get((first, last), first)
        if not first <= start <= last:
            start = first
        size = last - first + 1
        for step in range(size):
            uid = first + (start - first + step) % size
            if uid not in self._held:
                return uid
        raise ResourceExhausted(
            f"every uid of uid_range {first}-{last} is held by a running kernel ({size}); "
            "destroy kernels or widen local.uid_range"
        )

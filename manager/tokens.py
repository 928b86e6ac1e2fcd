"""Bearer tokens of users: making them, checking them, and what each may do.

A token reads `aht_<token_id>_<secret>`. The manager keeps only the token id and a
SHA-256 hash of the secret (the secret is 256 random bits, so a plain hash cannot be
reversed or guessed); the whole token is shown once, when it is made. `TokenTable`
holds every token in memory, so checking a call costs a dict lookup and one hash,
and a revocation or an expiry takes effect on the next call.

A delegated token (`new_delegated_token`) belongs to one kernel: its secret is
given only to that kernel (in its env), its scope is the kernel's scaling group and
the limits of `manager/delegation.py`, and it is revoked when that kernel ends.
`delegation_of` finds a kernel's token. Knows tokens and principals; nothing of
gRPC or SQLite (`manager/store.py` persists the records).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from common.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from common.ids import ID_SYNTAX, is_valid_id
from common.principal import Principal
from manager.delegation import Budget

PREFIX = "aht"
ADMIN_TOKEN_NAME = "admin"


@dataclass(frozen=True)
class TokenRecord:
    """One token as the manager keeps it (no secret, only its hash)."""

    token_id: str
    name: str
    secret_hash: str
    admin: bool
    scaling_groups: tuple[str, ...]
    created_at: float
    expires_at: float = 0.0  # 0: never
    revoked_at: float = 0.0  # 0: not revoked
    created_by: str = ""
    viewer: bool = False  # read-only: sees kernels of its scaling groups, env values redacted
    parent_kernel_id: str = ""  # a delegated token: the kernel it was given to
    limits: Budget | None = None  # a delegated token: what its kernels may reserve in all

    def active(self, now: float) -> bool:
        """Neither revoked nor expired at now."""
        return not self.revoked_at and (not self.expires_at or now < self.expires_at)

    def principal(self) -> Principal:
        """The principal a call with this token acts as."""
        return Principal(
            kind="token",
            role="user",
            name=self.name,
            admin=self.admin,
            scaling_groups=self.scaling_groups,
            token_id=self.token_id,
            viewer=self.viewer,
            parent_kernel_id=self.parent_kernel_id,
        )

    @property
    def owner(self) -> str:
        """What the kernels created with this token record as their owner."""
        return str(self.principal())


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_token(token: str) -> tuple[str, str] | None:
    """(token_id, secret) of a well-formed token, else None."""
    prefix, sep, rest = token.partition("_")
    token_id, sep2, secret = rest.partition("_")
    if prefix != PREFIX or not sep or not sep2 or not token_id or not secret:
        return None
    return token_id, secret


def new_token(
    name: str,
    admin: bool,
    scaling_groups: Iterable[str],
    expires_in: float = 0.0,
    created_by: str = "",
    now: float | None = None,
    viewer: bool = False,
) -> tuple[str, TokenRecord]:
    """A fresh token and its record; InvalidArgument for a bad name or scope."""
    if not is_valid_id(name):
        raise InvalidArgument(f"token name {name[:64]!r} is not valid: {ID_SYNTAX}")
    groups = tuple(dict.fromkeys(scaling_groups))
    for group in groups:
        if not is_valid_id(group):
            raise InvalidArgument(f"scaling group {group[:64]!r} is not valid: {ID_SYNTAX}")
    if admin and groups:
        raise InvalidArgument("an admin token may use every scaling group; give no scaling groups")
    if admin and viewer:
        raise InvalidArgument("a token is either admin or viewer (read-only), not both")
    if not admin and not viewer and not groups:
        raise InvalidArgument(
            "a token needs a scope: --admin, --viewer, or one or more --scaling-group it may "
            "create in"
        )
    if not expires_in >= 0 or expires_in == float("inf"):
        raise InvalidArgument("expires_in must be a finite number of seconds, 0 for never")
    now = time.time() if now is None else now
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        name=name,
        secret_hash=_hash(secret),
        admin=admin,
        scaling_groups=groups,
        created_at=now,
        expires_at=now + expires_in if expires_in else 0.0,
        created_by=created_by,
        viewer=viewer,
    )
    return f"{PREFIX}_{token_id}_{secret}", record


def new_delegated_token(
    parent_kernel_id: str,
    scaling_group: str,
    limits: Budget,
    created_by: str,
    now: float | None = None,
) -> tuple[str, TokenRecord]:
    """A fresh token for the kernel parent_kernel_id (being created by created_by).

    Its name carries the kernel id and the token id, so the owner its children record
    names the kernel and is never shared with an earlier kernel of the same id.
    """
    now = time.time() if now is None else now
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = TokenRecord(
        token_id=token_id,
        name=f"kernel-{parent_kernel_id}.{token_id}",
        secret_hash=_hash(secret),
        admin=False,
        scaling_groups=(scaling_group,),
        created_at=now,
        created_by=created_by,
        parent_kernel_id=parent_kernel_id,
        limits=limits,
    )
    return f"{PREFIX}_{token_id}_{secret}", record


def record_for(token: str, name: str, admin: bool, now: float) -> TokenRecord:
    """The record of an existing token string (the bootstrap admin token read from a file)."""
    parts = split_token(token)
    if parts is None:
        raise InvalidArgument("not an agenthost token (aht_<id>_<secret>)")
    token_id, secret = parts
    return TokenRecord(
        token_id=token_id,
        name=name,
        secret_hash=_hash(secret),
        admin=admin,
        scaling_groups=(),
        created_at=now,
        created_by="bootstrap",
    )


class TokenTable:
    """Every token, by id; the one place that decides whether a bearer token is valid."""

    def __init__(self, records: Iterable[TokenRecord] = ()) -> None:
        self._by_id: dict[str, TokenRecord] = {}
        # Kernel id -> the delegated token given to it last (revoked ones too: a kernel
        # that ended is still charged what its descendants hold).
        self._by_parent: dict[str, TokenRecord] = {}
        for record in sorted(records, key=lambda r: r.created_at):
            self._put(record)

    def authenticate(self, token: str, now: float | None = None) -> TokenRecord:
        """The record of a valid token; Unauthenticated (saying why) for any other."""
        parts = split_token(token)
        if parts is None:
            raise Unauthenticated("the bearer token is malformed (expected aht_<id>_<secret>)")
        token_id, secret = parts
        record = self._by_id.get(token_id)
        if record is None or not hmac.compare_digest(record.secret_hash, _hash(secret)):
            raise Unauthenticated("the bearer token is not known to this manager")
        now = time.time() if now is None else now
        if record.revoked_at and record.parent_kernel_id:
            raise Unauthenticated(
                f"the delegated token of kernel {record.parent_kernel_id!r} no longer works: "
                "that kernel has ended (or the token was revoked)"
            )
        if record.revoked_at:
            raise Unauthenticated(f"token {record.name!r} was revoked")
        if record.expires_at and now >= record.expires_at:
            raise Unauthenticated(f"token {record.name!r} has expired")
        return record

    def add(self, record: TokenRecord, now: float | None = None) -> None:
        """Insert a new token; AlreadyExists when an active token has that name."""
        now = time.time() if now is None else now
        for other in self._by_id.values():
            if other.name == record.name and other.active(now):
                raise AlreadyExists(
                    f"a token named {record.name!r} exists already (id {other.token_id}); "
                    "revoke it first or choose another name"
                )
        self._put(record)

    def discard(self, token_id: str) -> None:
        """Forget a token that was never handed out (its kernel was not created)."""
        record = self._by_id.pop(token_id, None)
        if record is not None and self._by_parent.get(record.parent_kernel_id) is record:
            del self._by_parent[record.parent_kernel_id]

    def revoke(self, name_or_id: str, now: float | None = None) -> TokenRecord:
        """Revoke the active token with that name or id; return its new record."""
        now = time.time() if now is None else now
        record = self._by_id.get(name_or_id)
        if record is None or record.revoked_at:
            record = next(
                (r for r in self._by_id.values() if r.name == name_or_id and not r.revoked_at),
                None,
            )
        if record is None:
            raise NotFound(f"no token named or with id {name_or_id[:64]!r} that is not revoked")
        revoked = replace(record, revoked_at=now)
        self._put(revoked)
        return revoked

    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, if any."""
        return self._by_id.get(token_id)

    def delegation_of(self, kernel_id: str) -> TokenRecord | None:
        """The delegated token given to kernel_id last (possibly revoked), if any."""
        return self._by_parent.get(kernel_id)

    def delegations(self) -> list[TokenRecord]:
        """The latest delegated token of every kernel that was given one."""
        return list(self._by_parent.values())

    def _put(self, record: TokenRecord) -> None:
        self._by_id[record.token_id] = record
        if record.parent_kernel_id:
            known = self._by_parent.get(record.parent_kernel_id)
            if (
                known is None
                or known.token_id == record.token_id
                or (known.created_at <= record.created_at)
            ):
                self._by_parent[record.parent_kernel_id] = record

    def list(self, include_revoked: bool = False) -> list[TokenRecord]:
        """Tokens, oldest first."""
        records = sorted(self._by_id.values(), key=lambda r: r.created_at)
        return [r for r in records if include_revoked or not r.revoked_at]

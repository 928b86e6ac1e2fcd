"""Bearer tokens: only a hash is kept, and revocation and expiry act at once."""

from __future__ import annotations

import pytest

from common.errors import AlreadyExists, InvalidArgument, NotFound, Unauthenticated
from manager.delegation import Budget
from manager.tokens import TokenTable, new_delegated_token, new_token, record_for, split_token


class TestNewToken:
    def test_the_record_holds_no_secret(self) -> None:
        token, record = new_token("alice", admin=False, scaling_groups=["g1"])
        token_id, secret = split_token(token) or ("", "")
        assert record.token_id == token_id
        assert secret not in repr(record) and record.secret_hash != secret
        assert record.principal().scaling_groups == ("g1",)

    @pytest.mark.parametrize(
        ("name", "admin", "groups", "message"),
        [
            ("alice", False, [], "a token needs a scope"),
            ("alice", True, ["g1"], "an admin token may use every scaling group"),
            ("a b", True, [], "token name 'a b' is not valid"),
            ("alice", False, ["g 1"], "scaling group 'g 1' is not valid"),
        ],
        ids=["no-scope", "admin-with-groups", "bad-name", "bad-group"],
    )
    def test_bad_requests(self, name: str, admin: bool, groups: list[str], message: str) -> None:
        with pytest.raises(InvalidArgument, match=message):
            new_token(name, admin=admin, scaling_groups=groups)

    @pytest.mark.parametrize("expires_in", [float("nan"), float("inf"), -1.0])
    def test_non_finite_or_negative_expiry_is_refused(self, expires_in: float) -> None:
        with pytest.raises(InvalidArgument, match="expires_in"):
            new_token("a", admin=True, scaling_groups=[], expires_in=expires_in)


class TestTokenTable:
    def test_a_valid_token_authenticates(self) -> None:
        token, record = new_token("alice", admin=True, scaling_groups=[])
        table = TokenTable([record])
        assert table.authenticate(token) == record

    @pytest.mark.parametrize(
        ("mangle", "message"),
        [
            (lambda t: "nope", "malformed"),
            (lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), "not known"),
            (lambda t: "aht_000000000000_" + t.split("_", 2)[2], "not known"),
        ],
        ids=["malformed", "wrong-secret", "unknown-id"],
    )
    def test_invalid_tokens_are_unauthenticated(self, mangle, message: str) -> None:  # type: ignore[no-untyped-def]
        token, record = new_token("alice", admin=True, scaling_groups=[])
        with pytest.raises(Unauthenticated, match=message):
            TokenTable([record]).authenticate(mangle(token))

    def test_revocation_acts_on_the_next_call(self) -> None:
        token, record = new_token("alice", admin=True, scaling_groups=[])
        table = TokenTable([record])
        table.revoke("alice")
        with pytest.raises(Unauthenticated, match="'alice' was revoked"):
            table.authenticate(token)
        with pytest.raises(NotFound):
            table.revoke("alice")

    def test_expiry_acts_at_its_time(self) -> None:
        token, record = new_token("t", admin=True, scaling_groups=[], expires_in=10, now=1000.0)
        table = TokenTable([record])
        assert table.authenticate(token, now=1009.0) == record
        with pytest.raises(Unauthenticated, match="expired"):
            table.authenticate(token, now=1010.0)

    def test_names_are_unique_among_active_tokens(self) -> None:
        _, first = new_token("alice", admin=True, scaling_groups=[])
        _, second = new_token("alice", admin=True, scaling_groups=[])
        table = TokenTable([first])
        with pytest.raises(AlreadyExists, match="revoke it first"):
            table.add(second)
        table.revoke(first.token_id)
        table.add(second)
        assert [r.name for r in table.list()] == ["alice"]
        assert len(table.list(include_revoked=True)) == 2

    def test_a_bootstrap_token_string_becomes_an_admin_record(self) -> None:
        token, _ = new_token("x", admin=True, scaling_groups=[])
        record = record_for(token, "admin", admin=True, now=5.0)
        assert TokenTable([record]).authenticate(token).admin


class TestDelegatedTokens:
    def test_a_delegated_token_acts_as_its_kernel_in_its_scaling_group(self) -> None:
        limits = Budget.of(1, 0, 2)
        token, record = new_delegated_token("k1", "g1", limits, "token:alice", now=5.0)
        assert record.limits == limits and record.created_by == "token:alice"
        principal = TokenTable([record]).authenticate(token).principal()
        assert principal.delegated and principal.parent_kernel_id == "k1"
        assert principal.scaling_groups == ("g1",) and not principal.admin
        assert record.owner == f"token:kernel-k1.{record.token_id}"

    def test_once_revoked_it_says_its_kernel_has_ended(self) -> None:
        token, record = new_delegated_token("k1", "g1", Budget(), "token:alice")
        table = TokenTable([record])
        table.revoke(record.token_id)
        with pytest.raises(
            Unauthenticated,
            match=r"the delegated token of kernel 'k1' no longer works: that kernel has ended",
        ):
            table.authenticate(token)

    def test_a_kernels_latest_token_is_found_revoked_or_not(self) -> None:
        _, old = new_delegated_token("k1", "g1", Budget(), "a", now=1.0)
        _, new = new_delegated_token("k1", "g1", Budget(), "a", now=2.0)
        table = TokenTable([new, old])
        assert table.delegation_of("k1") == new
        table.revoke(old.token_id)  # an earlier kernel of that id: not the latest
        assert table.delegation_of("k1") == new
        revoked = table.revoke(new.token_id)
        assert table.delegation_of("k1") == revoked and table.delegations() == [revoked]
        assert table.delegation_of("k2") is None

    def test_a_token_never_handed_out_is_discarded_without_trace(self) -> None:
        token, record = new_delegated_token("k1", "g1", Budget(), "a")
        table = TokenTable()
        table.add(record)
        table.discard(record.token_id)
        assert table.delegation_of("k1") is None and table.list(include_revoked=True) == []
        with pytest.raises(Unauthenticated, match="not known"):
            table.authenticate(token)

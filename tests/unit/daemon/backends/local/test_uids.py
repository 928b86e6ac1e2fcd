"""daemon/backends/local/uids.py: the daemon's uid pool and the accounts a config names."""

from __future__ import annotations

import pwd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import ResourceExhausted
from daemon.backends.local.uids import UidPool, accounts_in, resolve_account

RANGE = (2_000_000, 2_000_009)


class TestUidPool:
    def test_goes_round_the_range_so_a_freed_uid_comes_back_last(self) -> None:
        pool = UidPool()
        first = pool.allocate(RANGE, "k1")
        assert pool.release(first, "k1")
        assert [pool.allocate(RANGE, f"k{i}") for i in range(2, 6)] == [
            2_000_001,
            2_000_002,
            2_000_003,
            2_000_004,
        ]

    def test_a_full_range_is_exhausted_naming_it_and_a_release_frees_one(self) -> None:
        pool = UidPool()
        held = [pool.allocate((5, 6), "a"), pool.allocate((5, 6), "b")]
        assert sorted(held) == [5, 6]
        with pytest.raises(ResourceExhausted) as info:
            pool.allocate((5, 6), "c")
        assert str(info.value) == (
            "every uid of uid_range 5-6 is held by a running kernel (2); "
            "destroy kernels or widen local.uid_range"
        )
        pool.release(held[0], "a")
        assert pool.allocate((5, 6), "c") == held[0]

    def test_only_the_owner_releases_so_a_stale_stop_frees_nothing(self) -> None:
        pool = UidPool()
        uid = pool.allocate(RANGE, ("pid", 1))
        assert not pool.release(uid, ("pid", 2))
        assert pool.held() == {uid: ("pid", 1)}
        assert pool.release(uid, ("pid", 1))
        assert not pool.release(uid, ("pid", 1))  # idempotent

    def test_bind_hands_a_uid_from_the_spawn_placeholder_to_the_kernel(self) -> None:
        pool = UidPool()
        placeholder = object()
        uid = pool.allocate(RANGE, placeholder)
        pool.bind(uid, placeholder, (42, 1.5))
        assert not pool.release(uid, placeholder)
        assert pool.release(uid, (42, 1.5))

    def test_a_preferred_free_uid_in_range_is_taken_back(self) -> None:
        pool = UidPool()
        assert pool.allocate(RANGE, "a", prefer=2_000_007) == 2_000_007
        # Held, or outside the range: the usual search decides.
        assert pool.allocate(RANGE, "b", prefer=2_000_007) != 2_000_007
        assert RANGE[0] <= pool.allocate(RANGE, "c", prefer=0) <= RANGE[1]

    def test_agents_with_overlapping_ranges_never_share_a_uid(self) -> None:
        pool = UidPool()
        a = {pool.allocate((10, 14), f"a{i}") for i in range(3)}
        b = {pool.allocate((12, 16), f"b{i}") for i in range(3)}
        assert a.isdisjoint(b)

    def test_adopted_uids_are_held_even_outside_every_range(self) -> None:
        pool = UidPool()
        pool.adopt(2_000_003, (7, 1.0))
        pool.adopt(99, (8, 1.0))
        assert 2_000_003 not in {pool.allocate(RANGE, i) for i in range(9)}
        with pytest.raises(ResourceExhausted):
            pool.allocate(RANGE, "full")
        assert pool.held()[99] == (8, 1.0)

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(
            st.tuples(st.booleans(), st.integers(min_value=0, max_value=7)),
            min_size=1,
            max_size=60,
        )
    )
    def test_never_hands_out_a_held_uid(self, steps: list[tuple[bool, int]]) -> None:
        pool = UidPool()
        owners: dict[int, int] = {}  # uid -> owner
        for n, (allocate, pick) in enumerate(steps):
            if allocate:
                try:
                    uid = pool.allocate((100, 107), n)
                except ResourceExhausted:
                    assert len(owners) == 8
                    continue
                assert uid not in owners and 100 <= uid <= 107
                owners[uid] = n
            elif owners:
                uid = sorted(owners)[pick % len(owners)]
                assert pool.release(uid, owners.pop(uid))
            assert pool.held() == owners


class TestAccounts:
    def test_a_user_name_or_uid_resolves_to_uid_and_gid(self) -> None:
        nobody = pwd.getpwnam("nobody")
        assert resolve_account("nobody") == (nobody.pw_uid, nobody.pw_gid)
        assert resolve_account(str(nobody.pw_uid)) == (nobody.pw_uid, nobody.pw_gid)
        assert resolve_account(3_000_000) == (3_000_000, 3_000_000)  # no passwd entry

    def test_an_unknown_name_is_refused_naming_it(self) -> None:
        with pytest.raises(ValueError) as info:
            resolve_account("no-such-user-here")
        assert str(info.value) == (
            "no user 'no-such-user-here' on this host; give a user name from /etc/passwd or a uid"
        )

    def test_accounts_in_a_range_are_listed(self) -> None:
        root = pwd.getpwnam("root")
        assert "user 'root' (0)" in accounts_in(root.pw_uid, root.pw_uid)
        assert accounts_in(2_000_000, 2_099_999) == []

"""daemon/slices.py: dividing the host among agents, and the rules across their slices.

Properties hold for any host and any claims that pass `check_claims`; the tables
pin the exact wording of each problem. Nothing here reads a file: the functions
are pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from daemon.resources import HostCapacity, ResourceSlice
from daemon.slices import (
    ALLOCATION_MODES,
    DIVIDERS,
    AgentClaim,
    AllocationMode,
    Division,
    SliceRequest,
    auto_split_slices,
    check_claims,
    divide_host,
    manual_slices,
    shared_slices,
    split_evenly,
)

GIB = 1 << 30
MIB = 1 << 20
FILE = "/etc/agenthost/daemon.toml"

HOST = HostCapacity(cores=(0, 1, 2, 3), memory=8 * GIB, devices={"cuda": ("0", "1")})
PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


def claim(agent_id: str, resources: SliceRequest | None = None) -> AgentClaim:
    return AgentClaim(agent_id, f'{FILE}: agents[{agent_id[1:]}] (id "{agent_id}")', resources)


def res(
    cpus: tuple[int, ...] | int | None = None,
    memory: int | None = None,
    **devices: tuple[str, ...],
) -> SliceRequest:
    return SliceRequest(cpus=cpus, memory=memory, devices=devices)


# ----------------------------------------------------------------- strategies


@st.composite
def hosts(draw: st.DrawFn) -> HostCapacity:
    """A host with 1-8 usable cores (not always 0..n-1), some memory and 0-4 devices."""
    cores = draw(st.lists(st.integers(0, 11), min_size=1, max_size=8, unique=True))
    memory = draw(st.integers(64, 64 * 1024)) * MIB
    cuda = draw(st.integers(0, 4))
    return HostCapacity(
        cores=tuple(sorted(cores)),
        memory=memory,
        devices={"cuda": tuple(str(i) for i in range(cuda))} if cuda else {},
    )


@st.composite
def requests(draw: st.DrawFn, host: HostCapacity) -> SliceRequest | None:
    """A `resources` entry an operator might write for host (often one that fits)."""
    if draw(st.booleans()):
        return None
    cpus = draw(
        st.one_of(
            st.none(),
            st.integers(1, len(host.cores)),
            st.lists(st.sampled_from(host.cores), min_size=1, unique=True).map(tuple),
        )
    )
    memory = draw(st.one_of(st.none(), st.integers(1, host.memory // MIB).map(lambda m: m * MIB)))
    cuda = host.devices.get("cuda", ())
    devices = (
        {"cuda": tuple(draw(st.lists(st.sampled_from(cuda), unique=True)))}
        if cuda and draw(st.booleans())
        else {}
    )
    return SliceRequest(cpus=cpus, memory=memory, devices=devices)


@st.composite
def checked(draw: st.DrawFn, mode: AllocationMode) -> tuple[HostCapacity, list[AgentClaim]]:
    """A host and 1-6 claims that pass check_claims in mode."""
    host = draw(hosts())
    n = draw(st.integers(1, 6))
    claims = [claim(f"a{i}", draw(requests(host))) for i in range(n)]
    assume(check_claims(claims, mode, host, FILE) == [])
    return host, claims


@st.composite
def manual_claims(draw: st.DrawFn) -> tuple[HostCapacity, list[AgentClaim]]:
    """A host and 1-6 claims as a careful operator writes them for manual mode: disjoint
    cores (listed or counted), disjoint devices, memory that fits."""
    host = draw(hosts())
    n = draw(st.integers(1, min(6, len(host.cores))))
    cores = list(draw(st.permutations(host.cores)))
    devices = list(draw(st.permutations(host.devices.get("cuda", ()))))
    claims = []
    for i in range(n):
        take = draw(st.integers(1, len(cores) - (n - 1 - i)))
        mine, cores = cores[:take], cores[take:]
        gpus = draw(st.integers(0, len(devices)))
        ours, devices = devices[:gpus], devices[gpus:]
        cpus: tuple[int, ...] | int = tuple(mine) if draw(st.booleans()) else take
        memory = draw(st.integers(1, host.memory // n // MIB)) * MIB
        claims.append(claim(f"a{i}", SliceRequest(cpus, memory, {"cuda": tuple(ours)})))
    return host, claims


def exclusive_cores(division: Division) -> list[int]:
    return [c for s in division.slices for c in s.cores]


def device_ids(slices: Sequence[ResourceSlice]) -> list[tuple[str, str]]:
    return [(kind, d) for s in slices for kind, ids in s.devices.items() for d in ids]


# ------------------------------------------------------------------- manual


class TestManual:
    @PROPERTY
    @given(manual_claims())
    def test_no_core_or_device_goes_to_two_agents_and_memory_fits(
        self, case: tuple[HostCapacity, list[AgentClaim]]
    ) -> None:
        host, claims = case
        assert check_claims(claims, "manual", host, FILE) == []
        division = manual_slices(claims, host)
        cores = exclusive_cores(division)
        assert len(cores) == len(set(cores))
        assert set(cores) <= set(host.cores)
        devices = device_ids(division.slices)
        assert len(devices) == len(set(devices))
        assert sum(s.memory for s in division.slices) <= host.memory
        assert division.notes == ()

    @PROPERTY
    @given(manual_claims())
    def test_every_agent_gets_what_it_wrote(
        self, case: tuple[HostCapacity, list[AgentClaim]]
    ) -> None:
        host, claims = case
        for c, s in zip(claims, manual_slices(claims, host).slices, strict=True):
            assert c.resources is not None
            assert s.memory == c.resources.memory
            assert dict(s.devices) == dict(c.resources.devices)
            if isinstance(c.resources.cpus, int):
                assert len(s.cores) == c.resources.cpus
            else:
                assert s.cores == c.resources.cpus

    @PROPERTY
    @given(hosts(), st.data())
    def test_a_core_listed_by_two_agents_is_refused_naming_the_first(
        self, host: HostCapacity, data: st.DataObject
    ) -> None:
        lists = [
            data.draw(st.lists(st.sampled_from(host.cores), min_size=1, unique=True))
            for _ in range(3)
        ]
        claims = [claim(f"a{i}", res(tuple(cores), MIB)) for i, cores in enumerate(lists)]
        owner: dict[int, str] = {}
        expected = []
        for c, cores in zip(claims, lists, strict=True):
            for core in cores:
                if core in owner:
                    expected.append(
                        f"{c.where}: resources.cpus: core {core} is already given to "
                        f'agent "{owner[core]}"'
                    )
                else:
                    owner[core] = c.agent_id
        assert check_claims(claims, "manual", host, FILE) == expected

    @PROPERTY
    @given(hosts(), st.lists(st.integers(1, 64 * 1024), min_size=1, max_size=6))
    def test_memory_adding_up_past_the_host_is_refused(
        self, host: HostCapacity, mebibytes: list[int]
    ) -> None:
        memories = [m * MIB for m in mebibytes if m * MIB <= host.memory]
        assume(memories)
        claims = [claim(f"a{i}", res((), m)) for i, m in enumerate(memories)]
        refused = [p for p in check_claims(claims, "manual", host, FILE) if "adds up" in p]
        assert bool(refused) == (sum(memories) > host.memory)

    def test_a_core_count_takes_the_lowest_cores_no_agent_lists(self) -> None:
        claims = [claim("a0", res(2, GIB)), claim("a1", res((0, 2), GIB)), claim("a2", res(1, GIB))]
        assert [s.cores for s in manual_slices(claims, HOST).slices] == [(1, 3), (0, 2), ()]

    def test_an_agent_gets_only_the_devices_it_names(self) -> None:
        claims = [claim("a0", res((0,), GIB, cuda=("1",))), claim("a1", res((1,), GIB))]
        assert [dict(s.devices) for s in manual_slices(claims, HOST).slices] == [
            {"cuda": ("1",)},
            {},
        ]

    def test_an_unchecked_claim_is_a_programming_error(self) -> None:
        with pytest.raises(ValueError) as info:
            manual_slices([claim("a0", res(memory=GIB))], HOST)
        assert str(info.value) == (
            f'{FILE}: agents[0] (id "a0"): manual_slices needs cpus and memory (check_claims)'
        )


# --------------------------------------------------------------- auto-split


class TestAutoSplit:
    @PROPERTY
    @given(checked("auto-split"))
    def test_never_more_than_the_host_and_devices_exclusive(
        self, case: tuple[HostCapacity, list[AgentClaim]]
    ) -> None:
        host, claims = case
        division = auto_split_slices(claims, host)
        assert sum(s.memory for s in division.slices) <= host.memory
        assert all(s.memory > 0 and s.cores for s in division.slices)
        assert all(set(s.cores) <= set(host.cores) for s in division.slices)
        devices = device_ids(division.slices)
        assert len(devices) == len(set(devices))
        if not division.notes:  # enough cores: none is given twice
            cores = exclusive_cores(division)
            assert len(cores) == len(set(cores))

    @PROPERTY
    @given(checked("auto-split"))
    def test_agents_that_leave_resources_out_get_shares_differing_by_at_most_one(
        self, case: tuple[HostCapacity, list[AgentClaim]]
    ) -> None:
        host, claims = case
        division = auto_split_slices(claims, host)
        auto = [s for c, s in zip(claims, division.slices, strict=True) if c.resources is None]
        assume(auto)
        core_counts = [len(s.cores) for s in auto]
        assert max(core_counts) - min(core_counts) <= 1
        assert len({s.memory for s in auto}) == 1 and auto[0].memory % MIB == 0
        device_counts = [len(s.devices.get("cuda", ())) for s in auto]
        assert max(device_counts) - min(device_counts) <= 1

    @PROPERTY
    @given(checked("auto-split"))
    def test_what_an_agent_writes_is_kept(
        self, case: tuple[HostCapacity, list[AgentClaim]]
    ) -> None:
        host, claims = case
        for c, s in zip(claims, auto_split_slices(claims, host).slices, strict=True):
            r = c.resources
            if r is None:
                continue
            if isinstance(r.cpus, tuple):
                assert s.cores == r.cpus
            if r.memory is not None:
                assert s.memory == r.memory
            if r.devices:
                assert dict(s.devices) == dict(r.devices)

    @PROPERTY
    @given(n_agents=st.integers(1, 8), host=hosts())
    def test_agents_without_resources_share_all_cores_or_round_robin_with_a_note(
        self, n_agents: int, host: HostCapacity
    ) -> None:
        claims = [claim(f"a{i}") for i in range(n_agents)]
        assume(check_claims(claims, "auto-split", host, FILE) == [])
        division = auto_split_slices(claims, host)
        if len(host.cores) >= n_agents:
            assert sorted(exclusive_cores(division)) == list(host.cores)
            assert division.notes == ()
        else:
            assert [s.cores for s in division.slices] == [
                (host.cores[i % len(host.cores)],) for i in range(n_agents)
            ]
            assert len(division.notes) == 1

    def test_every_core_claimed_leaves_the_others_round_robin_over_the_host(self) -> None:
        claims = [claim("a0", res((0, 1, 2, 3), GIB)), claim("a1"), claim("a2")]
        division = auto_split_slices(claims, HOST)
        assert [s.cores for s in division.slices] == [(0, 1, 2, 3), (0,), (1,)]
        assert division.notes == (
            "auto-split: every core is claimed by an agent's resources; a1, a2 run on cores "
            "0-3 round-robin, shared with the agents that claimed them",
        )


# ------------------------------------------------------------------- shared


class TestShared:
    @PROPERTY
    @given(hosts(), st.integers(1, 6))
    def test_agents_without_resources_each_get_the_whole_host(
        self, host: HostCapacity, n: int
    ) -> None:
        claims = [claim(f"a{i}") for i in range(n)]
        assert check_claims(claims, "shared", host, FILE) == []
        whole = ResourceSlice(cores=host.cores, memory=host.memory, devices=dict(host.devices))
        assert shared_slices(claims, host) == Division((whole,) * n)

    @PROPERTY
    @given(hosts(), st.data())
    def test_nothing_is_exclusive(self, host: HostCapacity, data: st.DataObject) -> None:
        claims = [claim(f"a{i}", data.draw(requests(host))) for i in range(3)]
        problems = check_claims(claims, "shared", host, FILE)
        assert not [p for p in problems if "already given" in p]
        assert not [p for p in problems if "adds up" in p]

    def test_what_an_agent_writes_narrows_its_view(self) -> None:
        claims = [claim("a0", res(2)), claim("a1", res((3,), GIB, cuda=("1",)))]
        assert shared_slices(claims, HOST).slices == (
            ResourceSlice(cores=(0, 1), memory=8 * GIB, devices={"cuda": ("0", "1")}),
            ResourceSlice(cores=(3,), memory=GIB, devices={"cuda": ("1",)}),
        )


# ------------------------------------------------------------- the problems


@dataclass(frozen=True)
class Problem:
    """check_claims(claims, mode, HOST) gives exactly these problems ({a0} is a0's where)."""

    name: str
    claims: tuple[AgentClaim, ...]
    problems: tuple[str, ...]
    mode: AllocationMode = "manual"


A0 = f'{FILE}: agents[0] (id "a0")'
A1 = f'{FILE}: agents[1] (id "a1")'

PROBLEMS = [
    Problem("fitting_claims", (claim("a0", res((0,), GIB)), claim("a1", res(2, GIB))), ()),
    Problem(
        "manual_without_resources",
        (claim("a0"),),
        (
            f'{A0}: resources: required when allocation_mode is "manual" '
            '(or set [daemon] allocation_mode = "auto-split")',
        ),
    ),
    Problem(
        "manual_without_cpus_and_memory",
        (claim("a0", res()),),
        (f'{A0}: resources: cpus and memory required when allocation_mode is "manual"',),
    ),
    Problem(
        "core_the_host_does_not_have",
        (claim("a0", res((1, 9), GIB)),),
        (f"{A0}: resources.cpus: cores [9] do not exist on this host (cores 0-3)",),
    ),
    Problem(
        "core_given_twice",
        (claim("a0", res((0,), GIB)), claim("a1", res((0, 1), GIB))),
        (f'{A1}: resources.cpus: core 0 is already given to agent "a0"',),
    ),
    Problem(
        "core_count_past_the_host",
        (claim("a0", res(5, GIB)),),
        (f"{A0}: resources.cpus: 5 cores requested, the host has 4",),
    ),
    Problem(
        "core_counts_and_lists_past_the_host",
        (claim("a0", res(3, GIB)), claim("a1", res((0, 1), GIB))),
        (f"{FILE}: resources.cpus: agents take 5 cores in all (a0 3, a1 2), the host has 4",),
    ),
    Problem(
        "device_the_host_does_not_have",
        (claim("a0", res((0,), GIB, npu=("0",))),),
        (f"{A0}: resources.devices.npu: device '0' does not exist on this host (npu: none)",),
    ),
    Problem(
        "device_given_twice",
        (claim("a0", res((0,), GIB, cuda=("1",))), claim("a1", res((1,), GIB, cuda=("1",)))),
        (f"{A1}: resources.devices.cuda: device '1' is already given to agent \"a0\"",),
    ),
    Problem(
        "one_agent_memory_past_the_host",
        (claim("a0", res((0,), 9 * GIB)),),
        (f"{A0}: resources.memory: 9GiB exceeds the host's 8GiB",),
    ),
    Problem(
        "memory_zero",
        (claim("a0", res((0,), 0)),),
        (f"{A0}: resources.memory: must be more than 0",),
    ),
    Problem(
        "memory_adding_up_past_the_host",
        (claim("a0", res((0,), 5 * GIB)), claim("a1", res((1,), 4 * GIB))),
        (
            f"{FILE}: resources.memory: agents' memory adds up to 9GiB (a0 5GiB, a1 4GiB), "
            "past the host's 8GiB",
        ),
    ),
    Problem(
        "auto_split_leaving_no_memory",
        (claim("a0", res(memory=8 * GIB)), claim("a1")),
        (
            f"{FILE}: resources.memory: explicit slices take 8GiB of the host's 8GiB, leaving "
            "less than 1MiB each for agents a1; lower the explicit memory or set theirs",
        ),
        "auto-split",
    ),
    Problem(
        "shared_allows_the_same_core_and_memory_twice",
        (claim("a0", res((0,), 8 * GIB)), claim("a1", res((0,), 8 * GIB))),
        (),
        "shared",
    ),
    Problem(
        "shared_still_refuses_what_the_host_lacks",
        (claim("a0", res((7,), 9 * GIB)),),
        (
            f"{A0}: resources.cpus: cores [7] do not exist on this host (cores 0-3)",
            f"{A0}: resources.memory: 9GiB exceeds the host's 8GiB",
        ),
        "shared",
    ),
    Problem(
        "problems_come_in_file_order_then_totals",
        (
            claim("a0", res((0, 9), 5 * GIB, cuda=("7",))),
            claim("a1", res((0,), 4 * GIB)),
        ),
        (
            f"{A0}: resources.cpus: cores [9] do not exist on this host (cores 0-3)",
            f"{A0}: resources.devices.cuda: device '7' does not exist on this host (cuda: 0, 1)",
            f'{A1}: resources.cpus: core 0 is already given to agent "a0"',
            f"{FILE}: resources.memory: agents' memory adds up to 9GiB (a0 5GiB, a1 4GiB), "
            "past the host's 8GiB",
        ),
    ),
]


class TestCheckClaims:
    @pytest.mark.parametrize("case", PROBLEMS, ids=[c.name for c in PROBLEMS])
    def test_gives_exactly_the_expected_problems(self, case: Problem) -> None:
        assert check_claims(case.claims, case.mode, HOST, FILE) == list(case.problems)

    def test_cases_are_distinct(self) -> None:
        assert len({repr((c.claims, c.mode)) for c in PROBLEMS}) == len(PROBLEMS)


# ----------------------------------------------------------- the dispatcher


class TestDivideHost:
    def test_each_mode_has_its_one_function(self) -> None:
        dividers = dict(DIVIDERS)
        assert dividers == {
            "manual": manual_slices,
            "auto-split": auto_split_slices,
            "shared": shared_slices,
        }
        assert tuple(DIVIDERS) == ALLOCATION_MODES

    @pytest.mark.parametrize("mode", ALLOCATION_MODES)
    def test_divides_by_the_modes_function(self, mode: AllocationMode) -> None:
        claims = [claim("a0", res((0,), GIB)), claim("a1", res(1, 2 * GIB))]
        assert divide_host(claims, mode, HOST) == DIVIDERS[mode](claims, HOST)


class TestSplitEvenly:
    @PROPERTY
    @given(st.lists(st.integers()), st.integers(1, 10))
    def test_parts_are_contiguous_and_differ_by_at_most_one(self, items: list[int], n: int) -> None:
        parts = split_evenly(items, n)
        assert len(parts) == n
        assert [x for part in parts for x in part] == items
        sizes = Counter(len(p) for p in parts)
        assert max(sizes) - min(sizes) <= 1
        assert [len(p) for p in parts] == sorted((len(p) for p in parts), reverse=True)

    def test_no_parts_for_no_takers(self) -> None:
        assert split_evenly([1, 2], 0) == []

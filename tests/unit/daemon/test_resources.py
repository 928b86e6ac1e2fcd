"""daemon/resources.py: the pure assignment, the allocator and its invariants."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import AgentHostError, FailedPrecondition, InvalidArgument, ResourceExhausted
from common.formatting import format_bytes
from common.ids import KernelId
from daemon.resources import (
    Allocation,
    HostCapacity,
    ResourceAllocator,
    ResourceRequest,
    ResourceSlice,
    assign,
    format_cores,
    format_devices,
    total,
)

GIB = 1 << 30
MIB = 1 << 20

SLICE = ResourceSlice(cores=(0, 1), memory=2 * GIB, devices={"cuda": ("0",)})
GPU_SLICE = ResourceSlice(cores=(2, 3, 4), memory=4 * GIB, devices={"cuda": ("1", "2")})


@dataclass(frozen=True)
class AssignCase:
    """assign(slice, held, request) gives allocation, or raises error with message."""

    name: str
    request: ResourceRequest
    held: tuple[Allocation, ...] = ()
    slice: ResourceSlice = SLICE
    allocation: Allocation | None = None
    error: type[AgentHostError] | None = None
    message: str = ""


ASSIGN = [
    AssignCase("empty_request_takes_nothing", ResourceRequest(), allocation=Allocation()),
    AssignCase(
        "cpu_count_takes_the_lowest_free_cores",
        ResourceRequest(cpu_count=2),
        slice=GPU_SLICE,
        held=(Allocation(cores=(2,)),),
        allocation=Allocation(cores=(3, 4)),
    ),
    AssignCase(
        "explicit_cores_are_taken_as_named",
        ResourceRequest(cores=(4, 2)),
        slice=GPU_SLICE,
        allocation=Allocation(cores=(2, 4)),
    ),
    AssignCase(
        "memory_and_quota_are_recorded",
        ResourceRequest(memory=GIB, cpu_quota=1.5),
        held=(Allocation(memory=GIB),),
        allocation=Allocation(memory=GIB, cpu_quota=1.5),
    ),
    AssignCase(
        "devices_take_the_first_free_ids",
        ResourceRequest(devices={"cuda": 1}),
        slice=GPU_SLICE,
        held=(Allocation(devices={"cuda": ("1",)}),),
        allocation=Allocation(devices={"cuda": ("2",)}),
    ),
    AssignCase(
        "zero_devices_of_a_kind_the_slice_lacks_is_nothing",
        ResourceRequest(devices={"tpu": 0}),
        allocation=Allocation(),
    ),
    # can never fit this slice
    AssignCase(
        "more_cores_than_the_slice",
        ResourceRequest(cpu_count=3),
        error=FailedPrecondition,
        message="3 cores requested but the agent's slice has 2 (cores 0-1)",
    ),
    AssignCase(
        "explicit_core_outside_the_slice",
        ResourceRequest(cores=(1, 5)),
        error=FailedPrecondition,
        message="cores [5] are not in the agent's slice (cores 0-1)",
    ),
    AssignCase(
        "more_memory_than_the_slice",
        ResourceRequest(memory=4 * GIB),
        error=FailedPrecondition,
        message="4GiB memory requested but the agent's slice has 2GiB",
    ),
    AssignCase(
        "more_devices_than_the_slice",
        ResourceRequest(devices={"cuda": 2}),
        error=FailedPrecondition,
        message="2 cuda devices requested but the agent's slice has 1",
    ),
    AssignCase(
        "device_kind_the_slice_lacks",
        ResourceRequest(devices={"tpu": 1}),
        error=FailedPrecondition,
        message="1 tpu devices requested but the agent's slice has 0",
    ),
    AssignCase(
        "quota_past_the_slices_cores",
        ResourceRequest(cpu_quota=3.0),
        error=FailedPrecondition,
        message="cpu_quota 3.0 exceeds the agent's 2 cores",
    ),
    AssignCase(
        "never_fits_wins_over_busy",
        ResourceRequest(cpu_count=1, memory=4 * GIB),
        held=(Allocation(cores=(0, 1), memory=2 * GIB, devices={"cuda": ("0",)}),),
        error=FailedPrecondition,
        message="4GiB memory requested but the agent's slice has 2GiB",
    ),
    # fits the slice, not what is free now
    AssignCase(
        "cores_busy",
        ResourceRequest(cpu_count=2),
        held=(Allocation(cores=(0,)),),
        error=ResourceExhausted,
        message="2 cores requested, 1 of the agent's 2 are free",
    ),
    AssignCase(
        "explicit_core_held",
        ResourceRequest(cores=(0, 1)),
        held=(Allocation(cores=(1,)),),
        error=ResourceExhausted,
        message="cores [1] are held by other kernels",
    ),
    AssignCase(
        "memory_busy",
        ResourceRequest(memory=GIB),
        held=(Allocation(memory=GIB + 512 * MIB),),
        error=ResourceExhausted,
        message="1GiB memory requested, 512MiB of 2GiB free",
    ),
    AssignCase(
        "devices_busy",
        ResourceRequest(devices={"cuda": 1}),
        held=(Allocation(devices={"cuda": ("0",)}),),
        error=ResourceExhausted,
        message="1 cuda devices requested, 0 of 1 free",
    ),
    # malformed whatever the slice
    AssignCase(
        "count_and_cores_together",
        ResourceRequest(cpu_count=1, cores=(0,)),
        error=InvalidArgument,
        message="resources: give cpu_count or cores, not both",
    ),
    AssignCase(
        "core_named_twice",
        ResourceRequest(cores=(0, 0)),
        error=InvalidArgument,
        message="resources: cores [0, 0] names a core twice",
    ),
    AssignCase(
        "negative_memory",
        ResourceRequest(memory=-1),
        error=InvalidArgument,
        message="resources: amounts must not be negative",
    ),
]


class TestAssign:
    @pytest.mark.parametrize("case", ASSIGN, ids=[c.name for c in ASSIGN])
    def test_assigns_or_refuses_with_the_expected_error(self, case: AssignCase) -> None:
        if case.error is None:
            assert assign(case.slice, case.held, case.request) == case.allocation
            return
        with pytest.raises(case.error) as info:
            assign(case.slice, case.held, case.request)
        assert type(info.value) is case.error
        assert str(info.value) == case.message


class TestResourceAllocator:
    @pytest.fixture
    def allocator(self) -> ResourceAllocator:
        return ResourceAllocator(GPU_SLICE)

    def test_allocations_are_recorded_per_kernel(self, allocator: ResourceAllocator) -> None:
        a = allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=1, memory=GIB))
        b = allocator.allocate(KernelId("k2"), ResourceRequest(cpu_count=1, devices={"cuda": 1}))
        assert allocator.held() == {"k1": a, "k2": b}
        assert allocator.occupied() == Allocation(
            cores=(2, 3), memory=GIB, devices={"cuda": ("1",)}
        )

    def test_a_kernel_cannot_allocate_twice(self, allocator: ResourceAllocator) -> None:
        allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=1))
        with pytest.raises(InvalidArgument) as info:
            allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=1))
        assert str(info.value) == "kernel 'k1' already holds resources"
        assert allocator.occupied().cores == (2,)

    def test_a_refused_request_takes_nothing(self, allocator: ResourceAllocator) -> None:
        allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=3))
        with pytest.raises(ResourceExhausted):
            allocator.allocate(KernelId("k2"), ResourceRequest(cpu_count=1, memory=GIB))
        assert list(allocator.held()) == ["k1"]
        assert allocator.occupied().memory == 0

    def test_release_returns_everything_and_twice_is_harmless(
        self, allocator: ResourceAllocator
    ) -> None:
        allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=3, memory=4 * GIB))
        allocator.release(KernelId("k1"))
        allocator.release(KernelId("k1"))
        assert allocator.occupied() == Allocation()
        allocator.allocate(KernelId("k2"), ResourceRequest(cpu_count=3, memory=4 * GIB))

    def test_restore_counts_as_held(self, allocator: ResourceAllocator) -> None:
        allocator.restore(KernelId("old"), Allocation(cores=(3,), memory=GIB))
        got = allocator.allocate(KernelId("new"), ResourceRequest(cpu_count=2))
        assert got.cores == (2, 4)

    def test_held_is_a_copy(self, allocator: ResourceAllocator) -> None:
        allocator.allocate(KernelId("k1"), ResourceRequest(cpu_count=1))
        allocator.held().clear()
        assert list(allocator.held()) == ["k1"]


# ------------------------------------------------------------ property tests

PROP_SLICE = ResourceSlice(cores=(0, 1, 2), memory=4 * GIB, devices={"cuda": ("0", "1")})

requests = st.one_of(
    st.builds(
        ResourceRequest,
        cpu_count=st.integers(0, 4),
        memory=st.integers(0, 5).map(lambda n: n * GIB),
        devices=st.fixed_dictionaries({"cuda": st.integers(0, 3)}),
    ),
    st.builds(
        ResourceRequest,
        cores=st.sets(st.integers(0, 3), min_size=1, max_size=3).map(lambda s: tuple(sorted(s))),
        memory=st.integers(0, 3 * GIB),
    ),
)
# (True, request) allocates for a new kernel; (False, n) releases the n-th held kernel.
operations = st.lists(
    st.one_of(st.tuples(st.just(True), requests), st.tuples(st.just(False), st.integers(0, 9))),
    max_size=40,
)


def assert_not_over_committed(allocator: ResourceAllocator) -> None:
    held = list(allocator.held().values())
    cores = [c for a in held for c in a.cores]
    assert len(cores) == len(set(cores)), "a core is held twice"
    assert set(cores) <= set(PROP_SLICE.cores)
    assert sum(a.memory for a in held) <= PROP_SLICE.memory
    devices = [d for a in held for d in a.devices.get("cuda", ())]
    assert len(devices) == len(set(devices)), "a device is held twice"
    assert set(devices) <= set(PROP_SLICE.devices["cuda"])


def fits_what_is_free(allocator: ResourceAllocator, request: ResourceRequest) -> bool:
    used = allocator.occupied()
    free_cores = set(PROP_SLICE.cores) - set(used.cores)
    if request.cores and not set(request.cores) <= free_cores:
        return False
    if request.cpu_count > len(free_cores):
        return False
    if request.memory > PROP_SLICE.memory - used.memory:
        return False
    free_devices = len(PROP_SLICE.devices["cuda"]) - len(used.devices.get("cuda", ()))
    return request.devices.get("cuda", 0) <= free_devices


class TestAllocatorProperties:
    @settings(max_examples=300, deadline=None)
    @given(operations)
    def test_never_over_commits_and_release_all_returns_to_zero(
        self, ops: list[tuple[bool, object]]
    ) -> None:
        allocator = ResourceAllocator(PROP_SLICE)
        for i, (is_allocate, arg) in enumerate(ops):
            if is_allocate:
                assert isinstance(arg, ResourceRequest)
                before = allocator.held()
                fits = fits_what_is_free(allocator, arg)
                try:
                    got = allocator.allocate(KernelId(f"k{i}"), arg)
                except (ResourceExhausted, FailedPrecondition):
                    assert not fits, f"{arg} fits what is free but was refused"
                    assert allocator.held() == before, "a refused request took something"
                else:
                    assert fits
                    assert len(got.cores) == (len(arg.cores) or arg.cpu_count)
                    assert got.memory == arg.memory
                    assert len(got.devices.get("cuda", ())) == arg.devices.get("cuda", 0)
            else:
                assert isinstance(arg, int)
                kernels = sorted(allocator.held())
                if kernels:
                    allocator.release(kernels[arg % len(kernels)])
            assert_not_over_committed(allocator)
        for kernel_id in list(allocator.held()):
            allocator.release(kernel_id)
        assert allocator.occupied() == Allocation()
        assert allocator.held() == {}

    @settings(max_examples=200, deadline=None)
    @given(held=st.lists(requests, max_size=5), request=requests)
    def test_never_fits_is_failed_precondition_whatever_is_held(
        self, held: list[ResourceRequest], request: ResourceRequest
    ) -> None:
        allocator = ResourceAllocator(PROP_SLICE)
        for i, r in enumerate(held):
            with contextlib.suppress(ResourceExhausted, FailedPrecondition):
                allocator.allocate(KernelId(f"h{i}"), r)
        empty = ResourceAllocator(PROP_SLICE)
        try:
            empty.allocate(KernelId("probe"), request)
        except FailedPrecondition:
            with pytest.raises(FailedPrecondition):
                allocator.allocate(KernelId("probe"), request)


# ------------------------------------------------------------------ the rest


@dataclass(frozen=True)
class FormatCase:
    name: str
    value: object
    text: str
    kind: str = "bytes"


FORMATS = [
    FormatCase("gib", 2 * GIB, "2GiB"),
    FormatCase("mib", 512 * MIB, "512MiB"),
    FormatCase("tib", 1 << 40, "1TiB"),
    FormatCase("kib", 4096, "4KiB"),
    FormatCase("fractional_gib", GIB + GIB // 2 + 1, "1.5GiB"),
    FormatCase("bytes", 100, "100B"),
    FormatCase("core_runs", (5, 0, 1, 2), "0-2,5", "cores"),
    FormatCase("no_cores", (), "-", "cores"),
    FormatCase("devices", {"cuda": ("0", "1")}, "cuda:0,1", "devices"),
    FormatCase("no_devices", {"cuda": ()}, "-", "devices"),
]


class TestFormatting:
    @pytest.mark.parametrize("case", FORMATS, ids=[c.name for c in FORMATS])
    def test_formats_for_people(self, case: FormatCase) -> None:
        render: dict[str, Callable[[Any], str]] = {
            "bytes": format_bytes,
            "cores": format_cores,
            "devices": format_devices,
        }
        assert render[case.kind](case.value) == case.text


class TestTotalAndHost:
    def test_total_sums_allocations(self) -> None:
        assert total(
            [
                Allocation(cores=(1,), memory=GIB, devices={"cuda": ("1",)}),
                Allocation(cores=(0,), memory=GIB, devices={"cuda": ("0",)}),
            ]
        ) == Allocation(cores=(0, 1), memory=2 * GIB, devices={"cuda": ("0", "1")})

    def test_host_detection_reports_usable_cores_and_memory(self) -> None:
        host = HostCapacity.detect()
        assert host.cores and host.memory > 0
        assert all(isinstance(ids, tuple) for ids in host.devices.values())

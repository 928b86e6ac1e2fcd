"""The arithmetic of delegations: limits resolved from a request, what a tree of
kernels is charged, and refusals that name each limit passed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manager.delegation import (
    ZERO,
    Budget,
    delegation_env,
    owned_by,
    refusal,
    resolve_limits,
    used,
)
from manager.kernels import KernelRecord
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb

MiB = 1 << 20
RUNNING, TERMINATED = pb.KERNEL_STATE_RUNNING, pb.KERNEL_STATE_TERMINATED


def spec(cores: int = 0, memory: int = 0, **devices: int) -> pb.KernelSpec:
    return pb.KernelSpec(
        resources=pb.ResourceRequest(cpu_count=cores, memory_bytes=memory, devices=devices)
    )


def record(
    kernel_id: str, owner: str, cores: int = 0, memory: int = 0, state: int = RUNNING
) -> KernelRecord:
    kernel = pb.Kernel(kernel_id=kernel_id, state=state, spec=spec(cores, memory))  # type: ignore[arg-type]
    return KernelRecord(kernel, "127.0.0.1:1", owner)


@dataclass(frozen=True)
class FakeGrant:
    limits: Budget | None
    owner: str
    revoked_at: float = 0.0


class TestBudget:
    def test_sums_every_dimension_and_devices_by_kind(self) -> None:
        a = Budget.of(1, 10, 1, {"cuda": 1})
        b = Budget.of(2, 5, 1, {"cuda": 2, "tpu": 1})
        assert a + b == Budget.of(3, 15, 2, {"cuda": 3, "tpu": 1})
        assert a + ZERO == a

    def test_a_spec_is_one_kernel_of_its_cores_memory_and_devices(self) -> None:
        assert Budget.of_spec(spec(2, 64 * MiB, cuda=1, tpu=0)) == Budget.of(
            2, 64 * MiB, 1, {"cuda": 1}
        )
        pinned = pb.KernelSpec(resources=pb.ResourceRequest(cores=[0, 3]))
        assert Budget.of_spec(pinned).cores == 2

    @given(
        st.integers(0, 4096),
        st.integers(0, 1 << 50),
        st.integers(0, 10_000),
        st.dictionaries(st.sampled_from(["cuda", "tpu"]), st.integers(0, 64)),
    )
    def test_stored_form_round_trips(
        self, cores: int, memory: int, kernels: int, devices: dict[str, int]
    ) -> None:
        budget = Budget.of(cores, memory, kernels, devices)
        assert Budget.from_json(budget.to_json()) == budget


@dataclass(frozen=True)
class LimitsCase:
    asked: mpb.DelegateLimits
    expected: Budget


class TestResolveLimits:
    @pytest.mark.parametrize(
        "case",
        [
            LimitsCase(mpb.DelegateLimits(), Budget.of(2, 512 * MiB, 1, {"cuda": 1})),
            LimitsCase(
                mpb.DelegateLimits(cores=0, memory_bytes=0, kernels=5),
                Budget.of(0, 0, 5, {"cuda": 1}),
            ),
            LimitsCase(
                mpb.DelegateLimits(cores=8, memory_bytes=4096 * MiB, kernels=3),
                Budget.of(8, 4096 * MiB, 3, {"cuda": 1}),
            ),
        ],
        ids=["unset-is-its-own-request-and-one-kernel", "zero-is-zero", "given"],
    )
    def test_limits(self, case: LimitsCase) -> None:
        assert resolve_limits(spec(2, 512 * MiB, cuda=1), case.asked) == case.expected


class TestCharges:
    """A kernel created by owner P is charged to P: its request while it runs, plus
    its own delegation's limits while that is active, else what is below it."""

    def test_running_children_are_charged_their_requests(self) -> None:
        records = [record("c1", "P", 1, 64 * MiB), record("c2", "P", 0, 64 * MiB)]
        assert used("P", owned_by(records), lambda r: None) == Budget.of(1, 128 * MiB, 2)

    def test_ended_children_and_other_owners_cost_nothing(self) -> None:
        records = [record("c1", "P", 1, state=TERMINATED), record("x", "Q", 4)]
        assert used("P", owned_by(records), lambda r: None) == ZERO

    def test_a_delegating_child_is_charged_the_whole_of_what_it_passes_on(self) -> None:
        records = [record("c1", "P", 1, 64 * MiB), record("g1", "C1", 1, 32 * MiB)]
        grants = {"c1": FakeGrant(Budget.of(2, 128 * MiB, 3), "C1")}
        charged = used("P", owned_by(records), lambda r: grants.get(r.kernel_id))
        # Its own request plus all of its limits, however little of them it uses.
        assert charged == Budget.of(3, 192 * MiB, 4)

    def test_an_ended_delegating_child_is_charged_what_its_tree_still_holds(self) -> None:
        records = [
            record("c1", "P", 1, 64 * MiB, state=TERMINATED),
            record("g1", "C1", 1, 32 * MiB),  # still being ended
            record("g2", "C1", 1, 32 * MiB, state=TERMINATED),
        ]
        grants = {"c1": FakeGrant(Budget.of(2, 128 * MiB, 3), "C1", revoked_at=5.0)}
        charged = used("P", owned_by(records), lambda r: grants.get(r.kernel_id))
        assert charged == Budget.of(1, 32 * MiB, 1)

    def test_a_running_child_whose_token_was_revoked_is_charged_what_it_uses(self) -> None:
        records = [record("c1", "P", 1), record("g1", "C1", 1)]
        grants = {"c1": FakeGrant(Budget.of(4, 0, 4), "C1", revoked_at=5.0)}
        charged = used("P", owned_by(records), lambda r: grants.get(r.kernel_id))
        assert charged == Budget.of(2, 0, 2)


@dataclass(frozen=True)
class RefusalCase:
    limits: Budget
    in_use: Budget
    adding: Budget
    message: str | None


class TestRefusal:
    @pytest.mark.parametrize(
        "case",
        [
            RefusalCase(
                Budget.of(2, 256 * MiB, 2),
                Budget.of(1, 64 * MiB, 1),
                Budget.of(1, 192 * MiB, 1),
                None,
            ),
            RefusalCase(
                Budget.of(0, 256 * MiB, 2),
                Budget.of(0, 128 * MiB, 2),
                Budget.of(0, 64 * MiB, 1),
                "kernels: limit 2 (--delegate-kernels), 2 in use, this create adds 1",
            ),
            RefusalCase(
                Budget.of(1, 0, 5),
                Budget.of(1, 0, 1),
                Budget.of(1, 0, 1),
                "cores: limit 1 (--delegate-cores), 1 in use, this create adds 1",
            ),
            RefusalCase(
                Budget.of(0, 256 * MiB, 5),
                Budget.of(0, 128 * MiB, 1),
                Budget.of(0, 200 * MiB, 1),
                "memory: limit 256MiB (--delegate-memory), 128MiB in use, this create adds 200MiB",
            ),
            RefusalCase(
                Budget.of(0, 0, 5, {"cuda": 1}),
                Budget.of(0, 0, 1, {"cuda": 1}),
                Budget.of(0, 0, 1, {"cuda": 1}),
                "cuda devices: limit 1, 1 in use, this create adds 1",
            ),
            RefusalCase(
                Budget.of(0, 0, 1),
                ZERO,
                Budget.of(1, 0, 2),
                "kernels: limit 1 (--delegate-kernels), 0 in use, this create adds 2; "
                "cores: limit 0 (--delegate-cores), 0 in use, this create adds 1",
            ),
        ],
        ids=["fits-exactly", "kernels", "cores", "memory", "devices", "every-limit-named"],
    )
    def test_refusal_names_each_limit_passed(self, case: RefusalCase) -> None:
        assert refusal(case.limits, case.in_use, case.adding) == case.message

    def test_passing_on_more_than_is_left_is_refused(self) -> None:
        limits = Budget.of(0, 0, 3)
        # A child delegating 3 kernels costs 1 + 3: more than a 3-kernel delegation has.
        assert refusal(limits, ZERO, Budget.of(0, 0, 1) + Budget.of(0, 0, 3)) is not None
        assert refusal(limits, ZERO, Budget.of(0, 0, 1) + Budget.of(0, 0, 2)) is None

    @given(
        st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=12),
        st.integers(0, 8),
        st.integers(0, 8),
    )
    def test_what_is_admitted_one_by_one_never_adds_up_past_the_limits(
        self, asks: list[tuple[int, int]], core_limit: int, kernel_limit: int
    ) -> None:
        limits = Budget.of(core_limit, 0, kernel_limit)
        in_use = ZERO
        for cores, passed_on in asks:
            adding = Budget.of(cores, 0, 1) + Budget.of(0, 0, passed_on)
            if refusal(limits, in_use, adding) is None:
                in_use += adding
        assert in_use.cores <= limits.cores and in_use.kernels <= limits.kernels


class TestEnv:
    def test_a_tls_manager_gives_its_ca_a_plaintext_one_says_insecure(self) -> None:
        pem = b"-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
        assert delegation_env("aht_x_y", "10.0.0.1:6000", pem) == {
            "AGENTHOST_TOKEN": "aht_x_y",
            "AGENTHOST_MANAGER": "10.0.0.1:6000",
            "AGENTHOST_CA": pem.decode(),
        }
        assert delegation_env("aht_x_y", "127.0.0.1:6000", None) == {
            "AGENTHOST_TOKEN": "aht_x_y",
            "AGENTHOST_MANAGER": "127.0.0.1:6000",
            "AGENTHOST_INSECURE": "1",
        }

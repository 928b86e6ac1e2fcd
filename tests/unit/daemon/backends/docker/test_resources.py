"""A kernel's allocation -> the engine's HostConfig resource fields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from daemon.backends.docker.resources import cpuset, host_resources

MIB = 1 << 20


@dataclass(frozen=True)
class Case:
    name: str
    cores: tuple[int, ...] = ()
    memory: int = 0
    cpu_quota: float = 0.0
    devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    expected: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("nothing", expected={}),
    Case("cores", cores=(3, 0, 1), expected={"CpusetCpus": "0,1,3"}),
    Case(
        "memory without swap",
        memory=256 * MIB,
        expected={"Memory": 256 * MIB, "MemorySwap": 256 * MIB},
    ),
    Case("fractional cpu", cpu_quota=0.5, expected={"NanoCpus": 500_000_000}),
    Case(
        "cuda devices",
        devices={"cuda": ("0", "2")},
        expected={
            "DeviceRequests": [
                {"Driver": "nvidia", "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]]}
            ]
        },
    ),
    Case("an empty device kind", devices={"cuda": ()}, expected={}),
]


class TestHostResources:
    @pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
    def test_mapping(self, case: Case) -> None:
        assert (
            host_resources(case.cores, case.memory, case.cpu_quota, case.devices) == case.expected
        )

    def test_memory_below_the_engines_minimum_is_refused(self) -> None:
        with pytest.raises(InvalidArgument) as err:
            host_resources((), 4 * MIB, 0, {})
        assert str(err.value) == "memory: 4MiB is below the docker engine's minimum of 6MiB"

    def test_an_unknown_device_kind_is_refused(self) -> None:
        with pytest.raises(FailedPrecondition) as err:
            host_resources((), 0, 0, {"tpu": ("0",)})
        assert str(err.value) == (
            "devices: 'tpu' devices cannot be given to a docker container; supported: cuda"
        )

    def test_cpuset_is_sorted(self) -> None:
        assert cpuset([5, 1]) == "1,5"

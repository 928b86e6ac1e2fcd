"""A kernel's share of its agent's slice, as the engine's `HostConfig` resource fields.

Pure: cores become `CpusetCpus`, memory `Memory` (with `MemorySwap` equal, so no
swap beyond the limit), a fractional CPU `NanoCpus`, CUDA devices a
`DeviceRequests` entry for the nvidia runtime. Knows nothing of how the agent
chose them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import FailedPrecondition, InvalidArgument
from common.formatting import format_bytes

MIN_MEMORY = 6 << 20  # the engine refuses a memory limit below 6 MiB
DEVICE_KINDS = ("cuda",)


def cpuset(cores: Sequence[int]) -> str:
    """(0, 2, 3) -> '0,2,3', the engine's `CpusetCpus`."""
    return ",".join(str(c) for c in sorted(cores))


def host_resources(
    cores: Sequence[int],
    memory: int,
    cpu_quota: float,
    devices: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """The `HostConfig` fields that enforce the kernel's allocation."""
    fields: dict[str, Any] = {}
    if cores:
        fields["CpusetCpus"] = cpuset(cores)
    if memory:
        if memory < MIN_MEMORY:
            raise InvalidArgument(
                f"memory: {format_bytes(memory)} is below the docker engine's minimum "
                f"of {format_bytes(MIN_MEMORY)}"
            )
        fields["Memory"] = memory
        fields["MemorySwap"] = memory
    if cpu_quota:
        fields["NanoCpus"] = round(cpu_quota * 1_000_000_000)
    requests = []
    for kind, ids in sorted(devices.items()):
        if not ids:
            continue
        if kind not in DEVICE_KINDS:
            raise FailedPrecondition(
                f"devices: {kind!r} devices cannot be given to a docker container; "
                f"supported: {', '.join(DEVICE_KINDS)}"
            )
        requests.append({"Driver": "nvidia", "DeviceIDs": list(ids), "Capabilities": [["gpu"]]})
    if requests:
        fields["DeviceRequests"] = requests
    return fields

"""A kernel's share of its agent's slice, as the pod's resource requests and limits.

Pure: the kernel's cores (its exclusive cores, else the agent's slice) or its
fractional `cpu_quota` become `cpu`, its memory (else the slice's) `memory`, its
CUDA devices a count of `nvidia.com/gpu`. Requests equal limits, so the
scheduler and the kubelet account exactly what the agent allocated (and a pod
with whole cores is in the Guaranteed QoS class, which the kubelet's static CPU
manager pins to cores of its own). Knows nothing of how the agent chose them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from common.errors import FailedPrecondition

# The extended resource a device plugin advertises for each device kind.
DEVICE_RESOURCES = {"cuda": "nvidia.com/gpu"}
_BINARY = (("Gi", 30), ("Mi", 20), ("Ki", 10))


def cpu_quantity(cores: Sequence[int], cpu_quota: float) -> str | None:
    """`cpu`: the fractional quota in millicores when given, else the number of cores."""
    if cpu_quota > 0:
        millis = math.ceil(cpu_quota * 1000)
        return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"
    return str(len(cores)) if cores else None


def memory_quantity(memory: int) -> str | None:
    """`memory` in the largest binary unit that divides it exactly (bytes otherwise)."""
    if memory <= 0:
        return None
    for suffix, shift in _BINARY:
        if memory % (1 << shift) == 0:
            return f"{memory >> shift}{suffix}"
    return str(memory)


def pod_resources(
    cores: Sequence[int],
    memory: int,
    cpu_quota: float,
    devices: Mapping[str, Sequence[str]],
) -> dict[str, str]:
    """The amounts that are both the requests and the limits of the kernel's container."""
    amounts: dict[str, str] = {}
    cpu = cpu_quantity(cores, cpu_quota)
    if cpu is not None:
        amounts["cpu"] = cpu
    mem = memory_quantity(memory)
    if mem is not None:
        amounts["memory"] = mem
    for kind, ids in sorted(devices.items()):
        if not ids:
            continue
        resource = DEVICE_RESOURCES.get(kind)
        if resource is None:
            raise FailedPrecondition(
                f"devices: {kind!r} devices cannot be given to a pod; supported: "
                f"{', '.join(DEVICE_RESOURCES)}"
            )
        amounts[resource] = str(len(ids))
    return amounts

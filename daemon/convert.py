"""Conversions between the protocol messages and the daemon's domain values.

The only place that knows both sides; handlers call these and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from daemon.agent import AgentStatus
from daemon.backends.base import ExecEvent, ExecExit
from daemon.ids import KernelId
from daemon.kernels import Kernel, KernelSpec, KernelState, ServicePort
from daemon.resources import Allocation, ResourceRequest, ResourceSlice
from protos import agent_pb2 as pb

_STATES = {
    KernelState.PENDING: pb.KERNEL_STATE_PENDING,
    KernelState.RUNNING: pb.KERNEL_STATE_RUNNING,
    KernelState.TERMINATED: pb.KERNEL_STATE_TERMINATED,
}


def resources_to_proto(
    cores: tuple[int, ...], memory: int, devices: Mapping[str, tuple[str, ...]], ports: int
) -> pb.Resources:
    """A Resources message."""
    return pb.Resources(
        cores=list(cores),
        memory_bytes=memory,
        devices={kind: pb.DeviceIds(ids=list(ids)) for kind, ids in devices.items()},
        ports=ports,
    )


def agent_to_proto(status: AgentStatus) -> pb.AgentInfo:
    """AgentInfo for ListAgents, UpdateScalingGroup and the manager."""
    cap: ResourceSlice = status.capacity
    occ: Allocation = status.occupied
    return pb.AgentInfo(
        agent_id=status.agent_id,
        backend=status.backend,
        scaling_group=status.scaling_group,
        port_range=pb.PortRange(start=status.port_range[0], end=status.port_range[1]),
        capacity=resources_to_proto(cap.cores, cap.memory, cap.devices, status.ports_total),
        occupied=resources_to_proto(occ.cores, occ.memory, occ.devices, status.ports_used),
        kernel_count=status.kernel_count,
        healthy=status.healthy,
        status_message=status.status_message,
    )


def spec_from_proto(msg: pb.KernelSpec) -> KernelSpec:
    """The domain spec of a KernelSpec message (kernel_id may still be empty)."""
    r = msg.resources
    return KernelSpec(
        kernel_id=KernelId(msg.kernel_id),
        image=msg.image,
        command=tuple(msg.command),
        env=dict(msg.env),
        resources=ResourceRequest(
            cpu_count=r.cpu_count,
            cores=tuple(r.cores),
            memory=r.memory_bytes,
            devices=dict(r.devices),
            cpu_quota=r.cpu_quota,
        ),
        ports=tuple(ServicePort(name=p.name, container_port=p.container_port) for p in msg.ports),
        labels=dict(msg.labels),
        networks=tuple(msg.networks),
    )


def spec_to_proto(spec: KernelSpec) -> pb.KernelSpec:
    """The KernelSpec message of a domain spec."""
    r = spec.resources
    return pb.KernelSpec(
        kernel_id=spec.kernel_id,
        image=spec.image,
        command=list(spec.command),
        env=spec.env,
        resources=pb.ResourceRequest(
            cpu_count=r.cpu_count,
            cores=list(r.cores),
            memory_bytes=r.memory,
            devices=dict(r.devices),
            cpu_quota=r.cpu_quota,
        ),
        ports=[pb.ServicePort(name=p.name, container_port=p.container_port) for p in spec.ports],
        labels=spec.labels,
        networks=list(spec.networks),
    )


def kernel_to_proto(kernel: Kernel) -> pb.Kernel:
    """The Kernel message of a kernel record."""
    a = kernel.allocation
    msg = pb.Kernel(
        kernel_id=kernel.kernel_id,
        agent_id=kernel.agent_id,
        backend=kernel.backend,
        state=_STATES[kernel.state],
        spec=spec_to_proto(kernel.spec),
        allocated=resources_to_proto(a.cores, a.memory, a.devices, len(kernel.ports)),
        ports=kernel.ports,
        status_message=kernel.status_message,
        memory_limit=kernel.memory_limit,
        created_at=kernel.created_at,
        finished_at=kernel.finished_at,
        backend_ref=kernel.backend_ref,
    )
    if kernel.exit_code is not None:
        msg.exit_code = kernel.exit_code
    return msg


def exec_event_to_proto(event: ExecEvent) -> pb.ExecuteResponse:
    """One ExecuteResponse per output chunk or for the exit."""
    if isinstance(event, ExecExit):
        return pb.ExecuteResponse(
            exit=pb.ExecuteExit(exit_code=event.exit_code, timed_out=event.timed_out)
        )
    if event.stream == "stdout":
        return pb.ExecuteResponse(stdout=event.data)
    return pb.ExecuteResponse(stderr=event.data)

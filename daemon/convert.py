"""Conversions between the protocol messages and the daemon's domain values.

The only place that knows both sides; handlers call these and nothing else.

Outgoing messages are filled field by field in place (sub-messages included)
rather than built from constructor keywords and nested messages: with upb,
keyword construction, empty-map keywords and sub-message copies cost several
times more, and `kernel_to_proto` is on the path of every GetKernel and
ListKernels call (see benchmarks/bench_daemon.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from common.ids import KernelId
from daemon.agent import AgentStatus
from daemon.backends.base import ExecEvent, ExecExit
from daemon.kernels import Kernel, KernelSpec, KernelState, ServicePort
from daemon.resources import Allocation, ResourceRequest, ResourceSlice
from protos import agent_pb2 as pb

KERNEL_STATES = {
    KernelState.PENDING: pb.KERNEL_STATE_PENDING,
    KernelState.RUNNING: pb.KERNEL_STATE_RUNNING,
    KernelState.TERMINATED: pb.KERNEL_STATE_TERMINATED,
}


_STATES_OF: dict[int, KernelState] = {value: state for state, value in KERNEL_STATES.items()}


def states_from_proto(values: Iterable[int]) -> set[KernelState] | None:
    """The kernel states a listing is filtered to; None: no filter. (UNKNOWN, a state
    only the manager gives, matches no kernel of a daemon.)"""
    wanted = list(values)
    return {_STATES_OF[v] for v in wanted if v in _STATES_OF} if wanted else None


def resources_to_proto(
    cores: tuple[int, ...], memory: int, devices: Mapping[str, tuple[str, ...]], ports: int
) -> pb.Resources:
    """A Resources message."""
    msg = pb.Resources()
    _fill_resources(msg, cores, memory, devices, ports)
    return msg


def _fill_resources(
    msg: pb.Resources,
    cores: tuple[int, ...],
    memory: int,
    devices: Mapping[str, tuple[str, ...]],
    ports: int,
) -> None:
    """Fill msg (possibly a sub-message, which this marks as present) in place."""
    msg.SetInParent()
    msg.cores.extend(cores)
    msg.memory_bytes = memory
    for kind, ids in devices.items():
        msg.devices[kind].ids.extend(ids)
    msg.ports = ports


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
        ports=tuple(
            ServicePort(name=p.name, container_port=p.container_port, host_port=p.host_port)
            for p in msg.ports
        ),
        labels=dict(msg.labels),
        networks=tuple(msg.networks),
    )


def _fill_spec(msg: pb.KernelSpec, spec: KernelSpec) -> None:
    """Fill msg (possibly a sub-message, which this marks as present) in place."""
    msg.SetInParent()
    msg.kernel_id = spec.kernel_id
    msg.image = spec.image
    msg.command.extend(spec.command)
    if spec.env:
        msg.env.update(spec.env)
    r = spec.resources
    request = msg.resources
    request.SetInParent()
    request.cpu_count = r.cpu_count
    request.cores.extend(r.cores)
    request.memory_bytes = r.memory
    if r.devices:
        request.devices.update(r.devices)
    request.cpu_quota = r.cpu_quota
    for port in spec.ports:
        msg.ports.add(name=port.name, container_port=port.container_port, host_port=port.host_port)
    if spec.labels:
        msg.labels.update(spec.labels)
    msg.networks.extend(spec.networks)


def kernel_to_proto(kernel: Kernel) -> pb.Kernel:
    """The Kernel message of a kernel record."""
    msg = pb.Kernel()
    msg.kernel_id = kernel.kernel_id
    msg.agent_id = kernel.agent_id
    msg.backend = kernel.backend
    msg.state = KERNEL_STATES[kernel.state]
    _fill_spec(msg.spec, kernel.spec)
    a = kernel.allocation
    _fill_resources(msg.allocated, a.cores, a.memory, a.devices, len(kernel.ports))
    if kernel.ports:
        msg.ports.update(kernel.ports)
    if kernel.exit_code is not None:
        msg.exit_code = kernel.exit_code
    msg.status_message = kernel.status_message
    if kernel.end_reason is not None:
        msg.end_reason = kernel.end_reason
    msg.memory_limit = kernel.memory_limit
    if kernel.limits:
        msg.limits.update(kernel.limits)
    if kernel.uid is not None:
        msg.uid = kernel.uid
    if kernel.gid is not None:
        msg.gid = kernel.gid
    msg.created_at = kernel.created_at
    msg.finished_at = kernel.finished_at
    msg.backend_ref = kernel.backend_ref
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

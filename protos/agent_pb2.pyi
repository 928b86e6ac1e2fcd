from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KernelState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KERNEL_STATE_UNSPECIFIED: _ClassVar[KernelState]
    KERNEL_STATE_PENDING: _ClassVar[KernelState]
    KERNEL_STATE_RUNNING: _ClassVar[KernelState]
    KERNEL_STATE_TERMINATED: _ClassVar[KernelState]
    KERNEL_STATE_UNKNOWN: _ClassVar[KernelState]

class KernelEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KERNEL_EVENT_TYPE_UNSPECIFIED: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_CREATED: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_RUNNING: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_TERMINATED: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_REMOVED: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_UNKNOWN: _ClassVar[KernelEventType]
    KERNEL_EVENT_TYPE_SYNCED: _ClassVar[KernelEventType]
KERNEL_STATE_UNSPECIFIED: KernelState
KERNEL_STATE_PENDING: KernelState
KERNEL_STATE_RUNNING: KernelState
KERNEL_STATE_TERMINATED: KernelState
KERNEL_STATE_UNKNOWN: KernelState
KERNEL_EVENT_TYPE_UNSPECIFIED: KernelEventType
KERNEL_EVENT_TYPE_CREATED: KernelEventType
KERNEL_EVENT_TYPE_RUNNING: KernelEventType
KERNEL_EVENT_TYPE_TERMINATED: KernelEventType
KERNEL_EVENT_TYPE_REMOVED: KernelEventType
KERNEL_EVENT_TYPE_UNKNOWN: KernelEventType
KERNEL_EVENT_TYPE_SYNCED: KernelEventType

class DeviceIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cores", "memory_bytes", "devices", "ports")
    class DevicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: DeviceIds
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[DeviceIds, _Mapping]] = ...) -> None: ...
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    cores: _containers.RepeatedScalarFieldContainer[int]
    memory_bytes: int
    devices: _containers.MessageMap[str, DeviceIds]
    ports: int
    def __init__(self, cores: _Optional[_Iterable[int]] = ..., memory_bytes: _Optional[int] = ..., devices: _Optional[_Mapping[str, DeviceIds]] = ..., ports: _Optional[int] = ...) -> None: ...

class ResourceRequest(_message.Message):
    __slots__ = ("cpu_count", "cores", "memory_bytes", "devices", "cpu_quota")
    class DevicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CPU_QUOTA_FIELD_NUMBER: _ClassVar[int]
    cpu_count: int
    cores: _containers.RepeatedScalarFieldContainer[int]
    memory_bytes: int
    devices: _containers.ScalarMap[str, int]
    cpu_quota: float
    def __init__(self, cpu_count: _Optional[int] = ..., cores: _Optional[_Iterable[int]] = ..., memory_bytes: _Optional[int] = ..., devices: _Optional[_Mapping[str, int]] = ..., cpu_quota: _Optional[float] = ...) -> None: ...

class PortRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class AgentInfo(_message.Message):
    __slots__ = ("agent_id", "backend", "scaling_group", "port_range", "capacity", "occupied", "kernel_count", "healthy", "status_message")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    PORT_RANGE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    OCCUPIED_FIELD_NUMBER: _ClassVar[int]
    KERNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    backend: str
    scaling_group: str
    port_range: PortRange
    capacity: Resources
    occupied: Resources
    kernel_count: int
    healthy: bool
    status_message: str
    def __init__(self, agent_id: _Optional[str] = ..., backend: _Optional[str] = ..., scaling_group: _Optional[str] = ..., port_range: _Optional[_Union[PortRange, _Mapping]] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., occupied: _Optional[_Union[Resources, _Mapping]] = ..., kernel_count: _Optional[int] = ..., healthy: _Optional[bool] = ..., status_message: _Optional[str] = ...) -> None: ...

class ListAgentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[AgentInfo]
    def __init__(self, agents: _Optional[_Iterable[_Union[AgentInfo, _Mapping]]] = ...) -> None: ...

class ServicePort(_message.Message):
    __slots__ = ("name", "container_port", "host_port")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_PORT_FIELD_NUMBER: _ClassVar[int]
    name: str
    container_port: int
    host_port: int
    def __init__(self, name: _Optional[str] = ..., container_port: _Optional[int] = ..., host_port: _Optional[int] = ...) -> None: ...

class KernelSpec(_message.Message):
    __slots__ = ("kernel_id", "image", "command", "env", "resources", "ports", "labels", "networks")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    NETWORKS_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    resources: ResourceRequest
    ports: _containers.RepeatedCompositeFieldContainer[ServicePort]
    labels: _containers.ScalarMap[str, str]
    networks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kernel_id: _Optional[str] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[ResourceRequest, _Mapping]] = ..., ports: _Optional[_Iterable[_Union[ServicePort, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., networks: _Optional[_Iterable[str]] = ...) -> None: ...

class Kernel(_message.Message):
    __slots__ = ("kernel_id", "agent_id", "backend", "state", "spec", "allocated", "ports", "exit_code", "status_message", "memory_limit", "created_at", "finished_at", "backend_ref", "limits", "uid", "gid", "end_reason")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class LimitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_REF_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    agent_id: str
    backend: str
    state: KernelState
    spec: KernelSpec
    allocated: Resources
    ports: _containers.ScalarMap[str, int]
    exit_code: int
    status_message: str
    memory_limit: str
    created_at: float
    finished_at: float
    backend_ref: str
    limits: _containers.ScalarMap[str, str]
    uid: int
    gid: int
    end_reason: str
    def __init__(self, kernel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., backend: _Optional[str] = ..., state: _Optional[_Union[KernelState, str]] = ..., spec: _Optional[_Union[KernelSpec, _Mapping]] = ..., allocated: _Optional[_Union[Resources, _Mapping]] = ..., ports: _Optional[_Mapping[str, int]] = ..., exit_code: _Optional[int] = ..., status_message: _Optional[str] = ..., memory_limit: _Optional[str] = ..., created_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., backend_ref: _Optional[str] = ..., limits: _Optional[_Mapping[str, str]] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., end_reason: _Optional[str] = ...) -> None: ...

class CreateKernelsRequest(_message.Message):
    __slots__ = ("agent_id", "kernels")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernels: _containers.RepeatedCompositeFieldContainer[KernelSpec]
    def __init__(self, agent_id: _Optional[str] = ..., kernels: _Optional[_Iterable[_Union[KernelSpec, _Mapping]]] = ...) -> None: ...

class CreateKernelsResponse(_message.Message):
    __slots__ = ("kernels",)
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[Kernel]
    def __init__(self, kernels: _Optional[_Iterable[_Union[Kernel, _Mapping]]] = ...) -> None: ...

class DestroyKernelRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id", "grace_seconds")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    grace_seconds: float
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., grace_seconds: _Optional[float] = ...) -> None: ...

class DestroyKernelResponse(_message.Message):
    __slots__ = ("kernel",)
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    kernel: Kernel
    def __init__(self, kernel: _Optional[_Union[Kernel, _Mapping]] = ...) -> None: ...

class RestartKernelRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ...) -> None: ...

class RestartKernelResponse(_message.Message):
    __slots__ = ("kernel",)
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    kernel: Kernel
    def __init__(self, kernel: _Optional[_Union[Kernel, _Mapping]] = ...) -> None: ...

class GetKernelRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ...) -> None: ...

class GetKernelResponse(_message.Message):
    __slots__ = ("kernel",)
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    kernel: Kernel
    def __init__(self, kernel: _Optional[_Union[Kernel, _Mapping]] = ...) -> None: ...

class GetKernelLogsRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id", "tail_lines", "max_bytes")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    tail_lines: int
    max_bytes: int
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., tail_lines: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class GetKernelLogsResponse(_message.Message):
    __slots__ = ("logs", "truncated")
    LOGS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    logs: bytes
    truncated: bool
    def __init__(self, logs: _Optional[bytes] = ..., truncated: _Optional[bool] = ...) -> None: ...

class StreamKernelLogsRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id", "follow", "tail_lines")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    TAIL_LINES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    follow: bool
    tail_lines: int
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., follow: _Optional[bool] = ..., tail_lines: _Optional[int] = ...) -> None: ...

class KernelLogChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class ListKernelsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token", "states", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[KernelState]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[KernelState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListKernelsResponse(_message.Message):
    __slots__ = ("kernels", "next_page_token")
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[Kernel]
    next_page_token: str
    def __init__(self, kernels: _Optional[_Iterable[_Union[Kernel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id", "argv", "stdin", "timeout")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARGV_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    argv: _containers.RepeatedScalarFieldContainer[str]
    stdin: bytes
    timeout: float
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., argv: _Optional[_Iterable[str]] = ..., stdin: _Optional[bytes] = ..., timeout: _Optional[float] = ...) -> None: ...

class ExecuteExit(_message.Message):
    __slots__ = ("exit_code", "timed_out")
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    exit_code: int
    timed_out: bool
    def __init__(self, exit_code: _Optional[int] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("stdout", "stderr", "exit")
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    stdout: bytes
    stderr: bytes
    exit: ExecuteExit
    def __init__(self, stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., exit: _Optional[_Union[ExecuteExit, _Mapping]] = ...) -> None: ...

class UpdateScalingGroupRequest(_message.Message):
    __slots__ = ("agent_id", "scaling_group")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    scaling_group: str
    def __init__(self, agent_id: _Optional[str] = ..., scaling_group: _Optional[str] = ...) -> None: ...

class UpdateScalingGroupResponse(_message.Message):
    __slots__ = ("agent",)
    AGENT_FIELD_NUMBER: _ClassVar[int]
    agent: AgentInfo
    def __init__(self, agent: _Optional[_Union[AgentInfo, _Mapping]] = ...) -> None: ...

class CreateNetworkRequest(_message.Message):
    __slots__ = ("agent_id", "name")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateNetworkResponse(_message.Message):
    __slots__ = ("name", "network_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NETWORK_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    network_id: str
    def __init__(self, name: _Optional[str] = ..., network_id: _Optional[str] = ...) -> None: ...

class DestroyNetworkRequest(_message.Message):
    __slots__ = ("agent_id", "name")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    name: str
    def __init__(self, agent_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DestroyNetworkResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WaitKernelRequest(_message.Message):
    __slots__ = ("agent_id", "kernel_id", "timeout")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    kernel_id: str
    timeout: float
    def __init__(self, agent_id: _Optional[str] = ..., kernel_id: _Optional[str] = ..., timeout: _Optional[float] = ...) -> None: ...

class WaitKernelResponse(_message.Message):
    __slots__ = ("kernel", "terminated", "exit_code", "reason")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    TERMINATED_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    kernel: Kernel
    terminated: bool
    exit_code: int
    reason: str
    def __init__(self, kernel: _Optional[_Union[Kernel, _Mapping]] = ..., terminated: _Optional[bool] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class WatchKernelsRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class KernelEvent(_message.Message):
    __slots__ = ("type", "kernel", "initial", "exit_code", "reason")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    type: KernelEventType
    kernel: Kernel
    initial: bool
    exit_code: int
    reason: str
    def __init__(self, type: _Optional[_Union[KernelEventType, str]] = ..., kernel: _Optional[_Union[Kernel, _Mapping]] = ..., initial: _Optional[bool] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

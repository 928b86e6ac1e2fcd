from protos import agent_pb2 as _agent_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATUS_UNSPECIFIED: _ClassVar[AgentStatus]
    AGENT_STATUS_ALIVE: _ClassVar[AgentStatus]
    AGENT_STATUS_LOST: _ClassVar[AgentStatus]

class GroupPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GROUP_PHASE_UNSPECIFIED: _ClassVar[GroupPhase]
    GROUP_PHASE_PENDING: _ClassVar[GroupPhase]
    GROUP_PHASE_STARTING: _ClassVar[GroupPhase]
    GROUP_PHASE_RUNNING: _ClassVar[GroupPhase]
    GROUP_PHASE_DEGRADED: _ClassVar[GroupPhase]
    GROUP_PHASE_FAILED: _ClassVar[GroupPhase]
    GROUP_PHASE_TERMINATING: _ClassVar[GroupPhase]
    GROUP_PHASE_TERMINATED: _ClassVar[GroupPhase]
AGENT_STATUS_UNSPECIFIED: AgentStatus
AGENT_STATUS_ALIVE: AgentStatus
AGENT_STATUS_LOST: AgentStatus
GROUP_PHASE_UNSPECIFIED: GroupPhase
GROUP_PHASE_PENDING: GroupPhase
GROUP_PHASE_STARTING: GroupPhase
GROUP_PHASE_RUNNING: GroupPhase
GROUP_PHASE_DEGRADED: GroupPhase
GROUP_PHASE_FAILED: GroupPhase
GROUP_PHASE_TERMINATING: GroupPhase
GROUP_PHASE_TERMINATED: GroupPhase

class RegisterAgentsRequest(_message.Message):
    __slots__ = ("daemon_address", "node", "agents", "kernels", "taken_at", "heartbeat_interval", "daemon_id", "more_kernels")
    DAEMON_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    DAEMON_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_KERNELS_FIELD_NUMBER: _ClassVar[int]
    daemon_address: str
    node: str
    agents: _containers.RepeatedCompositeFieldContainer[_agent_pb2.AgentInfo]
    kernels: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Kernel]
    taken_at: float
    heartbeat_interval: float
    daemon_id: str
    more_kernels: bool
    def __init__(self, daemon_address: _Optional[str] = ..., node: _Optional[str] = ..., agents: _Optional[_Iterable[_Union[_agent_pb2.AgentInfo, _Mapping]]] = ..., kernels: _Optional[_Iterable[_Union[_agent_pb2.Kernel, _Mapping]]] = ..., taken_at: _Optional[float] = ..., heartbeat_interval: _Optional[float] = ..., daemon_id: _Optional[str] = ..., more_kernels: _Optional[bool] = ...) -> None: ...

class RegisterKernelsRequest(_message.Message):
    __slots__ = ("session_id", "kernels", "last")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    kernels: _containers.RepeatedCompositeFieldContainer[_agent_pb2.Kernel]
    last: bool
    def __init__(self, session_id: _Optional[str] = ..., kernels: _Optional[_Iterable[_Union[_agent_pb2.Kernel, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class RegisterKernelsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterAgentsResponse(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class KernelStatus(_message.Message):
    __slots__ = ("kernel_id", "state", "exit_code", "status_message", "finished_at", "end_reason")
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    kernel_id: str
    state: _agent_pb2.KernelState
    exit_code: int
    status_message: str
    finished_at: float
    end_reason: str
    def __init__(self, kernel_id: _Optional[str] = ..., state: _Optional[_Union[_agent_pb2.KernelState, str]] = ..., exit_code: _Optional[int] = ..., status_message: _Optional[str] = ..., finished_at: _Optional[float] = ..., end_reason: _Optional[str] = ...) -> None: ...

class AgentHeartbeat(_message.Message):
    __slots__ = ("agent_id", "scaling_group", "occupied", "kernel_count", "healthy", "status_message", "kernels", "removed_kernel_ids")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    OCCUPIED_FIELD_NUMBER: _ClassVar[int]
    KERNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_KERNEL_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    scaling_group: str
    occupied: _agent_pb2.Resources
    kernel_count: int
    healthy: bool
    status_message: str
    kernels: _containers.RepeatedCompositeFieldContainer[KernelStatus]
    removed_kernel_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., scaling_group: _Optional[str] = ..., occupied: _Optional[_Union[_agent_pb2.Resources, _Mapping]] = ..., kernel_count: _Optional[int] = ..., healthy: _Optional[bool] = ..., status_message: _Optional[str] = ..., kernels: _Optional[_Iterable[_Union[KernelStatus, _Mapping]]] = ..., removed_kernel_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("daemon_address", "session_id", "taken_at", "agents", "delta")
    DAEMON_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TAKEN_AT_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    daemon_address: str
    session_id: str
    taken_at: float
    agents: _containers.RepeatedCompositeFieldContainer[AgentHeartbeat]
    delta: bool
    def __init__(self, daemon_address: _Optional[str] = ..., session_id: _Optional[str] = ..., taken_at: _Optional[float] = ..., agents: _Optional[_Iterable[_Union[AgentHeartbeat, _Mapping]]] = ..., delta: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ManagedAgent(_message.Message):
    __slots__ = ("info", "status", "daemon_address", "node", "last_heartbeat")
    INFO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DAEMON_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    info: _agent_pb2.AgentInfo
    status: AgentStatus
    daemon_address: str
    node: str
    last_heartbeat: float
    def __init__(self, info: _Optional[_Union[_agent_pb2.AgentInfo, _Mapping]] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., daemon_address: _Optional[str] = ..., node: _Optional[str] = ..., last_heartbeat: _Optional[float] = ...) -> None: ...

class ManagerListAgentsRequest(_message.Message):
    __slots__ = ("scaling_group",)
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    scaling_group: str
    def __init__(self, scaling_group: _Optional[str] = ...) -> None: ...

class ManagerListAgentsResponse(_message.Message):
    __slots__ = ("agents",)
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    agents: _containers.RepeatedCompositeFieldContainer[ManagedAgent]
    def __init__(self, agents: _Optional[_Iterable[_Union[ManagedAgent, _Mapping]]] = ...) -> None: ...

class CreateKernelRequest(_message.Message):
    __slots__ = ("spec", "scaling_group", "agent_id", "template", "delegate", "delegate_limits")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_FIELD_NUMBER: _ClassVar[int]
    DELEGATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    spec: _agent_pb2.KernelSpec
    scaling_group: str
    agent_id: str
    template: str
    delegate: bool
    delegate_limits: DelegateLimits
    def __init__(self, spec: _Optional[_Union[_agent_pb2.KernelSpec, _Mapping]] = ..., scaling_group: _Optional[str] = ..., agent_id: _Optional[str] = ..., template: _Optional[str] = ..., delegate: _Optional[bool] = ..., delegate_limits: _Optional[_Union[DelegateLimits, _Mapping]] = ...) -> None: ...

class DelegateLimits(_message.Message):
    __slots__ = ("cores", "memory_bytes", "kernels")
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    cores: int
    memory_bytes: int
    kernels: int
    def __init__(self, cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., kernels: _Optional[int] = ...) -> None: ...

class Delegation(_message.Message):
    __slots__ = ("token_id", "principal", "scaling_group", "cores", "memory_bytes", "kernels", "devices", "active")
    class DevicesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    principal: str
    scaling_group: str
    cores: int
    memory_bytes: int
    kernels: int
    devices: _containers.ScalarMap[str, int]
    active: bool
    def __init__(self, token_id: _Optional[str] = ..., principal: _Optional[str] = ..., scaling_group: _Optional[str] = ..., cores: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., kernels: _Optional[int] = ..., devices: _Optional[_Mapping[str, int]] = ..., active: _Optional[bool] = ...) -> None: ...

class ManagedKernel(_message.Message):
    __slots__ = ("kernel", "daemon_address", "scaling_group", "node", "owner", "delegation")
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    DAEMON_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_FIELD_NUMBER: _ClassVar[int]
    kernel: _agent_pb2.Kernel
    daemon_address: str
    scaling_group: str
    node: str
    owner: str
    delegation: Delegation
    def __init__(self, kernel: _Optional[_Union[_agent_pb2.Kernel, _Mapping]] = ..., daemon_address: _Optional[str] = ..., scaling_group: _Optional[str] = ..., node: _Optional[str] = ..., owner: _Optional[str] = ..., delegation: _Optional[_Union[Delegation, _Mapping]] = ...) -> None: ...

class CreateKernelResponse(_message.Message):
    __slots__ = ("kernel",)
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    kernel: ManagedKernel
    def __init__(self, kernel: _Optional[_Union[ManagedKernel, _Mapping]] = ...) -> None: ...

class ManagerListKernelsRequest(_message.Message):
    __slots__ = ("agent_id", "scaling_group", "page_size", "page_token", "states", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    scaling_group: str
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[_agent_pb2.KernelState]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, agent_id: _Optional[str] = ..., scaling_group: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_agent_pb2.KernelState, str]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ManagerListKernelsResponse(_message.Message):
    __slots__ = ("kernels", "next_page_token")
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kernels: _containers.RepeatedCompositeFieldContainer[ManagedKernel]
    next_page_token: str
    def __init__(self, kernels: _Optional[_Iterable[_Union[ManagedKernel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PruneKernelsRequest(_message.Message):
    __slots__ = ("older_than",)
    OLDER_THAN_FIELD_NUMBER: _ClassVar[int]
    older_than: float
    def __init__(self, older_than: _Optional[float] = ...) -> None: ...

class PruneKernelsResponse(_message.Message):
    __slots__ = ("kernel_ids",)
    KERNEL_IDS_FIELD_NUMBER: _ClassVar[int]
    kernel_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kernel_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ManagerKernelResponse(_message.Message):
    __slots__ = ("kernel",)
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    kernel: ManagedKernel
    def __init__(self, kernel: _Optional[_Union[ManagedKernel, _Mapping]] = ...) -> None: ...

class RemoveAgentRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class RemoveAgentResponse(_message.Message):
    __slots__ = ("agent", "kernels_forgotten")
    AGENT_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    agent: ManagedAgent
    kernels_forgotten: int
    def __init__(self, agent: _Optional[_Union[ManagedAgent, _Mapping]] = ..., kernels_forgotten: _Optional[int] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("token_id", "name", "admin", "scaling_groups", "created_at", "expires_at", "revoked_at", "created_by", "viewer", "parent_kernel_id")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUPS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    VIEWER_FIELD_NUMBER: _ClassVar[int]
    PARENT_KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    admin: bool
    scaling_groups: _containers.RepeatedScalarFieldContainer[str]
    created_at: float
    expires_at: float
    revoked_at: float
    created_by: str
    viewer: bool
    parent_kernel_id: str
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ..., admin: _Optional[bool] = ..., scaling_groups: _Optional[_Iterable[str]] = ..., created_at: _Optional[float] = ..., expires_at: _Optional[float] = ..., revoked_at: _Optional[float] = ..., created_by: _Optional[str] = ..., viewer: _Optional[bool] = ..., parent_kernel_id: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("name", "admin", "scaling_groups", "expires_in", "viewer")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUPS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    VIEWER_FIELD_NUMBER: _ClassVar[int]
    name: str
    admin: bool
    scaling_groups: _containers.RepeatedScalarFieldContainer[str]
    expires_in: float
    viewer: bool
    def __init__(self, name: _Optional[str] = ..., admin: _Optional[bool] = ..., scaling_groups: _Optional[_Iterable[str]] = ..., expires_in: _Optional[float] = ..., viewer: _Optional[bool] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "info")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    token: str
    info: TokenInfo
    def __init__(self, token: _Optional[str] = ..., info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("include_revoked",)
    INCLUDE_REVOKED_FIELD_NUMBER: _ClassVar[int]
    include_revoked: bool
    def __init__(self, include_revoked: _Optional[bool] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("info",)
    INFO_FIELD_NUMBER: _ClassVar[int]
    info: TokenInfo
    def __init__(self, info: _Optional[_Union[TokenInfo, _Mapping]] = ...) -> None: ...

class KernelTemplate(_message.Message):
    __slots__ = ("name", "kernel", "scaling_group", "backend", "readiness_json", "owner", "created_at", "updated_at", "document_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    SCALING_GROUP_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    READINESS_JSON_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    kernel: _agent_pb2.KernelSpec
    scaling_group: str
    backend: str
    readiness_json: str
    owner: str
    created_at: float
    updated_at: float
    document_json: str
    def __init__(self, name: _Optional[str] = ..., kernel: _Optional[_Union[_agent_pb2.KernelSpec, _Mapping]] = ..., scaling_group: _Optional[str] = ..., backend: _Optional[str] = ..., readiness_json: _Optional[str] = ..., owner: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., document_json: _Optional[str] = ...) -> None: ...

class ApplyTemplateRequest(_message.Message):
    __slots__ = ("document", "format")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    document: str
    format: str
    def __init__(self, document: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ApplyTemplateResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[KernelTemplate]
    def __init__(self, templates: _Optional[_Iterable[_Union[KernelTemplate, _Mapping]]] = ...) -> None: ...

class GetTemplateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTemplateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class TemplateResponse(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: KernelTemplate
    def __init__(self, template: _Optional[_Union[KernelTemplate, _Mapping]] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates",)
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[KernelTemplate]
    def __init__(self, templates: _Optional[_Iterable[_Union[KernelTemplate, _Mapping]]] = ...) -> None: ...

class GroupMember(_message.Message):
    __slots__ = ("role", "index", "kernel_id", "agent_id", "daemon_address", "node", "ports", "state", "ready", "restarts", "wave", "created_at", "ready_at", "message", "host", "exit_code")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    DAEMON_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    READY_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    role: str
    index: int
    kernel_id: str
    agent_id: str
    daemon_address: str
    node: str
    ports: _containers.ScalarMap[str, int]
    state: _agent_pb2.KernelState
    ready: bool
    restarts: int
    wave: int
    created_at: float
    ready_at: float
    message: str
    host: str
    exit_code: int
    def __init__(self, role: _Optional[str] = ..., index: _Optional[int] = ..., kernel_id: _Optional[str] = ..., agent_id: _Optional[str] = ..., daemon_address: _Optional[str] = ..., node: _Optional[str] = ..., ports: _Optional[_Mapping[str, int]] = ..., state: _Optional[_Union[_agent_pb2.KernelState, str]] = ..., ready: _Optional[bool] = ..., restarts: _Optional[int] = ..., wave: _Optional[int] = ..., created_at: _Optional[float] = ..., ready_at: _Optional[float] = ..., message: _Optional[str] = ..., host: _Optional[str] = ..., exit_code: _Optional[int] = ...) -> None: ...

class DegradedRole(_message.Message):
    __slots__ = ("role", "reason")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    role: str
    reason: str
    def __init__(self, role: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("phase", "observed_generation", "members", "degraded_roles", "reason", "message", "wave", "waves", "started_at", "running_at", "finished_at", "transitioned_at")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_ROLES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    WAVE_FIELD_NUMBER: _ClassVar[int]
    WAVES_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    RUNNING_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONED_AT_FIELD_NUMBER: _ClassVar[int]
    phase: GroupPhase
    observed_generation: int
    members: _containers.RepeatedCompositeFieldContainer[GroupMember]
    degraded_roles: _containers.RepeatedCompositeFieldContainer[DegradedRole]
    reason: str
    message: str
    wave: int
    waves: int
    started_at: float
    running_at: float
    finished_at: float
    transitioned_at: float
    def __init__(self, phase: _Optional[_Union[GroupPhase, str]] = ..., observed_generation: _Optional[int] = ..., members: _Optional[_Iterable[_Union[GroupMember, _Mapping]]] = ..., degraded_roles: _Optional[_Iterable[_Union[DegradedRole, _Mapping]]] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., wave: _Optional[int] = ..., waves: _Optional[int] = ..., started_at: _Optional[float] = ..., running_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., transitioned_at: _Optional[float] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("name", "uid", "owner", "generation", "created_at", "spec_json", "status", "topology", "startup_policy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    STARTUP_POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    uid: str
    owner: str
    generation: int
    created_at: float
    spec_json: str
    status: GroupStatus
    topology: str
    startup_policy: str
    def __init__(self, name: _Optional[str] = ..., uid: _Optional[str] = ..., owner: _Optional[str] = ..., generation: _Optional[int] = ..., created_at: _Optional[float] = ..., spec_json: _Optional[str] = ..., status: _Optional[_Union[GroupStatus, _Mapping]] = ..., topology: _Optional[str] = ..., startup_policy: _Optional[str] = ...) -> None: ...

class CreateGroupRequest(_message.Message):
    __slots__ = ("document", "format")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    document: str
    format: str
    def __init__(self, document: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class GroupResponse(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: Group
    def __init__(self, group: _Optional[_Union[Group, _Mapping]] = ...) -> None: ...

class GetGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListGroupsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGroupsResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    def __init__(self, groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ...) -> None: ...

class DeleteGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetGroupTopologyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GroupEndpoint(_message.Message):
    __slots__ = ("index", "kernel_id", "host", "ports", "ready")
    class PortsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KERNEL_ID_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    index: int
    kernel_id: str
    host: str
    ports: _containers.ScalarMap[str, int]
    ready: bool
    def __init__(self, index: _Optional[int] = ..., kernel_id: _Optional[str] = ..., host: _Optional[str] = ..., ports: _Optional[_Mapping[str, int]] = ..., ready: _Optional[bool] = ...) -> None: ...

class RoleTopology(_message.Message):
    __slots__ = ("role", "members", "depends_on", "env")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DEPENDS_ON_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    role: str
    members: _containers.RepeatedCompositeFieldContainer[GroupEndpoint]
    depends_on: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    def __init__(self, role: _Optional[str] = ..., members: _Optional[_Iterable[_Union[GroupEndpoint, _Mapping]]] = ..., depends_on: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GroupTopology(_message.Message):
    __slots__ = ("name", "phase", "topology", "roles")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TOPOLOGY_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    name: str
    phase: GroupPhase
    topology: str
    roles: _containers.RepeatedCompositeFieldContainer[RoleTopology]
    def __init__(self, name: _Optional[str] = ..., phase: _Optional[_Union[GroupPhase, str]] = ..., topology: _Optional[str] = ..., roles: _Optional[_Iterable[_Union[RoleTopology, _Mapping]]] = ...) -> None: ...

class WatchGroupRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

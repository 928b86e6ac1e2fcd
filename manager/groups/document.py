"""The documents users write: `AgentGroup` and `KernelTemplate`, in Kubernetes shape.

`apiVersion: agenthost.io/v1alpha1`, `kind`, `metadata.name`, `spec`, so the same
file can later feed an operator. These pydantic models are the one description of
both: they validate a file's shape (unknown keys are errors) and the
CustomResourceDefinition's OpenAPI schema is generated from them (`crd.py`). Rules
that span fields (one coordinator, dependencies, cycles, templates) are `plan.py`'s.

Every limit is a named constant here. A document is parsed from YAML (JSON is
YAML) or TOML text by `parse_documents`; nothing here knows the manager's state.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from common.config import describe_errors
from common.durations import format_duration, parse_duration
from common.errors import InvalidArgument

API_VERSION = "agenthost.io/v1alpha1"
GROUP_KIND = "AgentGroup"
TEMPLATE_KIND = "KernelTemplate"

MAX_DOCUMENT_BYTES = 256 * 1024
MAX_DOCUMENTS = 64  # templates in one apply
MIN_ROLES, MAX_ROLES = 2, 16
MIN_REPLICAS, MAX_REPLICAS = 1, 8
MAX_MEMBERS = 128
# A member's kernel id is `<group>-<role>-<index>-<4 hex>`, at most 63 characters.
MAX_GROUP_NAME = 40
MAX_ROLE_NAME = 15
MAX_TEMPLATE_NAME = 63
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_LABEL_SYNTAX = "lower-case letters, digits and '-', starting and ending with a letter or digit"
PORT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
PORT_NAME_SYNTAX = "letters, digits and '_', not starting with a digit"
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?[smhdw])+$|^[0-9]+(\.[0-9]+)?$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|[kKMGT]i?|B)?$"

FORMATS = ("yaml", "toml")


def dns_label(value: str, limit: int) -> str:
    """value if it is a DNS label of at most limit characters, else ValueError saying why."""
    if not isinstance(value, str) or not DNS_LABEL.fullmatch(value):
        raise ValueError(f"{str(value)[:32]!r} is not a DNS label: {DNS_LABEL_SYNTAX}")
    if len(value) > limit:
        raise ValueError(f"{value[:32]!r} is longer than {limit} characters")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        return float(parse_duration(str(value)))
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"{str(value)[:32]!r} is not a duration (e.g. 90s, 15m, 8h)")


def _bytes(value: object) -> int:
    from pydantic import ByteSize, TypeAdapter

    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a memory size")
    try:
        return int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError:
        raise ValueError(
            f'{str(value)[:32]!r} is not a memory size (e.g. "512MiB", "2GiB")'
        ) from None


def _duration_text(seconds: float) -> str:
    """'15m' for 900, '0.5s' for 0.5: written back so that it reads the same."""
    return format_duration(seconds) if seconds == int(seconds) else f"{seconds:g}s"


Duration = Annotated[
    float,
    BeforeValidator(_seconds),
    PlainSerializer(_duration_text, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
Memory = Annotated[
    int,
    BeforeValidator(_bytes),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": MEMORY_PATTERN},
            ],
        }
    ),
]


class Model(BaseModel):
    """A table of a document: camelCase keys, unknown keys refused, frozen once read."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, alias_generator=to_camel
    )


class PortSpec(Model):
    """A named port; its host port comes from the agent's range."""

    name: str = Field(description="exported as PORT_<NAME>; peers see it as AGENTHOST_PEERS_*")
    container_port: int = Field(
        0, ge=0, le=65535, description="port inside the container (container backends)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PORT_NAME.fullmatch(value):
            raise ValueError(f"port name {value[:32]!r} is not valid: {PORT_NAME_SYNTAX}")
        return value


class ResourceSpec(Model):
    """What one kernel asks of its agent."""

    cpus: int = Field(0, ge=0, le=1024, description="exclusive cores; 0: none, any core")
    memory: Memory = Field(0, description='reserved memory, e.g. "512MiB"; 0: none reserved')
    devices: dict[str, Annotated[int, Field(ge=0, le=64)]] = Field(
        default_factory=dict, description="device kind -> count, e.g. {cuda: 1}"
    )


class Readiness(Model):
    """When a member counts as ready: its port accepts TCP, or a command exits 0."""

    port: str | None = Field(None, description="a named port of the kernel that must accept TCP")
    exec_: list[str] | None = Field(
        None, alias="exec", description="argv run inside the kernel; ready when it exits 0"
    )
    timeout: Duration = Field(60.0, description="how long the member may take to be ready")
    period: Duration = Field(0.5, description="time between two probes")

    @model_validator(mode="after")
    def _one_check(self) -> Readiness:
        if (self.port is None) == (self.exec_ is None):
            raise ValueError("readiness: give exactly one of port or exec")
        if self.exec_ is not None and not self.exec_:
            raise ValueError("readiness: exec needs a command (argv)")
        if self.timeout <= 0 or self.period <= 0:
            raise ValueError("readiness: timeout and period must be positive")
        return self


class KernelSpecModel(Model):
    """A kernel as a template or a role writes it."""

    image: str = Field("", description="container image (container backends)")
    command: list[str] = Field(default_factory=list, description="argv")
    env: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    resources: ResourceSpec = Field(default_factory=ResourceSpec)
    ports: list[PortSpec] = Field(default_factory=list, max_length=16)
    backend: Literal["local", "docker", "kubernetes"] | None = Field(
        None, description="only agents of this backend; default: any"
    )
    scaling_group: str | None = Field(None, description="default: the manager's")
    readiness: Readiness | None = None

    @model_validator(mode="after")
    def _ports_and_readiness(self) -> KernelSpecModel:
        names = [p.name.upper() for p in self.ports]
        if len(set(names)) != len(names):
            raise ValueError(f"ports: names repeat: {[p.name for p in self.ports]}")
        if self.readiness and self.readiness.port is not None:
            known = [p.name for p in self.ports]
            if self.readiness.port not in known:
                raise ValueError(
                    f"readiness: port {self.readiness.port!r} is not a port of the kernel; "
                    f"its ports: {', '.join(known) or 'none'}"
                )
        return self


class Metadata(Model):
    """metadata: the name (and labels, annotations kept as they are)."""

    name: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Placement(Model):
    """Where a role's members may go."""

    scaling_group: str | None = Field(None, description="default: the kernel's, else the manager's")
    agent: str | None = Field(None, description="pin every member to this agent")
    spread: bool = Field(False, description="members on distinct agents when any fit")


class Role(Model):
    """One role: a kernel spec (a template or inline) run as replicas."""

    name: str
    template: str | None = Field(None, description="a template's name (or give kernel)")
    kernel: KernelSpecModel | None = Field(None, description="an inline kernel (or template)")
    replicas: int = Field(1, ge=MIN_REPLICAS, le=MAX_REPLICAS)
    coordinator: bool = False
    depends_on: list[str] = Field(default_factory=list, max_length=MAX_ROLES)
    restart_policy: Literal["Never", "OnFailure"] = "Never"
    env: dict[str, str] = Field(default_factory=dict, description="over the kernel's env")
    placement: Placement = Field(default_factory=Placement)
    readiness: Readiness | None = Field(None, description="instead of the kernel's readiness")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return dns_label(value, MAX_ROLE_NAME)

    @model_validator(mode="after")
    def _one_kernel(self) -> Role:
        if (self.template is None) == (self.kernel is None):
            raise ValueError(f"role {self.name!r}: give exactly one of template or kernel")
        return self


class GroupSpec(Model):
    """spec of an AgentGroup."""

    roles: list[Role] = Field(min_length=MIN_ROLES, max_length=MAX_ROLES)
    topology: Literal["Hierarchical", "Peer"] = Field(
        "Hierarchical",
        description="Hierarchical: started along dependsOn in waves; Peer: one wave, "
        "every member discovers every other",
    )
    startup_policy: Literal["Atomic", "BestEffort"] = Field(
        "Atomic",
        description="Atomic: any failure rolls everything back; BestEffort: a failed "
        "non-coordinator role is recorded as degraded",
    )
    idle_timeout: Duration = Field(
        900.0, description="end after this long without exec, logs or topology calls; 0: never"
    )
    max_duration: Duration = Field(28800.0, description="end this long after creation; 0: never")
    rollback_timeout: Duration = Field(60.0, description="time to end members on a rollback")


class AgentGroupDocument(Model):
    """An AgentGroup document."""

    api_version: Literal["agenthost.io/v1alpha1"]
    kind: Literal["AgentGroup"]
    metadata: Metadata
    spec: GroupSpec

    @field_validator("metadata")
    @classmethod
    def _name(cls, value: Metadata) -> Metadata:
        dns_label(value.name, MAX_GROUP_NAME)
        return value


class KernelTemplateDocument(Model):
    """A KernelTemplate document: a named kernel spec."""

    api_version: Literal["agenthost.io/v1alpha1"]
    kind: Literal["KernelTemplate"]
    metadata: Metadata
    spec: KernelSpecModel

    @field_validator("metadata")
    @classmethod
    def _name(cls, value: Metadata) -> Metadata:
        dns_label(value.name, MAX_TEMPLATE_NAME)
        return value


_LITERALS = {
    "kind": ("kind", (GROUP_KIND, TEMPLATE_KIND)),
    "apiVersion": ("apiVersion", (API_VERSION,)),
    "topology": ("topology", ("Hierarchical", "Peer")),
    "startupPolicy": ("startupPolicy", ("Atomic", "BestEffort")),
    "restartPolicy": ("restartPolicy", ("Never", "OnFailure")),
    "backend": ("backend", ("local", "docker", "kubernetes")),
}


def parse_documents(text: str, fmt: str = "yaml") -> list[dict[str, Any]]:
    """The documents in text (YAML may hold several, `---` apart); InvalidArgument if unreadable."""
    fmt = fmt or "yaml"
    if fmt not in FORMATS:
        raise InvalidArgument(f"format {fmt[:16]!r} is not known; valid: {', '.join(FORMATS)}")
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(f"the document is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
    try:
        if fmt == "toml":
            docs: list[Any] = [tomllib.loads(text)]
        else:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"the document is not valid {fmt.upper()}: {exc}") from None
    if not docs:
        raise InvalidArgument("the document is empty")
    if len(docs) > MAX_DOCUMENTS:
        raise InvalidArgument(f"more than {MAX_DOCUMENTS} documents in one request")
    for doc in docs:
        if not isinstance(doc, dict):
            raise InvalidArgument(
                f"a document is a mapping (apiVersion, kind, metadata, spec), "
                f"not {type(doc).__name__}"
            )
    return docs


def _where(raw: dict[str, Any], kind: str) -> str:
    metadata = raw.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    return f"{kind} {str(name)[:40]!r}" if name else kind


def load_group(raw: dict[str, Any]) -> AgentGroupDocument:
    """The AgentGroup in raw, or InvalidArgument listing every problem."""
    if raw.get("kind") != GROUP_KIND:
        raise InvalidArgument(f"kind {str(raw.get('kind'))[:32]!r} is not {GROUP_KIND}")
    try:
        return AgentGroupDocument.model_validate(raw)
    except ValidationError as exc:
        raise InvalidArgument(
            "; ".join(describe_errors(exc, _where(raw, GROUP_KIND), _LITERALS))
        ) from None


def load_template(raw: dict[str, Any]) -> KernelTemplateDocument:
    """The KernelTemplate in raw, or InvalidArgument listing every problem."""
    if raw.get("kind") != TEMPLATE_KIND:
        raise InvalidArgument(f"kind {str(raw.get('kind'))[:32]!r} is not {TEMPLATE_KIND}")
    try:
        return KernelTemplateDocument.model_validate(raw)
    except ValidationError as exc:
        raise InvalidArgument(
            "; ".join(describe_errors(exc, _where(raw, TEMPLATE_KIND), _LITERALS))
        ) from None


def to_json(model: BaseModel) -> str:
    """A document (or part) as compact JSON with its camelCase keys, defaults left out."""
    return json.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=True))

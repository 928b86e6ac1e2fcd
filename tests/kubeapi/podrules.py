"""The apiserver's own pod validation, the part the OpenAPI schemas cannot express.

A subset of `ValidatePod` (pkg/apis/core/validation): object and container names, label
syntax, port ranges and protocols, enum-valued fields, environment variable names,
resource quantities and request/limit ordering, volume mounts that name a volume.
Messages and cause reasons are the apiserver's, so a backend sees the same 422 as from
a cluster. Anything not listed here is accepted as long as the schema accepts it.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from tests.kubeapi.defaulting import quantity_value
from tests.kubeapi.selectors import label_key_problem, label_value_problem
from tests.kubeapi.status import Cause

QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
QUANTITY_PROBLEM = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_PORT_NAME = re.compile(r"^[-a-z0-9]+$")

LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
PORT_RANGE = "must be between 1 and 65535, inclusive"
ENUMS: dict[str, tuple[str, ...]] = {
    "restartPolicy": ("Always", "Never", "OnFailure"),
    "dnsPolicy": ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"),
    "imagePullPolicy": ("Always", "IfNotPresent", "Never"),
    "protocol": ("SCTP", "TCP", "UDP"),
    "terminationMessagePolicy": ("FallbackToLogsOnError", "File"),
    "preemptionPolicy": ("Never", "PreemptLowerPriority"),
}
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def _invalid(field: str, value: Any, message: str) -> Cause:
    shown = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
    return Cause("FieldValueInvalid", f"Invalid value: {shown}: {message}", field)


def _required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", "Required value" + (f": {detail}" if detail else ""), field)


def _unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> Cause:
    listed = ", ".join(f'"{a}"' for a in allowed)
    return Cause(
        "FieldValueNotSupported", f'Unsupported value: "{value}": supported values: {listed}', field
    )


def _duplicate(field: str, value: Any) -> Cause:
    shown = json.dumps(value) if not isinstance(value, str) else f'"{value}"'
    return Cause("FieldValueDuplicate", f"Duplicate value: {shown}", field)


def dns_label_problem(name: str) -> str | None:
    """Why `name` is not a DNS-1123 label (container, port and volume names), or None."""
    if len(name) > 63:
        return "must be no more than 63 characters"
    return None if _DNS1123_LABEL.match(name) else LABEL_MESSAGE


def dns_subdomain_problem(name: str) -> str | None:
    """Why `name` is not a DNS-1123 subdomain (object names), or None."""
    if len(name) > 253:
        return "must be no more than 253 characters"
    return None if _DNS1123_SUBDOMAIN.match(name) else SUBDOMAIN_MESSAGE


def quantity_problems(obj: Any, path: str = "") -> list[str]:
    """Decode-time quantity errors anywhere under `resources`-like maps (a 400 on a server)."""
    problems: list[str] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in ("requests", "limits", "overhead") and isinstance(value, dict):
                for name, q in value.items():
                    if not _parses(q):
                        problems.append(f"{sub}.{name}: {QUANTITY_PROBLEM}")
            elif key == "sizeLimit" and not _parses(value):
                problems.append(f"{sub}: {QUANTITY_PROBLEM}")
            else:
                problems.extend(quantity_problems(value, sub))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            problems.extend(quantity_problems(value, f"{path}[{i}]"))
    return problems


def _parses(q: Any) -> bool:
    if isinstance(q, (int, float)) and not isinstance(q, bool):
        return True
    if not isinstance(q, str) or not QUANTITY_RE.match(q):
        return False
    try:
        quantity_value(q)
    except ValueError:
        return False
    return True


def _quantity(q: Any) -> Decimal:
    return quantity_value(q)


def _check_metadata(meta: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    name = meta.get("name")
    if not name and not meta.get("generateName"):
        causes.append(_required("metadata.name", "name or generateName is required"))
    elif name and (problem := dns_subdomain_problem(name)) is not None:
        causes.append(_invalid("metadata.name", name, problem))
    for key, value in (meta.get("labels") or {}).items():
        if (problem := label_key_problem(key)) is not None:
            causes.append(_invalid("metadata.labels", key, problem))
        if not isinstance(value, str) or (problem := label_value_problem(value)) is not None:
            causes.append(_invalid("metadata.labels", value, problem or "must be a string"))
    for key in meta.get("annotations") or {}:
        if (problem := label_key_problem(key.lower())) is not None:
            causes.append(_invalid("metadata.annotations", key, problem))
    return causes


def _check_resources(res: dict[str, Any], path: str) -> list[Cause]:
    causes: list[Cause] = []
    requests = res.get("requests") or {}
    limits = res.get("limits") or {}
    for kind, values in (("requests", requests), ("limits", limits)):
        for name, q in values.items():
            where = f"{path}.{kind}[{name}]"
            if (
                name not in STANDARD_RESOURCES
                and "/" not in name
                and not name.startswith("hugepages-")
            ):
                causes.append(
                    _invalid(where, name, "must be a standard resource type or fully qualified")
                )
                continue
            if _quantity(q) < 0:
                causes.append(_invalid(where, str(q), "must be greater than or equal to 0"))
            elif "/" in name and _quantity(q) != _quantity(q).to_integral_value():
                causes.append(_invalid(where, str(q), "must be an integer"))
    for name, q in requests.items():
        if name not in limits:
            continue
        if "/" in name and _quantity(q) != _quantity(limits[name]):
            causes.append(
                _invalid(
                    f"{path}.requests", str(q), f"must be equal to {name} limit of {limits[name]}"
                )
            )
        elif _quantity(q) > _quantity(limits[name]):
            causes.append(
                _invalid(
                    f"{path}.requests",
                    str(q),
                    f"must be less than or equal to {name} limit of {limits[name]}",
                )
            )
    return causes


def _check_container(
    c: dict[str, Any], path: str, volumes: set[str], host_network: bool
) -> list[Cause]:
    causes: list[Cause] = []
    name = c.get("name")
    if isinstance(name, str) and (problem := dns_label_problem(name)) is not None:
        causes.append(_invalid(f"{path}.name", name, problem))
    if not c.get("image"):
        causes.append(_required(f"{path}.image"))
    for key in ("imagePullPolicy", "terminationMessagePolicy"):
        if c.get(key) is not None and c[key] not in ENUMS[key]:
            causes.append(_unsupported(f"{path}.{key}", c[key], ENUMS[key]))
    port_names: set[str] = set()
    for i, port in enumerate(c.get("ports") or []):
        where = f"{path}.ports[{i}]"
        cp = port.get("containerPort")
        if isinstance(cp, int) and not 1 <= cp <= 65535:
            causes.append(_invalid(f"{where}.containerPort", cp, PORT_RANGE))
        hp = port.get("hostPort")
        if isinstance(hp, int) and hp != 0 and not 1 <= hp <= 65535:
            causes.append(_invalid(f"{where}.hostPort", hp, PORT_RANGE))
        if host_network and isinstance(hp, int) and hp != 0 and hp != cp:
            causes.append(
                _invalid(
                    f"{where}.hostPort", hp, "must match `containerPort` when `hostNetwork` is true"
                )
            )
        proto = port.get("protocol")
        if proto is not None and proto not in ENUMS["protocol"]:
            causes.append(_unsupported(f"{where}.protocol", proto, ENUMS["protocol"]))
        pname = port.get("name")
        if pname:
            if len(pname) > 15 or not _PORT_NAME.match(pname) or not re.search("[a-z]", pname):
                causes.append(
                    _invalid(
                        f"{where}.name",
                        pname,
                        "must be no more than 15 characters, "
                        "lowercase alphanumeric or '-', with at least one letter",
                    )
                )
            elif pname in port_names:
                causes.append(_duplicate(f"{where}.name", pname))
            port_names.add(pname)
    env_names: set[str] = set()
    for i, env in enumerate(c.get("env") or []):
        ename = env.get("name", "")
        if not _ENV_NAME.match(ename):
            causes.append(
                _invalid(
                    f"{path}.env[{i}].name",
                    ename,
                    "a valid environment variable name must consist of alphabetic characters, "
                    "digits, '_', '-', or '.', and must not start with a digit (e.g. "
                    "'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for "
                    "validation is "
                    "'[-._a-zA-Z][-._a-zA-Z0-9]*')",
                )
            )
        if env.get("value") is not None and env.get("valueFrom") is not None:
            causes.append(
                _invalid(
                    f"{path}.env[{i}].valueFrom",
                    "",
                    "may not be specified when `value` is not empty",
                )
            )
        env_names.add(ename)
    causes.extend(_check_resources(c.get("resources") or {}, f"{path}.resources"))
    for i, mount in enumerate(c.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            causes.append(
                Cause(
                    "FieldValueNotFound",
                    f'Not found: "{mount.get("name")}"',
                    f"{path}.volumeMounts[{i}].name",
                )
            )
        if not mount.get("mountPath"):
            causes.append(_required(f"{path}.volumeMounts[{i}].mountPath"))
    return causes


def validate_pod(pod: dict[str, Any]) -> list[Cause]:
    """Field errors of a schema-valid pod, as the apiserver's ValidatePod would report them."""
    causes = _check_metadata(pod.get("metadata") or {})
    spec = pod.get("spec") or {}
    for key in ("restartPolicy", "dnsPolicy", "preemptionPolicy"):
        if spec.get(key) is not None and spec[key] not in ENUMS[key]:
            causes.append(_unsupported(f"spec.{key}", spec[key], ENUMS[key]))
    grace = spec.get("terminationGracePeriodSeconds")
    if isinstance(grace, int) and grace < 0:
        causes.append(
            _invalid(
                "spec.terminationGracePeriodSeconds", grace, "must be greater than or equal to 0"
            )
        )
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline < 1:
        causes.append(
            _invalid(
                "spec.activeDeadlineSeconds",
                deadline,
                "must be between 1 and 2147483647, inclusive",
            )
        )
    for key, value in (spec.get("nodeSelector") or {}).items():
        if (problem := label_key_problem(key)) is not None:
            causes.append(_invalid("spec.nodeSelector", key, problem))
        elif not isinstance(value, str) or label_value_problem(value) is not None:
            causes.append(
                _invalid(
                    "spec.nodeSelector",
                    value,
                    "a valid label must be an empty string or consist of alphanumeric characters",
                )
            )
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vname = vol.get("name", "")
        if (problem := dns_label_problem(vname)) is not None:
            causes.append(_invalid(f"spec.volumes[{i}].name", vname, problem))
        elif vname in volumes:
            causes.append(_duplicate(f"spec.volumes[{i}].name", vname))
        if len([k for k in vol if k != "name"]) == 0:
            causes.append(_required(f"spec.volumes[{i}]", "must specify a volume type"))
        volumes.add(vname)
    containers = spec.get("containers")
    if not containers:
        causes.append(_required("spec.containers"))
    host_network = bool(spec.get("hostNetwork"))
    names: set[str] = set()
    host_ports: set[str] = set()
    for group in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(group) or []):
            path = f"spec.{group}[{i}]"
            causes.extend(_check_container(c, path, volumes, host_network))
            cname = c.get("name")
            if cname in names:
                causes.append(_duplicate(f"{path}.name", cname))
            names.add(cname)
            if group != "containers":
                continue
            for j, port in enumerate(c.get("ports") or []):
                hp = port.get("hostPort")
                if not hp:
                    continue
                key = f"{port.get('hostIP', '')}:{hp}/{port.get('protocol', 'TCP')}".lstrip(":")
                if key in host_ports:
                    causes.append(_duplicate(f"{path}.ports[{j}].hostPort", key))
                host_ports.add(key)
    return causes

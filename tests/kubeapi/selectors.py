"""Label and field selectors: parsing the query strings and matching objects against them.

The grammar is the apiserver's (`k8s.io/apimachinery/pkg/labels`): comma-separated
requirements `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k>n`, `k<n`.
Field selectors take `=`, `==` and `!=` on the fields the apiserver indexes for pods.
A selector that does not parse is a 400 BadRequest, as from a real server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.kubeapi.status import ApiError, bad_request

_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key (a qualified name), or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _PREFIX_RE.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _NAME_RE.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _VALUE_RE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. "
            "'MyValue',  or 'my_value',  or '12345', regex used for validation is "
            "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return None


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator and values."""

    key: str
    operator: str  # exists, !, =, !=, in, notin, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a label map satisfies this requirement."""
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator in ("=", "in"):
            return present and value in self.values
        if self.operator in ("!=", "notin"):
            return not present or value not in self.values
        if not present or value is None:
            return False
        try:
            number = int(value)
        except ValueError:
            return False
        bound = int(self.values[0])
        return number > bound if self.operator == "gt" else number < bound


@dataclass(frozen=True)
class LabelSelector:
    """A parsed label selector; the empty selector matches everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: dict[str, str] | None) -> bool:
        """Whether every requirement holds for `labels`."""
        have = labels or {}
        return all(r.matches(have) for r in self.requirements)


def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


_SET_RE = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_CMP_RE = re.compile(r"^\s*([^=!<>\s]+)\s*(==|=|!=|>|<)\s*(.*?)\s*$")


def _parse_requirement(text: str) -> Requirement:
    stripped = text.strip()
    if not stripped:
        raise bad_request(f"unable to parse requirement: empty requirement in {text!r}")
    if (m := _SET_RE.match(stripped)) is not None:
        key, op, raw = m.group(1), m.group(2), m.group(3)
        values = tuple(v.strip() for v in raw.split(",")) if raw.strip() else ()
        req = Requirement(key, op, values)
    elif (m := _CMP_RE.match(stripped)) is not None:
        key, op, value = m.group(1), m.group(2), m.group(3)
        op = {"==": "=", ">": "gt", "<": "lt"}.get(op, op)
        if op in ("gt", "lt") and not re.fullmatch(r"-?\d+", value):
            raise bad_request(
                f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be "
                f"an integer: {value!r}"
            )
        req = Requirement(key, op, (value,))
    elif stripped.startswith("!"):
        req = Requirement(stripped[1:].strip(), "!")
    elif re.fullmatch(r"\S+", stripped):
        req = Requirement(stripped, "exists")
    else:
        raise bad_request(f"unable to parse requirement: found {stripped!r}")
    if (problem := label_key_problem(req.key)) is not None:
        raise bad_request(f"unable to parse requirement: invalid label key {req.key!r}: {problem}")
    if req.operator not in ("gt", "lt"):
        for value in req.values:
            if (problem := label_value_problem(value)) is not None:
                raise bad_request(
                    f"unable to parse requirement: invalid label value: {value!r}: "
                    f"at key: {req.key!r}: {problem}"
                )
    return req


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a `labelSelector` query value; raises a 400 ApiError when it does not parse."""
    if text is None or not text.strip():
        return LabelSelector()
    return LabelSelector(tuple(_parse_requirement(p) for p in _split_top_level(text)))


def _pod_field(path: tuple[str, ...], default: str = "") -> Callable[[dict[str, Any]], str]:
    def get(obj: dict[str, Any]) -> str:
        current: Any = obj
        for part in path:
            if not isinstance(current, dict):
                return default
            current = current.get(part)
        if current is None:
            return default
        if isinstance(current, bool):
            return "true" if current else "false"
        return str(current)

    return get


POD_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": _pod_field(("metadata", "name")),
    "metadata.namespace": _pod_field(("metadata", "namespace")),
    "spec.nodeName": _pod_field(("spec", "nodeName")),
    "spec.restartPolicy": _pod_field(("spec", "restartPolicy")),
    "spec.schedulerName": _pod_field(("spec", "schedulerName")),
    "spec.serviceAccountName": _pod_field(("spec", "serviceAccountName")),
    "spec.hostNetwork": _pod_field(("spec", "hostNetwork"), "false"),
    "status.phase": _pod_field(("status", "phase")),
    "status.podIP": _pod_field(("status", "podIP")),
    "status.nominatedNodeName": _pod_field(("status", "nominatedNodeName")),
}
"""The pod fields the apiserver accepts in a fieldSelector."""

GENERIC_FIELDS: dict[str, Callable[[dict[str, Any]], str]] = {
    "metadata.name": POD_FIELDS["metadata.name"],
    "metadata.namespace": POD_FIELDS["metadata.namespace"],
}
"""What every other resource accepts."""


@dataclass(frozen=True)
class FieldRequirement:
    """`field=value` or `field!=value`."""

    field: str
    negated: bool
    value: str


@dataclass(frozen=True)
class FieldSelector:
    """A parsed field selector over a fixed table of supported fields."""

    requirements: tuple[FieldRequirement, ...]
    fields: dict[str, Callable[[dict[str, Any]], str]]

    def matches(self, obj: dict[str, Any]) -> bool:
        """Whether `obj` satisfies every requirement."""
        for req in self.requirements:
            equal = self.fields[req.field](obj) == req.value
            if equal == req.negated:
                return False
        return True


def parse_field_selector(
    text: str | None, fields: dict[str, Callable[[dict[str, Any]], str]]
) -> FieldSelector:
    """Parse a `fieldSelector`; unknown fields are a 400 as from a real server."""
    if text is None or not text.strip():
        return FieldSelector((), fields)
    reqs: list[FieldRequirement] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if m is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field, op, value = m.group(1), m.group(2), m.group(3)
        if field not in fields:
            raise bad_request(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, op == "!=", value))
    return FieldSelector(tuple(reqs), fields)


__all__ = [
    "POD_FIELDS",
    "ApiError",
    "FieldSelector",
    "LabelSelector",
    "parse_field_selector",
    "parse_label_selector",
]

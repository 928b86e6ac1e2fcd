"""Validation of request bodies against the official Kubernetes OpenAPI schemas.

The schemas come from `kubernetes-validate`, which ships them offline, at one pinned
Kubernetes version (`KUBERNETES_VERSION`). Every error is collected, not just the first,
and sorted the way the apiserver sorts them into:

- decode errors (wrong JSON type, wrong kind/apiVersion, unknown fields under Strict
  field validation): the real server fails these while decoding, with 400 BadRequest;
- field errors (a required field missing, ...): 422 Invalid with `details.causes`.

The schemas say nothing about ranges, enums or name syntax; `podrules` checks those.
This module knows nothing of HTTP.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate.utils as kv  # type: ignore[import-untyped]
from referencing import Registry, Resource

from tests.kubeapi.status import Cause

KUBERNETES_VERSION = "1.37"
"""The Kubernetes minor version whose schemas bodies are checked against (and /version says)."""


@dataclass
class SchemaReport:
    """What validation found: decode errors (400), field causes (422), unknown fields."""

    decode_errors: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    unknown_fields: list[str] = field(default_factory=list)


def field_path(parts: Iterable[str | int]) -> str:
    """`spec.containers[0].name` from a JSON path."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def _schema_dir(strict: bool) -> str:
    versions = [v for v in kv.all_versions() if kv.major_minor(v) == KUBERNETES_VERSION]
    if not versions:
        raise RuntimeError(
            f"kubernetes-validate {kv.__version__} ships no schemas for Kubernetes "
            f"{KUBERNETES_VERSION}; it has {', '.join(kv.all_versions())}"
        )
    return f"v{versions[-1]}-local" + ("-strict" if strict else "")


@functools.cache
def _validator(kind: str, api_version: str, strict: bool) -> jsonschema.protocols.Validator:
    directory = _schema_dir(strict)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kv.schema_contents(
        f"kubernetes-json-schema/{directory}/{kind.lower()}-{group_version}.json",
        KUBERNETES_VERSION,
    )
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/{directory}/_definitions.json", KUBERNETES_VERSION
    )
    registry: Registry[Any] = Resource.from_contents(schema) @ Registry()
    registry = Resource.from_contents(definitions) @ registry
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(
        schema, registry=registry
    )
    return validator


def preload(kinds: Iterable[tuple[str, str]]) -> None:
    """Load the schemas of `(kind, apiVersion)` pairs now (slow, blocking: call in a thread)."""
    for kind, api_version in kinds:
        _validator(kind, api_version, False)
        _validator(kind, api_version, True)


_JSON_TYPE_TO_GO = {
    "string": "string",
    "integer": "number",
    "number": "number",
    "boolean": "bool",
    "array": "array",
    "object": "object",
}


def _go_type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _leaf_errors(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    # oneOf/anyOf failures carry the real reasons in their context; report the
    # deepest ones so that a cause names the field, not the whole branch.
    if error.context:
        out: list[jsonschema.ValidationError] = []
        for sub in error.context:
            out.extend(_leaf_errors(sub))
        return out
    return [error]


def validate(
    obj: dict[str, Any], kind: str, api_version: str = "v1", *, schema_version: str | None = None
) -> SchemaReport:
    """Check `obj` against the schema of `kind`; nothing raised, everything reported.

    `schema_version` names the schema's own group version when it differs from the
    apiVersion the object is sent as: `DeleteOptions` is sent as `v1` but its schema
    is `meta/v1`.
    """
    report = SchemaReport()
    if obj.get("kind") not in (None, kind):
        report.decode_errors.append(
            f"the kind in the data ({obj.get('kind')}) does not match the expected kind ({kind})"
        )
    if obj.get("apiVersion") not in (None, api_version):
        report.decode_errors.append(
            f"the API version in the data ({obj.get('apiVersion')}) does not match the "
            f"expected API version ({api_version})"
        )
    body = {**obj, "kind": kind, "apiVersion": api_version}
    seen: set[tuple[str, str]] = set()
    schema = schema_version or api_version
    for error in _validator(kind, schema, False).iter_errors(body):
        for leaf in _leaf_errors(error):
            path = field_path(leaf.absolute_path)
            if leaf.validator == "required":
                missing = re.match(r"'([^']+)' is a required property", leaf.message)
                name = missing.group(1) if missing else "?"
                full = f"{path}.{name}" if path else name
                key = ("required", full)
                if key not in seen:
                    seen.add(key)
                    report.causes.append(Cause("FieldValueRequired", "Required value", full))
            elif leaf.validator in ("type", "oneOf"):
                key = ("type", path)
                if key not in seen:
                    seen.add(key)
                    wanted = leaf.validator_value
                    wanted_list = wanted if isinstance(wanted, list) else [wanted]
                    go = [_JSON_TYPE_TO_GO.get(str(w), str(w)) for w in wanted_list if w != "null"]
                    report.decode_errors.append(
                        f"json: cannot unmarshal {_go_type_of(leaf.instance)} into Go struct "
                        f"field {path or kind} of type {'/'.join(go) or 'value'}"
                    )
            else:
                report.causes.append(
                    Cause("FieldValueInvalid", f"Invalid value: {json.dumps(leaf.instance)}", path)
                )
    for error in _validator(kind, schema, True).iter_errors(body):
        for leaf in _leaf_errors(error):
            if leaf.validator != "additionalProperties":
                continue
            extra = re.findall(r"'([^']+)'", leaf.message.split(" were unexpected")[0])
            base = field_path(leaf.absolute_path)
            for name in extra:
                report.unknown_fields.append(f"{base}.{name}" if base else name)
    return report

"""The CustomResourceDefinition of `AgentGroup`, generated from the document models.

`agenthost group crd` prints it. Its OpenAPI v3 schema is the JSON schema pydantic
makes of `AgentGroupDocument` (the very models that validate a file), turned into
a Kubernetes structural schema: references inlined, optional fields as
`nullable`, no `additionalProperties: false` beside `properties` (the API server
prunes unknown fields instead), `metadata` left to the API server, and a `status`
subresource. It is built with the `kubernetes` client's models (imported here
only), so that the shape is the API's own.
"""

from __future__ import annotations

from typing import Any

from manager.groups.document import API_VERSION, GROUP_KIND, AgentGroupDocument

GROUP = API_VERSION.split("/")[0]
VERSION = API_VERSION.split("/")[1]
PLURAL = "agentgroups"
SHORT_NAMES = ["ag"]

_KEYS = {
    "type": "type",
    "description": "description",
    "properties": "properties",
    "items": "items",
    "required": "required",
    "enum": "enum",
    "pattern": "pattern",
    "minimum": "minimum",
    "maximum": "maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "nullable": "nullable",
    "additionalProperties": "additional_properties",
    "anyOf": "any_of",
    "x-kubernetes-int-or-string": "x_kubernetes_int_or_string",
    "x-kubernetes-preserve-unknown-fields": "x_kubernetes_preserve_unknown_fields",
}


def structural_schema() -> dict[str, Any]:
    """The OpenAPI v3 schema of an AgentGroup, as a Kubernetes structural schema (a dict)."""
    raw = AgentGroupDocument.model_json_schema(by_alias=True)
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["status"] = {
        "type": "object",
        "description": "written by the manager (phase, members, degraded roles)",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    return schema


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1 and len(options) < len(node["anyOf"]):
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            optional = _structural({**options[0], **rest}, defs)
            optional["nullable"] = True
            return optional
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("title", "default", "$defs"):
            continue
        if key == "const":
            out["enum"] = [value]
            out.setdefault("type", "string")
        elif key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value, defs)
        elif key == "anyOf":
            out[key] = [_structural(o, defs) for o in value]
        else:
            out[key] = value
    if "properties" in out:
        out.setdefault("type", "object")
    return out


def _props(schema: dict[str, Any]) -> Any:
    """The schema as the kubernetes client's V1JSONSchemaProps, recursively."""
    from kubernetes.client import V1JSONSchemaProps

    fields: dict[str, Any] = {}
    for key, value in schema.items():
        name = _KEYS[key]
        if key == "properties":
            value = {k: _props(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            # Typed `object` in the client: it takes the JSON form as it is.
            value = _json(_props(value))
        elif key == "anyOf":
            value = [_props(v) for v in value]
        fields[name] = value
    return V1JSONSchemaProps(**fields)


def _json(model: Any) -> Any:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(model)


def agent_group_crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of AgentGroup, as a dict."""
    from kubernetes.client import (
        V1CustomResourceColumnDefinition,
        V1CustomResourceDefinition,
        V1CustomResourceDefinitionNames,
        V1CustomResourceDefinitionSpec,
        V1CustomResourceDefinitionVersion,
        V1CustomResourceSubresources,
        V1CustomResourceValidation,
        V1ObjectMeta,
    )

    crd = V1CustomResourceDefinition(
        api_version="apiextensions.k8s.io/v1",
        kind="CustomResourceDefinition",
        metadata=V1ObjectMeta(name=f"{PLURAL}.{GROUP}"),
        spec=V1CustomResourceDefinitionSpec(
            group=GROUP,
            scope="Namespaced",
            names=V1CustomResourceDefinitionNames(
                kind=GROUP_KIND,
                list_kind=f"{GROUP_KIND}List",
                plural=PLURAL,
                singular=GROUP_KIND.lower(),
                short_names=SHORT_NAMES,
            ),
            versions=[
                V1CustomResourceDefinitionVersion(
                    name=VERSION,
                    served=True,
                    storage=True,
                    subresources=V1CustomResourceSubresources(status={}),
                    additional_printer_columns=[
                        V1CustomResourceColumnDefinition(
                            name="Phase", type="string", json_path=".status.phase"
                        ),
                        V1CustomResourceColumnDefinition(
                            name="Topology", type="string", json_path=".spec.topology"
                        ),
                        V1CustomResourceColumnDefinition(
                            name="Age", type="date", json_path=".metadata.creationTimestamp"
                        ),
                    ],
                )
            ],
        ),
    )
    data: dict[str, Any] = _json(crd)
    # The client (37.x) drops a version's `schema` when serialising (the field is
    # renamed `var_schema` and lost on the way out), so it is put in as JSON.
    validation = V1CustomResourceValidation(open_apiv3_schema=_props(structural_schema()))
    data["spec"]["versions"][0]["schema"] = _json(validation)
    return data

"""The AgentGroup CRD: valid for Kubernetes, and the examples valid against its schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from manager.groups.crd import agent_group_crd
from manager.groups.document import load_group, parse_documents

ROOT = Path(__file__).resolve().parents[4]
EXAMPLES = sorted((ROOT / "configs" / "groups").glob("*"))
GROUPS = [
    p
    for p in EXAMPLES
    if "kind: AgentGroup" in p.read_text() or 'kind = "AgentGroup"' in p.read_text()
]


def documents(path: Path) -> list[dict[str, Any]]:
    return parse_documents(path.read_text(), "toml" if path.suffix == ".toml" else "yaml")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return agent_group_crd()


class TestCrd:
    def test_the_crd_validates_with_kubernetes_validate(self, crd: dict[str, Any]) -> None:
        assert kubernetes_validate.validate(crd, "1.30", strict=True) == "1.30"
        assert crd["metadata"]["name"] == "agentgroups.agenthost.io"
        version = crd["spec"]["versions"][0]
        assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
        spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
        assert spec["properties"]["topology"]["enum"] == ["Hierarchical", "Peer"]
        roles = spec["properties"]["roles"]
        assert (roles["minItems"], roles["maxItems"]) == (2, 16)

    def test_no_schema_node_breaks_the_structural_rules(self, crd: dict[str, Any]) -> None:
        def walk(node: Any) -> None:
            if isinstance(node, dict):
                assert "$ref" not in node and "title" not in node
                assert not ("properties" in node and "additionalProperties" in node)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(crd["spec"]["versions"][0]["schema"])

    @pytest.mark.parametrize("path", GROUPS, ids=[p.name for p in GROUPS])
    def test_each_example_group_validates_against_the_crd_and_the_models(
        self, crd: dict[str, Any], path: Path
    ) -> None:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for raw in documents(path):
            jsonschema.Draft202012Validator(schema).validate(raw)
            load_group(raw)

    def test_a_bad_document_fails_the_crd_schema_too(self, crd: dict[str, Any]) -> None:
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        raw = documents(GROUPS[0])[0]
        raw["spec"]["topology"] = "Star"
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft202012Validator(schema).validate(raw)

    def test_the_crd_prints_as_yaml(self, crd: dict[str, Any]) -> None:
        assert yaml.safe_load(yaml.safe_dump(crd)) == crd

"""Quantity canonicalisation and QoS, as the apiserver writes them back."""

from __future__ import annotations

import pytest

from tests.kubeapi.defaulting import canonical_quantity, qos_class

CANONICAL = [
    ("2048Mi", "2Gi"),
    ("1.5Gi", "1536Mi"),
    ("1000m", "1"),
    ("0.5", "500m"),
    ("1000", "1k"),
    ("1500", "1500"),
    ("2147483648", "2147483648"),
    ("1e3", "1e3"),
    ("100m", "100m"),
    ("512Ki", "512Ki"),
]


@pytest.mark.parametrize(("given", "stored"), CANONICAL, ids=[g for g, _ in CANONICAL])
def test_canonical_quantity(given: str, stored: str) -> None:
    assert canonical_quantity(given) == stored


def test_qos_classes() -> None:
    def spec(resources: dict[str, dict[str, str]]) -> dict[str, object]:
        return {"containers": [{"name": "c", "resources": resources}]}

    both = {"cpu": "1", "memory": "1Gi"}
    assert qos_class(spec({})) == "BestEffort"
    assert qos_class(spec({"requests": both, "limits": both})) == "Guaranteed"
    assert qos_class(spec({"requests": {"cpu": "1"}})) == "Burstable"

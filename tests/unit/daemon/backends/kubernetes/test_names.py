"""Kubernetes name syntax, as the daemon's config and the pod builder check it."""

from __future__ import annotations

import pytest

from daemon.backends.kubernetes.names import (
    dns_label_problem,
    label_key_problem,
    label_value_problem,
    object_name,
    port_name,
)


class TestSyntax:
    @pytest.mark.parametrize("name", ["default", "team-a", "a1"])
    def test_namespaces(self, name: str) -> None:
        assert dns_label_problem(name) is None

    @pytest.mark.parametrize("name", ["Team", "a_b", "-a", "a.", "x" * 64, ""])
    def test_not_namespaces(self, name: str) -> None:
        assert dns_label_problem(name) is not None

    @pytest.mark.parametrize("key", ["app", "kubernetes.io/hostname", "agenthost.agent_id"])
    def test_label_keys(self, key: str) -> None:
        assert label_key_problem(key) is None

    @pytest.mark.parametrize("key", ["", "a b", "Bad_Prefix/x", "x/", "/x"])
    def test_not_label_keys(self, key: str) -> None:
        assert label_key_problem(key) is not None

    @pytest.mark.parametrize(("value", "ok"), [("", True), ("A_b.c", True), ("a-", False)])
    def test_label_values(self, value: str, ok: bool) -> None:
        assert (label_value_problem(value) is None) is ok


class TestDerivedNames:
    def test_object_names_keep_valid_parts_as_they_are(self) -> None:
        assert object_name("agenthost", "abc", "k-1") == "agenthost-abc-k-1"

    def test_object_names_hash_what_they_had_to_change(self) -> None:
        upper, lower = object_name("agenthost", "K_1"), object_name("agenthost", "k-1")
        assert upper.startswith("agenthost-k-1-") and upper != lower

    @pytest.mark.parametrize(
        ("kernel_port", "name"),
        [
            ("http", "http"),
            ("Admin_UI", "admin-ui"),
            ("_x", None),
            ("a__b", None),
            ("p8080", "p8080"),
            ("x" * 16, None),
            ("123", None),
        ],
    )
    def test_port_names(self, kernel_port: str, name: str | None) -> None:
        assert port_name(kernel_port) == name

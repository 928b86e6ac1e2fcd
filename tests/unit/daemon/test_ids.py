"""daemon/ids.py: the id syntax every layer shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.ids import is_valid_id, new_kernel_id
from daemon.state_dir import daemon_identity

VALID = ["a0", "A", "gpu-0", "batch_1", "v1.2", "0", "x" * 63]
INVALID = ["", "-a", "_a", ".a", "a b", "a/b", "a:b", "ä", "x" * 64, "a\n"]


class TestIdSyntax:
    @pytest.mark.parametrize("value", VALID, ids=[*VALID[:-1], "63_chars"])
    def test_valid(self, value: str) -> None:
        assert is_valid_id(value)

    @pytest.mark.parametrize(
        "value",
        INVALID,
        ids=[
            "empty",
            "dash",
            "underscore",
            "dot",
            "space",
            "slash",
            "colon",
            "non_ascii",
            "64_chars",
            "newline",
        ],
    )
    def test_invalid(self, value: str) -> None:
        assert not is_valid_id(value)


class TestGeneratedIds:
    def test_new_kernel_ids_are_valid_and_unique(self) -> None:
        ids = {new_kernel_id() for _ in range(1000)}
        assert len(ids) == 1000
        assert all(is_valid_id(i) and i.startswith("k-") for i in ids)

    def test_daemon_identity_is_stable_per_state_dir(self, tmp_path: Path) -> None:
        a, b = tmp_path / "a", tmp_path / "b"
        assert daemon_identity(a) == daemon_identity(tmp_path / "x" / ".." / "a")
        assert daemon_identity(a) != daemon_identity(b)
        assert len(daemon_identity(a)) == 10 and is_valid_id(daemon_identity(a))

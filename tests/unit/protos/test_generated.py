"""The committed protocol modules are exactly what scripts/gen_protos.py produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


class TestGeneratedStubs:
    def test_committed_stubs_match_a_fresh_generation(self, tmp_path: Path) -> None:
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(tmp_path)],
            check=True,
        )
        fresh = sorted(p.name for p in (tmp_path / "protos").iterdir())
        assert fresh, "protoc produced nothing"
        stale = [
            name
            for name in fresh
            if (tmp_path / "protos" / name).read_bytes() != (ROOT / "protos" / name).read_bytes()
        ]
        assert stale == [], f"stale generated files {stale}: run python scripts/gen_protos.py"

    def test_every_per_agent_request_starts_with_agent_id(self) -> None:
        from protos import agent_pb2

        service = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]
        node_level = {"ListAgents"}
        for method in service.methods:
            if method.name in node_level:
                continue
            field = method.input_type.fields_by_number.get(1)
            assert field is not None and field.name == "agent_id", method.name
            assert field.type == field.TYPE_STRING

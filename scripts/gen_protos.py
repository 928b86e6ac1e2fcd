"""Regenerate protos/*_pb2.py, *_pb2_grpc.py and *_pb2.pyi from protos/*.proto.

Usage: python scripts/gen_protos.py [--out DIR]
With --out the modules are written under DIR/protos instead (the staleness test uses it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path) -> None:
    """Run protoc over every protos/*.proto, writing the modules under out/protos."""
    sources = sorted(str(p) for p in (ROOT / "protos").glob("*.proto"))
    (out / "protos").mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())

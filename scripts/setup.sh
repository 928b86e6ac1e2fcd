#!/usr/bin/env bash
# Create .venv and install agenthost with its development tools (idempotent), and
# build the local backend's native launcher with the system C compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "agenthost needs Python >= 3.11 (found $("$PYTHON" --version))" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
bash scripts/build-launcher.sh

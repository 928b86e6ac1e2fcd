#!/usr/bin/env bash
# Build the local backend's native launcher (daemon/backends/local/agenthost-launch)
# from launcher.c with the system C compiler; skip when the build is current.
# Without a compiler it says so and succeeds: local kernels then start through the
# Python launcher (launch.py), about 15-50 ms slower each; the daemon logs that too.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=daemon/backends/local/launcher.c
BIN=daemon/backends/local/agenthost-launch
CC="${CC:-cc}"
SUM="$(sha256sum "$SRC" | cut -d' ' -f1)"
if [ -x "$BIN" ] && [ "$("$BIN" -V 2>/dev/null | cut -d' ' -f3)" = "$SUM" ]; then
  exit 0
fi
if ! command -v "$CC" >/dev/null 2>&1; then
  echo "setup: no C compiler ($CC): local kernels will start through the slower Python" \
       "launcher; install one (e.g. apt-get install gcc) and run bash scripts/setup.sh again" >&2
  exit 0
fi
FLAGS=(-O2 -s -Wall -Wextra -Werror "-DAGENTHOST_LAUNCHER_SOURCE=\"$SUM\"" -o "$BIN.tmp" "$SRC")
# Static when the C library allows it: no dynamic loader at every kernel start.
if ! "$CC" -static "${FLAGS[@]}" 2>/dev/null; then
  "$CC" "${FLAGS[@]}"
fi
mv "$BIN.tmp" "$BIN"
echo "setup: built $BIN"

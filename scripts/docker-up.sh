#!/usr/bin/env bash
# Make a Docker engine and the docker tests' image available on this machine.
#
#   1. installs Debian's docker.io when dockerd is missing;
#   2. starts dockerd in the background (live-restore, so kernels outlive an engine
#      restart) when no engine answers, logging to $AGENTHOST_DOCKERD_LOG, and waits
#      (bounded) until `docker info` works;
#   3. builds the test image ($AGENTHOST_TEST_IMAGE) locally when it is missing: no
#      registry is reachable, so a Debian minbase root filesystem with python3 is made
#      by debootstrap (cached as a tarball, so it is built once) and `docker import`ed.
#
# Outside CI, trouble is reported and the script exits 0: the docker tests then skip
# with a reason. Under CI=true a missing engine or image fails the run.
# Running it again is harmless; the docker tests run it to bring a stopped engine back.
set -uo pipefail

IMAGE="${AGENTHOST_TEST_IMAGE:-agenthost-test-python:latest}"
CACHE_DIR="${AGENTHOST_CACHE_DIR:-/var/cache/agenthost}"
LOG="${AGENTHOST_DOCKERD_LOG:-/var/log/agenthost-dockerd.log}"
MIRROR="${AGENTHOST_DEBIAN_MIRROR:-}"
SUITE=bookworm
WAIT_SECONDS="${AGENTHOST_DOCKERD_WAIT:-60}"
DOCKER_PIDFILE=/var/run/docker.pid
# Names the dockerd this script started: only that engine may be stopped by the tests.
OUR_PIDFILE=/var/run/agenthost-dockerd.pid

say() { echo "docker-up: $*" >&2; }

give_up() {
  say "$*"
  if [ "${CI:-}" = "true" ]; then
    say "CI=true: the docker tests need an engine; failing the run"
    exit 1
  fi
  say "the docker tests will be skipped"
  exit 0
}

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

# True when pid names a process that runs (a zombie does not count: PID 1 of some
# sandboxes never reaps, and dockerd takes a zombie's pid file for a live daemon).
running() {
  local pid="$1" state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state="$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)"
  [ "$state" != "Z" ] && [ "$state" != "X" ]
}

remove_stale_pidfile() {
  local file="$1"
  if [ -f "$file" ] && ! running "$(cat "$file" 2>/dev/null)"; then
    rm -f "$file"
  fi
}

apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

start_engine() {
  if [ "$(id -u)" != 0 ]; then
    give_up "no Docker engine answers and starting dockerd needs root"
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd is missing; installing Debian's docker.io"
    apt_install docker.io || give_up "apt-get install docker.io failed"
  fi
  if ! command -v docker >/dev/null 2>&1; then
    give_up "dockerd is installed but the docker client is missing"
  fi
  remove_stale_pidfile "$DOCKER_PIDFILE"
  remove_stale_pidfile /var/run/docker/containerd/containerd.pid
  mkdir -p "$(dirname "$LOG")"
  say "starting dockerd (log: $LOG)"
  setsid nohup dockerd --live-restore --pidfile "$DOCKER_PIDFILE" \
    </dev/null >>"$LOG" 2>&1 &
  local waited=0
  until engine_answers; do
    if [ "$waited" -ge "$WAIT_SECONDS" ]; then
      tail -n 20 "$LOG" >&2
      give_up "dockerd did not answer within ${WAIT_SECONDS}s (log: $LOG)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  cp "$DOCKER_PIDFILE" "$OUR_PIDFILE"
  say "dockerd is up (pid $(cat "$DOCKER_PIDFILE"))"
}

# The Debian mirror apt already uses on this machine (deb822 or one-line sources).
apt_mirror() {
  local uri
  uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
    | grep -v -- '-security' | head -n1)"
  if [ -z "$uri" ]; then
    uri="$(grep -hsE '^deb [^[]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
      | awk '{print $2}' | grep -v -- '-security' | head -n1)"
  fi
  echo "$uri"
}

build_image() {
  local tarball="$CACHE_DIR/rootfs-python-$SUITE.tar"
  if [ -z "$MIRROR" ]; then
    MIRROR="$(apt_mirror)"
  fi
  mkdir -p "$CACHE_DIR"
  if [ ! -s "$tarball" ]; then
    if ! command -v debootstrap >/dev/null 2>&1; then
      say "installing debootstrap"
      apt_install debootstrap || give_up "apt-get install debootstrap failed"
    fi
    local root
    root="$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")"
    say "building a $SUITE minbase root filesystem with python3 (log: $CACHE_DIR/debootstrap.log)"
    [ -n "$MIRROR" ] || give_up "no Debian mirror in apt's sources; set AGENTHOST_DEBIAN_MIRROR"
    if ! debootstrap --variant=minbase --include=python3-minimal "$SUITE" "$root" "$MIRROR" \
      >"$CACHE_DIR/debootstrap.log" 2>&1; then
      rm -rf "$root"
      tail -n 20 "$CACHE_DIR/debootstrap.log" >&2
      give_up "debootstrap failed; cannot build $IMAGE"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
      "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    tar -C "$root" -c . >"$tarball.tmp" && mv "$tarball.tmp" "$tarball"
    rm -rf "$root"
  fi
  say "importing $IMAGE from $tarball"
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    - "$IMAGE" <"$tarball" >/dev/null || give_up "docker import of $IMAGE failed"
}

if ! engine_answers; then
  start_engine
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  build_image
fi
say "engine answers; image $IMAGE is present"

"""Every bound on what a caller may send, named once.

The edge validator (`common/validation.py`) checks requests against these before
any work starts, on the daemon and on the manager alike; a refusal names the limit.
Sizes are chosen so that a request that passes can always be carried out (argv and
env fit the kernel's exec; a log reply fits one gRPC message).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_ID_LENGTH = 63  # agent, kernel, network, scaling group, token and template names
MAX_BATCH = 128  # kernel specs per CreateKernels (the daemon's default max_batch)
MAX_ARGV_ITEMS = 4096
MAX_ARGV_BYTES = 128 << 10  # the whole argv, each argument counted with its NUL
MAX_ENV_ENTRIES = 1024
MAX_ENV_BYTES = 128 << 10  # every KEY=VALUE with its NUL
MAX_PORTS = 64
MAX_LABELS = 64
MAX_LABEL_KEY = 253
MAX_LABEL_VALUE = 256
MAX_NETWORKS = 16
MAX_IMAGE = 512
MAX_DEVICE_KINDS = 16
MAX_DEVICES = 64  # of one kind per kernel
MAX_CORES = 4096  # cores one kernel may ask for, and the highest core id
MIN_MEMORY = 6 << 20  # a reservation below this could never run a kernel (docker's floor)
MAX_MEMORY = 1 << 50
MAX_STDIN = 1 << 20  # Execute's stdin travels in one message
MAX_TIMEOUT = 7 * 86400.0  # seconds: an Execute's timeout
MAX_GRACE = 3600.0  # seconds between SIGTERM and SIGKILL
MAX_TAIL_LINES = 1_000_000
DEFAULT_LOG_BYTES = 1 << 20  # GetKernelLogs without max_bytes
MAX_LOG_BYTES = 3 << 20  # GetKernelLogs at most (a reply fits one 4 MiB message)
DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 1000
MAX_PAGE_TOKEN = 512
MAX_PAGE_BYTES = 3 << 20  # a listing's page stops short of this (a reply fits 4 MiB)
MAX_STATES = 8
MAX_AGENTS_PER_DAEMON = 10_000
MAX_KERNELS_PER_MESSAGE = 2000  # registration and heartbeat chunks (well under 4 MiB)
MAX_SCALING_GROUPS = 64  # of one token
MAX_DELEGATED_KERNELS = 10_000  # a delegating kernel's --delegate-kernels
MAX_DURATION = 10 * 365 * 86400.0  # seconds: token lifetimes, retention, pruning
QUOTE = 32  # characters of a refused value shown back


@dataclass(frozen=True)
class Limits:
    """The bounds a server applies; the configurable ones come from its config."""

    max_batch: int = MAX_BATCH

"""Logging set-up of every agenthost process: one format, to stderr.

Each line of a call's work carries its caller (`[token:alice]`, `[manager/m1]`).
"""

from __future__ import annotations

import logging
import sys

from common.principal import bind_caller_to_log_records

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(caller)s: %(message)s"


def setup_logging(level: str) -> None:
    """Log at level (one of LOG_LEVELS) to stderr with time, level and logger name."""
    bind_caller_to_log_records()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])

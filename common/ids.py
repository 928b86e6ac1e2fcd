"""The identifiers every layer shares: AgentId and KernelId, and their syntax."""

from __future__ import annotations

import re
import uuid
from typing import NewType

AgentId = NewType("AgentId", str)
KernelId = NewType("KernelId", str)

# Ids end up in file names, cgroup names, container labels and pod names, so
# they keep to a portable alphabet.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_ID_RE = re.compile(ID_PATTERN)
ID_SYNTAX = "1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"


def is_valid_id(value: str) -> bool:
    """True when value may be used as an agent, kernel or network id."""
    # fullmatch: with match, "$" also accepts a trailing newline ("k1\n").
    return bool(_ID_RE.fullmatch(value))


def new_kernel_id() -> KernelId:
    """A fresh, random kernel id."""
    return KernelId("k-" + uuid.uuid4().hex[:12])

"""The per-user agenthost directory, where the CLI finds its credentials.

`$AGENTHOST_HOME` (default `~/.agenthost`): `pki/` holds the cluster CA and the
certificates `agenthost up` makes, `token` the bearer token client commands send
when none is given by `--token` or `AGENTHOST_TOKEN`. Knows paths only.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "AGENTHOST_HOME"


def agenthost_home() -> Path:
    """`$AGENTHOST_HOME`, else `~/.agenthost`."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured) if configured else Path.home() / ".agenthost"


def pki_dir() -> Path:
    """Where the cluster CA and certificates live by default."""
    return agenthost_home() / "pki"


def token_file() -> Path:
    """The default bearer token of client commands."""
    return agenthost_home() / "token"

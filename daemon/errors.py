"""Domain errors of the daemon alone (the shared ones are in `common/errors.py`).

Nothing here knows gRPC: `common/status.py` gives each its code through its base.
"""

from __future__ import annotations

from common.errors import FailedPrecondition


class CheckpointError(FailedPrecondition):
    """An agent's state file cannot be used; the message says what to do."""

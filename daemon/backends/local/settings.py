"""The local backend's settings model, and nothing else.

Empty for now: the local backend has no options of its own. It exists so that
every backend is built from its own settings model (never the agent's whole
config), and so that an option the local backend gains has one place to go.
The agent config has no `local` table yet: adding the key would change what a
config file accepts, so it comes with the first field. Imports only pydantic and
`common/`.
"""

from __future__ import annotations

from common.config import StrictModel


class LocalSettings(StrictModel):
    """Settings of an agent whose backend is local (none yet)."""

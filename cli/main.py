"""The root `agenthost` group: the daemon's, the manager's and the shared commands.

Every option can also come from an environment variable with the `AGENTHOST_`
prefix (e.g. AGENTHOST_DAEMON_CONFIG for `agenthost daemon --config`).
"""

from __future__ import annotations

import click

from cli.audit import COMMANDS as AUDIT_COMMANDS
from cli.certs import COMMANDS as CERT_COMMANDS
from cli.config import COMMANDS as CONFIG_COMMANDS
from cli.deploy import COMMANDS as DEPLOY_COMMANDS
from cli.up import up_command
from daemon.cli import COMMANDS as DAEMON_COMMANDS
from manager.cli import COMMANDS as MANAGER_COMMANDS


@click.group(
    context_settings={"auto_envvar_prefix": "AGENTHOST", "help_option_names": ["-h", "--help"]}
)
def main() -> None:
    """agenthost: one node daemon hosting several agents, each keyed by agent_id.

    \b
    Quick start (a manager plus a daemon with three local agents):
      agenthost up
      agenthost kernel create -- sleep 600
      agenthost kernel ls
    Validate a config:         agenthost config check FILE
    Read the audit trail:      agenthost audit tail --config FILE

    Every option can also come from an environment variable named
    AGENTHOST_<COMMAND>_<OPTION> (e.g. AGENTHOST_DAEMON_CONFIG); client commands
    read the manager address from AGENTHOST_MANAGER.
    """


for _command in (
    *DAEMON_COMMANDS,
    *CONFIG_COMMANDS,
    up_command,
    *MANAGER_COMMANDS,
    *CERT_COMMANDS,
    *DEPLOY_COMMANDS,
    *AUDIT_COMMANDS,
):
    main.add_command(_command)

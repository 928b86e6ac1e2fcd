"""The manager's commands: `agenthost manager`, `agents`, `kernel`, `token`, `template`,
`group`.

One module per command group; `connection.py` is how every client command
reaches the manager. `cli/main.py` attaches `COMMANDS` to the root group.
"""

from manager.cli.agents import agents_command
from manager.cli.groups import group_command
from manager.cli.kernels import kernel_group
from manager.cli.server import manager_command
from manager.cli.templates import template_group
from manager.cli.tokens import token_group

COMMANDS = (
    manager_command,
    agents_command,
    kernel_group,
    token_group,
    template_group,
    group_command,
)

"""The `agenthost` command: the root group composing the daemon's and the manager's
commands, and `agenthost up`, the one place that starts both in one process."""

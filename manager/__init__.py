"""The agenthost manager: knows every agent of every daemon and routes by agent_id."""

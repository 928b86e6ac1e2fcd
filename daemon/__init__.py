"""The agenthost node daemon: several agents, one process, one gRPC port."""

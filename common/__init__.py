"""What the daemon and the manager share.

Domain errors and the one status-code table, the error-mapping interceptor,
gRPC server set-up and stop signals, id rules, TOML reading and error wording,
host:port parsing, text formatting and logging set-up. Nothing here imports
`daemon` or `manager`.
"""

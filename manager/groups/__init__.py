"""Agent groups: roles of kernels started together across agents and daemons.

- `document`: the YAML/TOML document (kind AgentGroup, and KernelTemplate) as
  pydantic models, and its limits; the CRD's schema is generated from them (`crd`).
- `plan`: validation beyond shapes (coordinator, dependencies, cycles, templates,
  scopes) and the resolved plan of roles and waves (`waves`: Kahn's algorithm).
- `discovery`: the env and labels every member gets, and the topology.
- `readiness`: port and exec probes, run from the manager.
- `record`: a group as stored (document, resolved roles, status).
- `placement`: members placed by the scheduler and created in batches per agent.
- `runner`: one group's life (waves, rollback, healing, timeouts, ending);
  `controller`: every group, reacting to the kernel table's changes.

This package file imports nothing, so that `manager.store` can use `record`
without pulling in the controller.
"""

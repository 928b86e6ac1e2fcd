"""The kubernetes backend: a kernel is a pod in the agent's namespace, bound to this node.

Only its settings exist so far (`settings`: the agent's `kubernetes` table, which
the config validates); there are no verbs yet, so the import table has no entry
for it and a daemon whose agent names it refuses to start and says so. Importing
this package imports nothing else, and never the kubernetes client.
"""

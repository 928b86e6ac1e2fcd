"""Ownership by label, liveness, and deleting the pods nobody owns.

Every kernel pod carries `agenthost.daemon` (the daemon identity),
`agenthost.agent_id` and `agenthost.kernel_id`. A pod is this agent's only when
the first two match exactly and, for an agent bound to a node, it is on that
node: pods of other agents, of other daemons or of the same daemon identity on
another node (a DaemonSet runs one configuration everywhere) are never touched,
and a handle whose pod is no longer this agent's is not alive. Knows labels and
the API; nothing of the agent's checkpoint beyond the handle and the set of
kernel ids it is given.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from common.ids import KernelId
from daemon.backends.base import LABEL_AGENT_ID, LABEL_DAEMON, LABEL_KERNEL_ID
from daemon.backends.kubernetes.api import JsonObject, KubeApi
from daemon.backends.kubernetes.handle import PodHandle
from daemon.backends.kubernetes.podstatus import exit_of, is_terminating


@dataclass(frozen=True)
class Owner:
    """Whose pods these are: a daemon identity, an agent and (when bound) a node."""

    identity: str
    agent_id: str
    node_name: str | None

    @property
    def label_selector(self) -> str:
        """The label selector of this agent's pods."""
        return f"{LABEL_DAEMON}={self.identity},{LABEL_AGENT_ID}={self.agent_id}"

    @property
    def field_selector(self) -> str | None:
        """The field selector of pods on this agent's node (None: any node)."""
        return f"spec.nodeName={self.node_name}" if self.node_name else None

    def owns(self, pod: JsonObject) -> bool:
        """True when pod is this daemon's and this agent's (and on its node)."""
        labels: Mapping[str, str] = pod.get("metadata", {}).get("labels") or {}
        if labels.get(LABEL_DAEMON) != self.identity or labels.get(LABEL_AGENT_ID) != self.agent_id:
            return False
        return self.node_name is None or pod.get("spec", {}).get("nodeName") == self.node_name


async def is_alive(api: KubeApi, handle: PodHandle, owner: Owner) -> bool:
    """True when the handle's pod exists, is this agent's, runs and is not being deleted."""
    pod = await api.get_pod(handle.name)
    if pod is None or pod.get("metadata", {}).get("uid") != handle.uid or not owner.owns(pod):
        return False
    return exit_of(pod) is None and not is_terminating(pod)


async def reap_dangling(api: KubeApi, owner: Owner, known: Container[KernelId]) -> list[KernelId]:
    """Delete this agent's pods whose kernel id is not in known; return those ids."""
    reaped: set[KernelId] = set()
    for pod in await api.list_pods(owner.label_selector, owner.field_selector):
        if not owner.owns(pod):  # the server filtered already; this guards the rule
            continue
        meta = pod["metadata"]
        kernel_id = KernelId((meta.get("labels") or {}).get(LABEL_KERNEL_ID, ""))
        if kernel_id in known:
            continue
        await api.delete_pod(meta["name"], 0, uid=meta.get("uid"))
        reaped.add(kernel_id)
    return sorted(reaped)

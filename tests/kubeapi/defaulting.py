"""What the apiserver fills in on a created pod: defaults, canonical quantities, QoS class.

A backend that reads its own pods back sees these, not what it sent: `restartPolicy:
Always`, `imagePullPolicy` derived from the image tag, `requests` copied from `limits`,
`2048Mi` written back as `2Gi`, `1000m` as `1`. Reproducing that here makes a backend
that compares sent and stored specs fail here as it would against a cluster.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

_BINARY = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)]
_DECIMAL = [
    ("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3), ("", 0),
    ("m", -3), ("u", -6), ("n", -9),
]  # fmt: skip


def quantity_value(raw: Any) -> Decimal:
    """A quantity (`"500m"`, `"2Gi"`, `3`) as a Decimal; raises ValueError when malformed."""
    value: Decimal = parse_quantity(raw)  # type: ignore[no-untyped-call]
    return Decimal(value)


def canonical_quantity(raw: str | int | float) -> str:
    """The apiserver's canonical form of a quantity (`2048Mi` -> `2Gi`, `0.5` -> `500m`)."""
    text = str(raw)
    value = quantity_value(text)
    binary = text.endswith("i")
    exponent_form = any(ch in text for ch in "eE") and not binary
    # Anything finer than a nano-unit is rounded up, as resource.Quantity does.
    value = (value * Decimal(10) ** 9).to_integral_value(ROUND_CEILING) / Decimal(10) ** 9
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    if binary and magnitude == magnitude.to_integral_value() and magnitude >= 1024:
        whole = int(magnitude)
        for suffix, shift in _BINARY:
            if whole % (1 << shift) == 0:
                return f"{sign}{whole >> shift}{suffix}"
    for suffix, power in _DECIMAL:
        scaled = magnitude / Decimal(10) ** power
        if scaled == scaled.to_integral_value():
            if exponent_form:
                return f"{sign}{int(scaled)}" + (f"e{power}" if power else "")
            return f"{sign}{int(scaled)}{suffix}"
    return f"{sign}{magnitude}"  # unreachable after nano rounding


def _canonical_map(values: dict[str, Any]) -> dict[str, str]:
    return {name: canonical_quantity(q) for name, q in values.items()}


def _default_container(c: dict[str, Any]) -> None:
    image = c.get("image", "")
    tag = image.rsplit("/", 1)[-1]
    if "imagePullPolicy" not in c:
        latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
        c["imagePullPolicy"] = "Always" if latest else "IfNotPresent"
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    resources = c.setdefault("resources", {})
    limits = resources.get("limits")
    if limits:
        resources["limits"] = _canonical_map(limits)
        requests = resources.setdefault("requests", {})
        for name, q in resources["limits"].items():
            requests.setdefault(name, q)
    if resources.get("requests"):
        resources["requests"] = _canonical_map(resources["requests"])
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef")
        if ref is not None:
            ref.setdefault("apiVersion", "v1")


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, from the (defaulted) container resources."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        requests = res.get("requests") or {}
        limits = res.get("limits") or {}
        if requests or limits:
            any_set = True
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name) != limits[name]:
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def apply_pod_defaults(pod: dict[str, Any]) -> None:
    """Fill in, in place, the spec defaults the apiserver adds to every created pod."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    spec["serviceAccountName"] = account
    spec["serviceAccount"] = account
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        _default_container(c)
    if spec.get("overhead"):
        spec["overhead"] = _canonical_map(spec["overhead"])

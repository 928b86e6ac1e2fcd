"""Kubernetes name syntax: which strings may be namespaces, object names, labels, port names.

The apiserver refuses a pod whose name, labels or port names break these rules;
checking them here lets the daemon's config (namespace, node selector) fail at
`config check` with a message naming the key, and lets the pod spec builder
turn agent and kernel ids into names the apiserver accepts. Pure and
dependency-free (the daemon's config imports it whatever the agents' backends):
never the kubernetes client.
"""

from __future__ import annotations

import hashlib
import re

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
PORT_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

DNS_LABEL_SYNTAX = (
    "at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)
DNS_SUBDOMAIN_SYNTAX = (
    "at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
)
LABEL_VALUE_SYNTAX = (
    "at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)
LABEL_KEY_SYNTAX = "an optional DNS subdomain prefix and '/', then a name: " + LABEL_VALUE_SYNTAX


def dns_label_problem(name: str) -> str | None:
    """Why name cannot be a namespace (a DNS-1123 label), or None."""
    if len(name) > 63 or not DNS_LABEL.fullmatch(name):
        return f"{name!r} is not a DNS label: {DNS_LABEL_SYNTAX}"
    return None


def dns_subdomain_problem(name: str) -> str | None:
    """Why name cannot be an object or node name (a DNS-1123 subdomain), or None."""
    if len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        return f"{name!r} is not a DNS subdomain: {DNS_SUBDOMAIN_SYNTAX}"
    return None


def label_value_problem(value: str) -> str | None:
    """Why value cannot be a label value, or None (the empty value is allowed)."""
    if value and (len(value) > 63 or not LABEL_NAME.fullmatch(value)):
        return f"{value!r} is not a label value: {LABEL_VALUE_SYNTAX}"
    return None


def label_key_problem(key: str) -> str | None:
    """Why key cannot be a label key, or None."""
    prefix, slash, name = key.rpartition("/")
    if (
        (slash and (not prefix or dns_subdomain_problem(prefix)))
        or len(name) > 63
        or not LABEL_NAME.fullmatch(name)
    ):
        return f"{key!r} is not a label key: {LABEL_KEY_SYNTAX}"
    return None


def object_name(*parts: str) -> str:
    """A DNS-1123 subdomain made of parts joined by '-', stable for the same parts.

    Lowercased, with every character but letters, digits and '-' turned into
    '-'; when that changed anything (two ids differing only in case or '_' would
    collide) a short hash of the original parts is appended.
    """
    original = "-".join(parts)
    cleaned = re.sub(r"[^a-z0-9-]", "-", original.lower()).strip("-")
    if cleaned != original:
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:8]
        cleaned = f"{cleaned[:240]}-{digest}".lstrip("-")
    return cleaned


def port_name(name: str) -> str | None:
    """A kernel port's name as a container port name (IANA_SVC_NAME), or None when it has none.

    Kernel port names (letters, digits, '_') are lowercased with '_' as '-'; one
    that still breaks the rule (over 15 characters, no letter, '-' at an end or
    twice in a row) is left unnamed: the name is a label, the host port is what counts.
    """
    candidate = name.lower().replace("_", "-")
    if (
        len(candidate) > 15
        or not PORT_NAME.fullmatch(candidate)
        or "--" in candidate
        or not re.search("[a-z]", candidate)
    ):
        return None
    return candidate

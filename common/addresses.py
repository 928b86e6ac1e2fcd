"""`host:port` addresses: the one check every config and server uses."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator


def check_host_port(value: str) -> str:
    """Return value if it is host:port (port 0-65535), else raise ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'{value!r} is not host:port (e.g. "127.0.0.1:6001")')
    return value


def host_of(address: str) -> str:
    """The host part of host:port, without IPv6 brackets."""
    return address.rpartition(":")[0].strip("[]")


def port_of(address: str) -> int:
    """The port of host:port."""
    return int(address.rpartition(":")[2])


def same_port_problem(key: str, address: str, others: dict[str, str | None]) -> str | None:
    """Why address (of key) cannot be bound beside the other listen addresses of the same
    process: it repeats one's fixed port. None when it does not."""
    port = port_of(address)
    for other_key, other in others.items():
        if other is not None and port and port_of(other) == port:
            return f"{key}: port {port} is {other_key}'s too; give each its own port"
    return None


def is_loopback(address: str) -> bool:
    """True when host:port names this host's loopback interface."""
    host = host_of(address)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_refusal(address: str, server: str) -> str | None:
    """Why a plaintext server (insecure = true) may not listen on address, or None when
    it may (a loopback address). Configs refuse such a listen address already; this is
    for an address given on the command line (--listen)."""
    if is_loopback(address):
        return None
    return (
        f"cannot listen on {address}: a plaintext {server} (insecure = true) listens on "
        "a loopback address only"
    )


HostPort = Annotated[str, AfterValidator(check_host_port)]
"""A `host:port` address (port 0: any free port); every config's addresses use it."""

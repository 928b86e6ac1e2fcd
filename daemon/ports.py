"""`PortPool`: the host ports of one agent's range, handed to kernels by name.

A port is given out only when no kernel of the agent holds it and nothing else on
the host has it bound. The agent's state (`daemon/state.py`) keeps the pool in
step with the kernel records. Knows nothing of agents' other resources, files or
backends.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping

from common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from common.ids import KernelId


def port_is_free_on_host(port: int) -> bool:
    """True when a TCP socket can bind port on every address right now."""
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                probe.bind((address, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (97, 99):  # no IPv6 on this host
                continue
            return False
    return True


class PortPool:
    """Ports of the inclusive range [start, end], held by kernels of one agent."""

    def __init__(
        self,
        start: int,
        end: int,
        is_free: Callable[[int], bool] = port_is_free_on_host,
    ) -> None:
        self.start = start
        self.end = end
        self._is_free = is_free
        self._held: dict[KernelId, dict[str, int]] = {}
        self._next = start

    @property
    def size(self) -> int:
        """How many ports the range has."""
        return self.end - self.start + 1

    def in_use(self) -> set[int]:
        """Every port held by a kernel of this agent."""
        return {p for ports in self._held.values() for p in ports.values()}

    def allocate(
        self,
        kernel_id: KernelId,
        names: Iterable[str],
        requested: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Give kernel_id one free port per name, or raise and take nothing.

        requested names the host port some names ask for (a caller that must know
        the address before the kernel exists, e.g. the manager starting peers).
        """
        names = list(names)
        if len(set(names)) != len(names):
            raise InvalidArgument(f"port names {names} repeat a name")
        if kernel_id in self._held:
            raise InvalidArgument(f"kernel {kernel_id!r} already holds ports")
        asked = self._check_requested(names, requested or {})
        if asked:
            names = [n for n in names if n not in asked]
        if not names:
            self._held[kernel_id] = dict(asked)
            return dict(asked)
        if len(names) > self.size:
            raise FailedPrecondition(
                f"{len(names)} ports requested but the agent's port range "
                f"{self.start}-{self.end} has {self.size}"
            )
        taken = self.in_use() | set(asked.values())
        chosen: list[int] = []
        # Round-robin from the last handed-out port, so a port just released
        # (possibly still in TIME_WAIT for clients) is not reused at once.
        for offset in range(self.size):
            port = self.start + (self._next - self.start + offset) % self.size
            if port in taken or not self._is_free(port):
                continue
            chosen.append(port)
            if len(chosen) == len(names):
                self._next = port + 1 if port < self.end else self.start
                break
        else:
            raise ResourceExhausted(
                f"port range {self.start}-{self.end} is exhausted: {len(names)} ports requested, "
                f"{len(chosen)} free ({len(taken)} held by the agent's kernels, "
                f"{self.size - len(taken) - len(chosen)} bound by other processes)"
            )
        ports = {**asked, **dict(zip(names, chosen, strict=True))}
        self._held[kernel_id] = ports
        return ports

    def _check_requested(self, names: list[str], requested: Mapping[str, int]) -> dict[str, int]:
        """The requested ports, each in the range, held by no kernel and free on the host."""
        asked = {name: port for name, port in requested.items() if port}
        if not asked:
            return {}
        taken = self.in_use()
        if len(set(asked.values())) != len(asked):
            raise InvalidArgument(f"host ports {sorted(asked.values())} repeat a port")
        for name, port in asked.items():
            if name not in names:
                raise InvalidArgument(f"host port {port} is asked for an unknown port {name!r}")
            if not self.start <= port <= self.end:
                raise InvalidArgument(
                    f"port {name!r}: host port {port} is outside the agent's port range "
                    f"{self.start}-{self.end}"
                )
            if port in taken or not self._is_free(port):
                raise ResourceExhausted(
                    f"port {name!r}: host port {port} is taken "
                    f"({'by a kernel of the agent' if port in taken else 'bound on the host'})"
                )
        return asked

    def restore(self, kernel_id: KernelId, ports: Mapping[str, int]) -> None:
        """Record ports read back from a checkpoint (a re-adopted kernel)."""
        self._held[kernel_id] = dict(ports)

    def release(self, kernel_id: KernelId) -> None:
        """Return every port kernel_id holds; releasing twice is harmless."""
        self._held.pop(kernel_id, None)

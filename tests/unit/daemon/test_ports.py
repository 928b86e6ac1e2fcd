"""daemon/ports.py: the port pool of one agent's range."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument, ResourceExhausted
from common.ids import KernelId
from daemon.ports import PortPool, port_is_free_on_host


def free_everywhere(port: int) -> bool:
    return True


def k(name: str) -> KernelId:
    return KernelId(name)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on a port the kernel chose (something else on the host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


class TestPortPool:
    def test_gives_one_unique_port_per_name_within_the_range(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        ports = pool.allocate(k("k1"), ["http", "ssh", "jupyter"])
        assert list(ports) == ["http", "ssh", "jupyter"]
        assert len(set(ports.values())) == 3
        assert all(30000 <= p <= 30009 for p in ports.values())
        assert pool.in_use() == set(ports.values())

    def test_kernels_never_share_a_port(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        a = pool.allocate(k("k1"), ["a", "b", "c", "d", "e"])
        b = pool.allocate(k("k2"), ["a", "b", "c", "d", "e"])
        assert set(a.values()).isdisjoint(b.values())
        assert pool.in_use() == set(range(30000, 30010))

    def test_skips_ports_bound_by_others(self) -> None:
        pool = PortPool(30000, 30004, is_free=lambda p: p not in (30000, 30002))
        assert pool.allocate(k("k1"), ["a", "b", "c"]) == {"a": 30001, "b": 30003, "c": 30004}

    def test_exhaustion_says_why_and_takes_nothing(self) -> None:
        pool = PortPool(30000, 30003, is_free=lambda p: p != 30003)
        pool.allocate(k("k1"), ["a", "b"])
        with pytest.raises(ResourceExhausted) as info:
            pool.allocate(k("k2"), ["x", "y"])
        assert str(info.value) == (
            "port range 30000-30003 is exhausted: 2 ports requested, 1 free "
            "(2 held by the agent's kernels, 1 bound by other processes)"
        )
        assert pool.in_use() == {30000, 30001}
        assert pool.allocate(k("k2"), ["x"]) == {"x": 30002}

    def test_repeated_names_are_invalid(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        with pytest.raises(InvalidArgument) as info:
            pool.allocate(k("k1"), ["http", "http"])
        assert str(info.value) == "port names ['http', 'http'] repeat a name"
        assert pool.in_use() == set()

    def test_a_kernel_cannot_allocate_twice(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        pool.allocate(k("k1"), ["http"])
        with pytest.raises(InvalidArgument) as info:
            pool.allocate(k("k1"), ["ssh"])
        assert str(info.value) == "kernel 'k1' already holds ports"

    def test_no_names_gives_no_ports(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        assert pool.allocate(k("k1"), []) == {}
        assert pool.in_use() == set()

    def test_release_returns_the_ports_and_twice_is_harmless(self) -> None:
        pool = PortPool(30000, 30001, is_free=free_everywhere)
        pool.allocate(k("k1"), ["a", "b"])
        pool.release(k("k1"))
        pool.release(k("k1"))
        assert pool.in_use() == set()
        assert set(pool.allocate(k("k2"), ["a", "b"]).values()) == {30000, 30001}

    def test_a_released_port_is_not_handed_out_again_at_once(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        first = pool.allocate(k("k1"), ["a"])["a"]
        pool.release(k("k1"))
        assert pool.allocate(k("k2"), ["a"])["a"] != first

    def test_restored_ports_are_held(self) -> None:
        pool = PortPool(30000, 30002, is_free=free_everywhere)
        pool.restore(k("old"), {"http": 30001})
        assert pool.in_use() == {30001}
        assert set(pool.allocate(k("new"), ["a", "b"]).values()) == {30000, 30002}

    def test_size_counts_both_ends(self) -> None:
        assert PortPool(30000, 30099, is_free=free_everywhere).size == 100


class TestRequestedPorts:
    def test_a_requested_host_port_is_given_and_the_rest_picked_around_it(self) -> None:
        pool = PortPool(30000, 30009, is_free=free_everywhere)
        ports = pool.allocate(k("k1"), ["http", "ssh"], {"http": 30000})
        assert ports["http"] == 30000 and ports["ssh"] != 30000
        assert set(ports) == {"http", "ssh"}
        assert pool.in_use() == set(ports.values())

    @pytest.mark.parametrize(
        ("requested", "error", "message"),
        [
            (
                {"http": 30020},
                InvalidArgument,
                "port 'http': host port 30020 is outside the agent's port range 30000-30009",
            ),
            (
                {"http": 30001},
                ResourceExhausted,
                "port 'http': host port 30001 is taken (by a kernel of the agent)",
            ),
            (
                {"http": 30005},
                ResourceExhausted,
                "port 'http': host port 30005 is taken (bound on the host)",
            ),
            ({"web": 30002}, InvalidArgument, "host port 30002 is asked for an unknown port 'web'"),
        ],
        ids=["outside-range", "held-by-a-kernel", "bound-on-host", "unknown-name"],
    )
    def test_a_request_that_cannot_be_met_takes_nothing(
        self, requested: dict[str, int], error: type[Exception], message: str
    ) -> None:
        pool = PortPool(30000, 30009, is_free=lambda p: p != 30005)
        pool.allocate(k("k0"), ["a"], {"a": 30001})
        with pytest.raises(error) as info:
            pool.allocate(k("k1"), ["http"], requested)
        assert str(info.value) == message
        assert pool.in_use() == {30001}


class TestPortsOnTheHost:
    def test_a_port_another_socket_listens_on_is_not_free(self, listener: socket.socket) -> None:
        port = listener.getsockname()[1]
        assert not port_is_free_on_host(port)
        listener.close()
        assert port_is_free_on_host(port)

    def test_pool_skips_a_port_held_by_another_socket(self, listener: socket.socket) -> None:
        port = listener.getsockname()[1]
        pool = PortPool(port, port)
        with pytest.raises(ResourceExhausted) as info:
            pool.allocate(k("k1"), ["http"])
        assert str(info.value) == (
            f"port range {port}-{port} is exhausted: 1 ports requested, 0 free "
            "(0 held by the agent's kernels, 1 bound by other processes)"
        )
        listener.close()
        assert pool.allocate(k("k1"), ["http"]) == {"http": port}

    def test_a_port_held_on_ipv6_only_is_not_free(self) -> None:
        if not socket.has_ipv6:
            pytest.skip("no IPv6 on this host")
        with socket.socket(socket.AF_INET6) as sock:
            try:
                sock.bind(("::1", 0))
            except OSError:
                pytest.skip("no IPv6 loopback on this host")
            sock.listen()
            assert not port_is_free_on_host(sock.getsockname()[1])


# ------------------------------------------------------------ property tests

START, END = 30000, 30015
# (True, n) allocates n named ports for a new kernel; (False, n) releases the n-th kernel.
operations = st.lists(
    st.one_of(
        st.tuples(st.just(True), st.integers(0, 6)),
        st.tuples(st.just(False), st.integers(0, 9)),
    ),
    max_size=40,
)


class TestPortPoolProperties:
    @settings(max_examples=200, deadline=None)
    @given(foreign=st.sets(st.integers(START, END), max_size=6), ops=operations)
    def test_ports_stay_in_range_unique_and_off_foreign_ports(
        self, foreign: set[int], ops: list[tuple[bool, int]]
    ) -> None:
        pool = PortPool(START, END, is_free=lambda p: p not in foreign)
        held: dict[KernelId, dict[str, int]] = {}
        for i, (is_allocate, n) in enumerate(ops):
            if is_allocate:
                free = pool.size - len(foreign) - len(pool.in_use())
                try:
                    ports = pool.allocate(k(f"k{i}"), [f"p{j}" for j in range(n)])
                except ResourceExhausted:
                    assert n > free
                else:
                    assert n <= free
                    held[k(f"k{i}")] = ports
            elif held:
                victim = sorted(held)[n % len(held)]
                pool.release(victim)
                del held[victim]
            everything = [p for ports in held.values() for p in ports.values()]
            assert len(everything) == len(set(everything))
            assert set(everything) == pool.in_use()
            assert all(START <= p <= END and p not in foreign for p in everything)
        for kernel_id in held:
            pool.release(kernel_id)
        assert pool.in_use() == set()

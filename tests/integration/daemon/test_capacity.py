"""Resource slices and port ranges under load, through the real daemon."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from tests.servers import (
    agent_info,
    daemon_config,
    eventually,
    kernels_dir_of,
    running_daemon,
    sleeper,
)

MIB = 1 << 20


def one_agent(first: int, last: int, memory: str = "1000MiB", extra: str = "") -> str:
    return f"""
[[agents]]
id = "a0"
port_range = [{first}, {last}]
resources = {{ memory = "{memory}" }}
{extra}
[[agents]]
id = "a1"
port_range = [{last + 1}, {last + 100}]
resources = {{ memory = "{memory}" }}
"""


class TestConcurrentCreates:
    async def test_fifty_concurrent_creates_on_a_slice_for_ten_give_exactly_ten(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43000, 43099))) as d:

            def spec(i: int) -> pb.KernelSpec:
                return sleeper(
                    f"k{i}",
                    resources=pb.ResourceRequest(memory_bytes=100 * MIB),
                    ports=[pb.ServicePort(name="http")],
                )

            calls = [
                d.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=[spec(i)]))
                for i in range(50)
            ]
            results = await asyncio.gather(*calls, return_exceptions=True)
            created = [r for r in results if not isinstance(r, BaseException)]
            refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
            assert len(created) == 10 and len(refused) == 40
            assert {e.code() for e in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
            info = await agent_info(d.stub, "a0")
            assert info.occupied.memory_bytes == 1000 * MIB and info.occupied.ports == 10
            assert info.kernel_count == 10
            ports = [p for r in created for p in r.kernels[0].ports.values()]
            assert len(set(ports)) == 10 and all(43000 <= p <= 43099 for p in ports)
            other = await agent_info(d.stub, "a1")
            assert other.occupied.memory_bytes == 0 and other.kernel_count == 0

            await asyncio.gather(
                *(
                    d.stub.DestroyKernel(
                        pb.DestroyKernelRequest(agent_id="a0", kernel_id=r.kernels[0].kernel_id)
                    )
                    for r in created
                )
            )
            info = await agent_info(d.stub, "a0")
            assert (info.occupied.memory_bytes, info.occupied.ports, info.kernel_count) == (0, 0, 0)
            assert list(info.occupied.cores) == []

    async def test_batch_is_all_or_nothing_and_returns_what_it_took(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43100, 43199))) as d:
            batch = [
                sleeper(
                    "b1",
                    resources=pb.ResourceRequest(memory_bytes=400 * MIB),
                    ports=[pb.ServicePort(name="a")],
                ),
                sleeper("b2", resources=pb.ResourceRequest(memory_bytes=400 * MIB)),
                sleeper("b3", resources=pb.ResourceRequest(memory_bytes=400 * MIB)),
            ]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=batch))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.value.details() == "400MiB memory requested, 200MiB of 1000MiB free"
            info = await agent_info(d.stub, "a0")
            assert (info.occupied.memory_bytes, info.occupied.ports, info.kernel_count) == (0, 0, 0)
            assert (await d.stub.ListKernels(pb.ListKernelsRequest(agent_id="a0"))).kernels == []

    async def test_a_command_that_cannot_start_undoes_the_whole_batch(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43200, 43299))) as d:
            batch = [
                sleeper(
                    "good",
                    ports=[pb.ServicePort(name="http")],
                    resources=pb.ResourceRequest(memory_bytes=100 * MIB),
                ),
                pb.KernelSpec(kernel_id="bad", command=["/no/such/program"]),
            ]
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(pb.CreateKernelsRequest(agent_id="a0", kernels=batch))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == (
                "kernel 'bad' cannot start: /no/such/program: No such file or directory"
            )
            info = await agent_info(d.stub, "a0")
            assert (info.occupied.memory_bytes, info.occupied.ports, info.kernel_count) == (0, 0, 0)
            workdirs = kernels_dir_of(tmp_path) / "a0"
            assert not workdirs.exists() or list(workdirs.iterdir()) == []

    async def test_a_request_no_slice_could_hold_is_a_failed_precondition(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43300, 43399))) as d:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a0",
                        kernels=[
                            sleeper("big", resources=pb.ResourceRequest(memory_bytes=2000 * MIB))
                        ],
                    )
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == (
                "2000MiB memory requested but the agent's slice has 1000MiB"
            )


@dataclass(frozen=True)
class BadSpec:
    name: str
    spec: pb.KernelSpec
    message: str


BAD_SPECS = [
    BadSpec(
        "env-key-with-equals",
        sleeper("k", env={"A=B": "1"}),
        "kernel 'k': env key 'A=B' is not a valid environment variable name "
        "(non-empty, no '=' and no NUL byte)",
    ),
    BadSpec(
        "empty-env-key",
        sleeper("k", env={"": "1"}),
        "kernel 'k': env key '' is not a valid environment variable name "
        "(non-empty, no '=' and no NUL byte)",
    ),
    BadSpec(
        "port-name-with-space",
        sleeper("k", ports=[pb.ServicePort(name="a b")]),
        "kernel 'k': port name 'a b' is not valid: letters, digits and '_', "
        "not starting with a digit (it becomes PORT_<NAME>)",
    ),
    BadSpec(
        "empty-port-name",
        sleeper("k", ports=[pb.ServicePort(name="")]),
        "kernel 'k': port name '' is not valid: letters, digits and '_', "
        "not starting with a digit (it becomes PORT_<NAME>)",
    ),
    BadSpec(
        "port-names-clash-by-case",
        sleeper("k", ports=[pb.ServicePort(name="http"), pb.ServicePort(name="HTTP")]),
        "kernel 'k': port names 'http' and 'HTTP' both become PORT_HTTP",
    ),
    BadSpec(
        "nul-in-command",
        pb.KernelSpec(kernel_id="k", command=["echo", "a\0b"]),
        "kernel 'k': command contains a NUL byte (in 'a\\x00b')",
    ),
    BadSpec(
        "bad-kernel-id",
        sleeper("no/slash"),
        "kernel_id 'no/slash' is not valid: 1-63 characters of letters, digits, '_', "
        "'.', '-', starting with a letter or digit",
    ),
]


class TestSpecValidation:
    @pytest.mark.parametrize("case", BAD_SPECS, ids=[c.name for c in BAD_SPECS])
    async def test_bad_spec_is_invalid_argument_and_takes_nothing(
        self, tmp_path: Path, case: BadSpec
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43700, 43799))) as d:
            good = sleeper(
                "good",
                ports=[pb.ServicePort(name="p")],
                resources=pb.ResourceRequest(memory_bytes=100 * MIB),
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(agent_id="a0", kernels=[good, case.spec])
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == case.message
            info = await agent_info(d.stub, "a0")
            assert (info.occupied.memory_bytes, info.occupied.ports, info.kernel_count) == (0, 0, 0)

    async def test_negative_destroy_grace_is_invalid(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43800, 43899))) as d:
            await d.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k")])
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.DestroyKernel(
                    pb.DestroyKernelRequest(agent_id="a0", kernel_id="k", grace_seconds=-1)
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details() == (
                "grace_seconds must be a finite number of seconds from 0 to 3600, not -1.0"
            )


class TestPorts:
    async def test_ports_come_from_the_range_unique_and_skip_bound_ones(
        self, tmp_path: Path
    ) -> None:
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 43401))
        holder.listen()
        try:
            async with running_daemon(daemon_config(tmp_path, one_agent(43400, 43405))) as d:
                reply = await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a0",
                        kernels=[
                            sleeper("p", ports=[pb.ServicePort(name=n) for n in ("a", "b", "c")])
                        ],
                    )
                )
                ports = dict(reply.kernels[0].ports)
                assert sorted(ports.values()) == [43400, 43402, 43403]
                more = await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a0",
                        kernels=[sleeper("q", ports=[pb.ServicePort(name="x")])],
                    )
                )
                assert list(more.kernels[0].ports.values()) == [43404]
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await d.stub.CreateKernels(
                        pb.CreateKernelsRequest(
                            agent_id="a0",
                            kernels=[
                                sleeper(
                                    "r", ports=[pb.ServicePort(name="x"), pb.ServicePort(name="y")]
                                )
                            ],
                        )
                    )
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert err.value.details().startswith("port range 43400-43405 is exhausted")
                info = await agent_info(d.stub, "a0")
                assert info.occupied.ports == 4
        finally:
            holder.close()

    async def test_more_ports_than_the_range_holds_is_a_failed_precondition(
        self, tmp_path: Path
    ) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43900, 43901))) as d:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await d.stub.CreateKernels(
                    pb.CreateKernelsRequest(
                        agent_id="a0",
                        kernels=[
                            sleeper("k", ports=[pb.ServicePort(name=n) for n in ("a", "b", "c")])
                        ],
                    )
                )
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == (
                "3 ports requested but the agent's port range 43900-43901 has 2"
            )

    async def test_http_server_kernel_answers_on_its_host_port(self, tmp_path: Path) -> None:
        async with running_daemon(daemon_config(tmp_path, one_agent(43500, 43599))) as d:
            reply = await d.stub.CreateKernels(
                pb.CreateKernelsRequest(
                    agent_id="a1",
                    kernels=[
                        pb.KernelSpec(
                            kernel_id="web",
                            command=[
                                "sh",
                                "-c",
                                'exec python3 -m http.server "$PORT_HTTP" --bind 127.0.0.1',
                            ],
                            ports=[pb.ServicePort(name="http")],
                        )
                    ],
                )
            )
            port = reply.kernels[0].ports["http"]
            assert 43600 <= port <= 43699  # a1's range

            def fetch() -> int | None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                        return int(resp.status)
                except OSError:
                    return None

            assert await eventually(lambda: asyncio.to_thread(fetch)) == 200

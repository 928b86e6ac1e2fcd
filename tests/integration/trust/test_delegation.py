"""Delegated spawning through the real manager (TLS, tokens) and a real daemon.

A kernel created with `delegate` runs the real `agenthost` command inside itself
(run there through Execute, so it runs as the kernel's uid with the kernel's env and
nothing else: no token file, no CA file, no flags): it creates kernels of its own
within its limits, is refused past them, reaches nothing it did not create, and
everything it created ends when it ends, its token with it.

The command runs on an interpreter the kernel's uid may execute (the test's own may
live under a private home) with this checkout and the test's packages on its path.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import sysconfig
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb
from protos import manager_pb2_grpc
from tests.managers import (
    Manager,
    agents_by_id,
    agents_toml,
    linked_daemon_config,
    manager_config,
    run,
    running_manager,
    user_channel,
)
from tests.pki import Pki
from tests.servers import Daemon, eventually, running_daemon, sleeper

ROOT = Path(__file__).resolve().parents[3]
Stub = manager_pb2_grpc.ManagerServiceStub
MiB = 1 << 20


def _anyone_may_run(path: Path) -> bool:
    """Whether a user without privileges may execute path (every directory searchable)."""
    path = path.resolve()
    if not path.is_file() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)


def _kernel_python() -> str | None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        if _anyone_may_run(Path(candidate)):
            return candidate
    return None


KERNEL_PYTHON = _kernel_python()
# `agenthost` as a kernel runs it, and the env that makes it importable there.
AGENTHOST_IN_KERNEL = [str(KERNEL_PYTHON), "-c", "from cli.main import main; main()"]
KERNEL_PYTHONPATH = os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])

pytestmark = pytest.mark.skipif(
    KERNEL_PYTHON is None, reason=f"no Python {sys.version_info[:2]} a kernel's uid may run"
)


@dataclass
class Cluster:
    pki: Pki
    manager: Manager
    daemon: Daemon
    tmp_path: Path

    def channel(self, token: str) -> grpc.aio.Channel:
        """A TLS channel to the manager's user port sending token."""
        return user_channel(self.manager.address, token, self.pki.server_only_credentials())

    async def token(self, name: str, *groups: str) -> str:
        made = await self.manager.stub.CreateToken(
            mpb.CreateTokenRequest(name=name, scaling_groups=list(groups))
        )
        return made.token


@pytest.fixture
async def cluster(pki: Pki, tmp_path: Path) -> AsyncIterator[Cluster]:
    config = manager_config(
        tmp_path, tls=pki.files("manager", "m1").table(), daemon_listen="127.0.0.1:0"
    )
    async with running_manager(config, credentials=pki.server_only_credentials()) as manager:
        path = linked_daemon_config(
            tmp_path,
            "n1",
            manager.server.daemon_address,
            agents_toml(("w1", "g1", 48200, ""), ("x1", "g2", 48210, "")),
            trust=f"tls = {pki.files('daemon', 'n1').toml()}",
        )
        as_manager = pki.files("manager", "m1").channel_credentials()
        async with running_daemon(path, credentials=as_manager) as daemon:

            async def registered() -> bool:
                return len(await agents_by_id(manager.stub)) == 2

            await eventually(registered)
            yield Cluster(pki, manager, daemon, tmp_path)


def delegating(
    kernel_id: str, command: list[str] | None = None, **limits: int
) -> mpb.CreateKernelRequest:
    """A kernel in g1 given a delegation with limits (its env makes the CLI importable)."""
    return mpb.CreateKernelRequest(
        spec=sleeper(
            kernel_id, env={"PYTHONPATH": KERNEL_PYTHONPATH}, command=command or ["sleep", "300"]
        ),
        scaling_group="g1",
        delegate=True,
        delegate_limits=mpb.DelegateLimits(**limits),
    )


async def cli(stub: Stub, kernel_id: str, *args: str) -> tuple[int, str, str]:
    """`agenthost ARGS` run inside kernel_id: exit code, stdout, stderr."""
    out, err, code = await run(stub, kernel_id, [*AGENTHOST_IN_KERNEL, *args])
    return code, out.decode(), err.decode()


async def cli_ok(stub: Stub, kernel_id: str, *args: str) -> str:
    code, out, err = await cli(stub, kernel_id, *args)
    assert code == 0, err
    return out


async def create_inside(stub: Stub, kernel_id: str, *args: str) -> dict[str, object]:
    """`agenthost kernel create --json ARGS` inside kernel_id: the created kernel."""
    out = await cli_ok(stub, kernel_id, "kernel", "create", "--json", *args)
    created: dict[str, object] = json.loads(out)
    return created


def kernel_id_of(created: dict[str, object]) -> str:
    kernel = created["kernel"]
    assert isinstance(kernel, dict)
    return str(kernel["kernel_id"])


async def on_daemon(cluster: Cluster, kernel_id: str) -> grpc.StatusCode:
    """Whether the daemon still has the kernel (OK) or not (NOT_FOUND)."""
    try:
        await cluster.daemon.stub.GetKernel(pb.GetKernelRequest(agent_id="w1", kernel_id=kernel_id))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def refused_with(stub: Stub) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.ListKernels(mpb.ManagerListKernelsRequest(), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


class TestDelegatedKernel:
    async def test_creates_within_its_limits_only_its_own_and_all_of_it_ends_with_it(
        self, cluster: Cluster, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        alice_token = await cluster.token("alice", "g1")
        async with cluster.channel(alice_token) as channel:
            alice = Stub(channel)
            other = (
                await alice.CreateKernel(
                    mpb.CreateKernelRequest(spec=sleeper("other"), scaling_group="g1")
                )
            ).kernel
            made = (
                await alice.CreateKernel(delegating("parent", kernels=2, memory_bytes=256 * MiB))
            ).kernel
            # The owner sees how it can reach the manager, never its token.
            env = made.kernel.spec.env
            assert env["AGENTHOST_TOKEN"] == "<redacted>"
            assert env["AGENTHOST_MANAGER"] == cluster.manager.address
            assert env["AGENTHOST_CA"] == cluster.pki.ca.read_text()
            d = made.delegation
            assert (d.kernels, d.memory_bytes, d.cores, d.scaling_group, d.active) == (
                2,
                256 * MiB,
                0,
                "g1",
                True,
            )

            # Two children inside the limits, through the manager, with only the kernel's env.
            children = [
                await create_inside(alice, "parent", "--memory", "64MiB", "--", "sleep", "300")
                for _ in range(2)
            ]
            for child in children:
                assert child["owner"] == d.principal and child["scaling_group"] == "g1"
                kernel = child["kernel"]
                assert isinstance(kernel, dict)
                assert kernel["spec"]["labels"] == {"agenthost.parent": "parent"}
            child_ids = [kernel_id_of(c) for c in children]

            # A third passes its limits: refused, naming each limit, and nothing made.
            code, _, err = await cli(
                alice,
                "parent",
                "kernel",
                "create",
                "--id",
                "third",
                "--memory",
                "200MiB",
                "--",
                "sleep",
                "300",
            )
            assert code == 1
            assert "RESOURCE_EXHAUSTED" in err
            assert "kernels: limit 2 (--delegate-kernels), 2 in use, this create adds 1" in err
            assert "memory: limit 256MiB (--delegate-memory), 128MiB in use" in err
            assert await on_daemon(cluster, "third") == grpc.StatusCode.NOT_FOUND

            # It lists and reaches its own kernels, and nothing else.
            listed = json.loads(await cli_ok(alice, "parent", "kernel", "ls", "--json"))
            assert sorted(kernel_id_of(k) for k in listed) == sorted(child_ids)
            await cli_ok(alice, "parent", "kernel", "exec", child_ids[0], "--", "true")
            for args in (
                ("kernel", "get", other.kernel.kernel_id),
                ("kernel", "get", "parent"),
                ("kernel", "rm", other.kernel.kernel_id),
                ("kernel", "exec", other.kernel.kernel_id, "--", "true"),
                ("kernel", "logs", other.kernel.kernel_id),
            ):
                code, _, err = await cli(alice, "parent", *args)
                assert code == 1 and "PERMISSION_DENIED" in err, (args, err)
            code, _, err = await cli(
                alice, "parent", "kernel", "create", "--scaling-group", "g2", "--", "sleep", "1"
            )
            assert code == 1 and "may not create kernels in scaling group 'g2'" in err
            code, _, err = await cli(alice, "parent", "token", "ls")
            assert code == 1 and "PERMISSION_DENIED" in err

            # The token is in the kernel's env only: not in any answer, nor in the database.
            token = (
                (await run(alice, "parent", ["printenv", "AGENTHOST_TOKEN"]))[0].decode().strip()
            )
            assert token.startswith("aht_")
            every = await cluster.manager.stub.ListKernels(mpb.ManagerListKernelsRequest())
            assert token not in str(every)
            stored = b"".join(p.read_bytes() for p in cluster.tmp_path.glob("manager.db*"))
            assert token.split("_", 2)[2].encode() not in stored

            # Destroying it destroys its children; its token stops working.
            await alice.DestroyKernel(pb.DestroyKernelRequest(kernel_id="parent"))
            for child_id in child_ids:
                assert await on_daemon(cluster, child_id) == grpc.StatusCode.NOT_FOUND
            remaining = await kernels_of(cluster)
            assert remaining == {other.kernel.kernel_id}
            async with cluster.channel(token) as orphaned:
                code_, details = await refused_with(Stub(orphaned))
            assert code_ == grpc.StatusCode.UNAUTHENTICATED
            assert "the delegated token of kernel 'parent' no longer works" in details
            await alice.DestroyKernel(pb.DestroyKernelRequest(kernel_id=other.kernel.kernel_id))
        # No log line of the manager or the daemon (both in this process) holds it.
        assert token.split("_", 2)[2] not in caplog.text

    async def test_a_parent_that_exits_ends_its_children_and_its_token(
        self, cluster: Cluster
    ) -> None:
        waits_for_stop = ["sh", "-c", 'while [ ! -e "$HOME/stop" ]; do sleep 0.1; done']
        await cluster.manager.stub.CreateKernel(delegating("p2", waits_for_stop, kernels=1))
        child = kernel_id_of(await create_inside(cluster.manager.stub, "p2", "--", "sleep", "300"))
        token = (await run(cluster.manager.stub, "p2", ["printenv", "AGENTHOST_TOKEN"]))[0]
        await run(cluster.manager.stub, "p2", ["sh", "-c", 'touch "$HOME/stop"'])

        ended = await cluster.manager.stub.WaitKernel(
            pb.WaitKernelRequest(kernel_id="p2", timeout=60)
        )
        assert (ended.terminated, ended.reason, ended.exit_code) == (True, "exited", 0)
        async with cluster.channel(token.decode().strip()) as channel:
            stub = Stub(channel)

            async def token_refused() -> bool:
                return (await refused_with(stub))[0] == grpc.StatusCode.UNAUTHENTICATED

            await eventually(token_refused, timeout=30)

        async def child_gone() -> bool:
            return await on_daemon(cluster, child) == grpc.StatusCode.NOT_FOUND

        await eventually(child_gone, timeout=30)
        parent = await cluster.manager.stub.GetKernel(pb.GetKernelRequest(kernel_id="p2"))
        assert not parent.kernel.delegation.active
        await cluster.manager.stub.DestroyKernel(pb.DestroyKernelRequest(kernel_id="p2"))

    async def test_it_passes_on_only_what_it_has_left_and_the_whole_tree_ends_with_it(
        self, cluster: Cluster
    ) -> None:
        admin = cluster.manager.stub
        await admin.CreateKernel(delegating("root", kernels=3))
        python_path = f"PYTHONPATH={KERNEL_PYTHONPATH}"
        code, _, err = await cli(
            admin,
            "root",
            "kernel",
            "create",
            "--delegate",
            "--delegate-kernels",
            "3",
            "--env",
            python_path,
            "--",
            "sleep",
            "300",
        )
        assert code == 1
        assert "kernels: limit 3 (--delegate-kernels), 0 in use, this create adds 4" in err
        child = kernel_id_of(
            await create_inside(
                admin,
                "root",
                "--delegate",
                "--delegate-kernels",
                "2",
                "--env",
                python_path,
                "--",
                "sleep",
                "300",
            )
        )
        # The child's own token creates the grandchild; the root has nothing left.
        grandchild = kernel_id_of(
            json.loads(
                await cli_ok(
                    admin,
                    "root",
                    "kernel",
                    "exec",
                    child,
                    "--",
                    *AGENTHOST_IN_KERNEL,
                    "kernel",
                    "create",
                    "--json",
                    "--",
                    "sleep",
                    "300",
                )
            )
        )
        code, _, err = await cli(admin, "root", "kernel", "create", "--", "sleep", "300")
        assert code == 1 and "kernels: limit 3 (--delegate-kernels), 3 in use" in err
        listed = await admin.ListKernels(
            mpb.ManagerListKernelsRequest(labels={"agenthost.parent": child})
        )
        assert [k.kernel.kernel_id for k in listed.kernels] == [grandchild]

        await admin.DestroyKernel(pb.DestroyKernelRequest(kernel_id="root"))
        for kernel_id in (child, grandchild):
            assert await on_daemon(cluster, kernel_id) == grpc.StatusCode.NOT_FOUND
        assert await kernels_of(cluster) == set()


async def kernels_of(cluster: Cluster) -> set[str]:
    listed = await cluster.manager.stub.ListKernels(mpb.ManagerListKernelsRequest())
    return {k.kernel.kernel_id for k in listed.kernels}

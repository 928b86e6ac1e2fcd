"""Local kernels as governed processes, through the real daemon: separation and slices.

Each kernel runs as a uid of its own: it cannot read another's environment,
signal it, or read the daemon's state; a cpuset cgroup keeps it on its cores
whatever it asks; a pids cgroup stops a fork bomb at pids_max while the other
kernels run on. uids come back on destroy and are held again after a restart
(kill -9 of the real daemon process). A command that cannot start leaves
nothing. Needs root and cgroup controllers; each test skips saying which it
lacks.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import grpc
import pytest

from daemon.backends.local.cgroups import Cgroups
from daemon.resources import HostCapacity
from protos import agent_pb2 as pb
from protos import agent_pb2_grpc
from tests.servers import (
    Daemon,
    DaemonSetup,
    daemon_config,
    daemon_process,
    eventually,
    execute,
    get,
    identity_of,
    kernels_dir_of,
    logs,
    sleeper,
)

HOST = HostCapacity.detect()
ROOT = os.geteuid() == 0
PIDS_MAX = 24
UIDS = (2_001_000, 2_001_002)  # three uids: few enough to run out of

pytestmark = pytest.mark.skipif(not ROOT, reason="kernels of their own uid need a root daemon")


def cgroups_here() -> Cgroups:
    cg = Cgroups.detect("isolation-test-probe")
    for hierarchy in (cg.memory, cg.cpuset, cg.pids):
        if hierarchy is not None:
            os.rmdir(hierarchy.base)
    return cg


CGROUPS = cgroups_here()
needs_cpuset = pytest.mark.skipif(
    CGROUPS.cpuset is None or len(HOST.cores) < 2,
    reason="needs a writable cpuset cgroup and two cores",
)
needs_pids = pytest.mark.skipif(CGROUPS.pids is None, reason="needs a writable pids cgroup")

AGENTS = f"""
[[agents]]
id = "a0"
port_range = [45000, 45099]
resources = {{ memory = "1GiB" }}
local = {{ uid_range = [{UIDS[0]}, {UIDS[1]}], pids_max = {PIDS_MAX} }}
"""


@pytest.fixture
def daemon_setup() -> DaemonSetup:
    return DaemonSetup(AGENTS)


def pid_of(kernel: pb.Kernel) -> int:
    return int(kernel.backend_ref.split()[1])


async def run(daemon: Daemon, kernel_id: str, *argv: str) -> tuple[int, str, str]:
    _, out, err, exit_ = await execute(daemon.stub, "a0", kernel_id, list(argv), timeout=30)
    return exit_.exit_code, out.decode(), err.decode()


async def two_kernels(daemon: Daemon) -> tuple[pb.Kernel, pb.Kernel]:
    await daemon.stub.CreateKernels(
        pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("x"), sleeper("y")])
    )
    return await get(daemon.stub, "a0", "x"), await get(daemon.stub, "a0", "y")


class TestSeparation:
    async def test_each_kernel_runs_as_a_uid_of_its_own(self, daemon: Daemon) -> None:
        x, y = await two_kernels(daemon)
        ids = {(await run(daemon, k, "id", "-u"))[1].strip() for k in ("x", "y")}
        assert ids == {str(x.uid), str(y.uid)} and len(ids) == 2
        assert {x.uid, y.uid} <= set(range(UIDS[0], UIDS[1] + 1))
        assert (x.gid, y.gid) == (x.uid, y.uid)
        assert x.limits["user"] == "uid-range"

    async def test_a_kernel_cannot_read_or_signal_another_nor_read_the_state_dir(
        self, daemon: Daemon, tmp_path: Path
    ) -> None:
        _, y = await two_kernels(daemon)
        code, _, err = await run(daemon, "x", "cat", f"/proc/{pid_of(y)}/environ")
        assert code != 0 and "Permission denied" in err
        code, _, err = await run(daemon, "x", "kill", "-TERM", str(pid_of(y)))
        assert code != 0 and "not permitted" in err
        code, _, err = await run(daemon, "x", "ls", str(tmp_path / "state"))
        assert code != 0 and "Permission denied" in err
        code, _, err = await run(daemon, "x", "ls", str(kernels_dir_of(tmp_path) / "a0" / "y"))
        assert code != 0 and "Permission denied" in err
        assert (await get(daemon.stub, "a0", "y")).state == pb.KERNEL_STATE_RUNNING

    async def test_its_directory_is_its_own_and_reachable_by_path(
        self, daemon: Daemon, tmp_path: Path
    ) -> None:
        x, _ = await two_kernels(daemon)
        workdir = kernels_dir_of(tmp_path) / "a0" / "x"
        st = os.stat(workdir)
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (x.uid, x.gid, 0o700)
        assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
        code, out, _ = await run(daemon, "x", "sh", "-c", 'cd "$HOME" && touch f && pwd')
        assert (code, out.strip()) == (0, str(workdir))
        assert os.stat(workdir / "f").st_uid == x.uid


class TestLimits:
    async def test_getkernel_says_what_is_enforced(self, daemon: Daemon) -> None:
        x, _ = await two_kernels(daemon)
        mode = {h.controller: h.mode for h in (CGROUPS.memory, CGROUPS.cpuset, CGROUPS.pids) if h}
        assert dict(x.limits) == {
            # Its slice is every core: a cpuset would confine nothing, so it joins none.
            "cpuset": "none" if CGROUPS.cpuset else "affinity",
            "memory": mode.get("memory", "rlimit"),
            "pids": mode.get("pids", "rlimit"),
            "user": "uid-range",
        }
        assert x.memory_limit == x.limits["memory"]

    @needs_cpuset
    async def test_a_kernel_cannot_widen_its_cores(self, daemon: Daemon) -> None:
        core, other = HOST.cores[0], HOST.cores[1]
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[sleeper("pin", resources=pb.ResourceRequest(cores=[core]))],
            )
        )
        pinned = await get(daemon.stub, "a0", "pin")
        assert pinned.limits["cpuset"] == CGROUPS.cpuset.mode  # type: ignore[union-attr]
        code, _, err = await run(
            daemon, "pin", "python3", "-c", f"import os; os.sched_setaffinity(0, {{{other}}})"
        )
        assert code != 0 and "Invalid argument" in err
        code, out, _ = await run(
            daemon,
            "pin",
            "sh",
            "-c",
            f"taskset -pc {','.join(map(str, HOST.cores))} $$ >/dev/null 2>&1; "
            "grep Cpus_allowed_list /proc/self/status",
        )
        assert out.split() == ["Cpus_allowed_list:", str(core)]
        assert os.sched_getaffinity(pid_of(pinned)) == {core}

    @needs_pids
    async def test_a_fork_bomb_stops_at_pids_max_while_other_kernels_run(
        self, daemon: Daemon
    ) -> None:
        x, _ = await two_kernels(daemon)
        bomb = (
            "import os, time\n"
            "n = 0\n"
            "try:\n"
            "    while n < 1000:\n"
            "        if os.fork() == 0:\n"
            "            os.close(1); os.close(2); time.sleep(60); os._exit(0)\n"
            "        n += 1\n"
            "except OSError as e:\n"
            "    print(n, e.strerror)\n"
        )
        code, out, _ = await run(daemon, "x", "python3", "-c", bomb)
        forked, *reason = out.split(maxsplit=1)
        assert code == 0 and reason == ["Resource temporarily unavailable\n"]
        assert int(forked) <= PIDS_MAX - 2  # its main process and the python itself count
        code, out, _ = await run(daemon, "y", "echo", "still here")
        assert (code, out) == (0, "still here\n")
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="x"))
        assert [p for p in _pids() if _uid_of(p) == x.uid and not _zombie(p)] == []
        assert (await get(daemon.stub, "a0", "y")).state == pb.KERNEL_STATE_RUNNING

    async def test_execute_runs_in_the_kernels_cgroups_as_its_uid(self, daemon: Daemon) -> None:
        x, _ = await two_kernels(daemon)
        code, out, _ = await run(daemon, "x", "sh", "-c", "id -u; cat /proc/self/cgroup")
        lines = out.splitlines()
        assert code == 0 and lines[0] == str(x.uid)
        own = Path(f"/proc/{pid_of(x)}/cgroup").read_text().splitlines()  # noqa: ASYNC240
        main = sorted(line for line in own if "agenthost-" in line)
        assert main and sorted(line for line in lines[1:] if "agenthost-" in line) == main


class TestUids:
    async def test_uids_come_back_on_destroy(self, daemon: Daemon) -> None:
        kernels = [sleeper(f"k{i}") for i in range(3)]
        created = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=kernels)
        )
        assert sorted(k.uid for k in created.kernels) == list(range(UIDS[0], UIDS[1] + 1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("more")])
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.value.details() == (
            f"every uid of uid_range {UIDS[0]}-{UIDS[1]} is held by a running kernel (3); "
            "destroy kernels or widen local.uid_range"
        )
        freed = (await get(daemon.stub, "a0", "k1")).uid
        await daemon.stub.DestroyKernel(pb.DestroyKernelRequest(agent_id="a0", kernel_id="k1"))
        again = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("more")])
        )
        assert again.kernels[0].uid == freed

    async def test_uids_of_kernels_that_ended_by_themselves_come_back(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[pb.KernelSpec(kernel_id=f"q{i}", command=["true"]) for i in range(3)],
            )
        )

        async def all_ended() -> bool:
            listed = await daemon.stub.ListKernels(pb.ListKernelsRequest(agent_id="a0"))
            return all(k.state == pb.KERNEL_STATE_TERMINATED for k in listed.kernels)

        await eventually(all_ended)
        created = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper(f"k{i}") for i in range(3)])
        )
        assert len({k.uid for k in created.kernels}) == 3

    async def test_uids_are_held_again_after_a_kill_9_restart(self, tmp_path: Path) -> None:
        config = daemon_config(tmp_path, AGENTS)
        with daemon_process(config) as first:
            async with grpc.aio.insecure_channel(first.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                created = await stub.CreateKernels(
                    pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k0"), sleeper("k1")])
                )
            first.kill9()
        held = {k.kernel_id: k.uid for k in created.kernels}
        with daemon_process(config, "--destroy-kernels-on-exit") as second:
            async with grpc.aio.insecure_channel(second.address) as channel:
                stub = agent_pb2_grpc.AgentServiceStub(channel)
                for kernel_id, uid in held.items():
                    kernel = await get(stub, "a0", kernel_id)
                    assert (kernel.state, kernel.uid) == (pb.KERNEL_STATE_RUNNING, uid)
                fresh = await stub.CreateKernels(
                    pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k2")])
                )
                assert fresh.kernels[0].uid not in held.values()
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.CreateKernels(
                        pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper("k3")])
                    )
                assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert second.terminate() == 0


class TestLauncher:
    @pytest.mark.parametrize(
        ("command", "reason"),
        [
            ("/no/such/program", "/no/such/program: No such file or directory"),
            ("/etc/passwd", "/etc/passwd: Permission denied"),
        ],
        ids=["missing", "permission-denied"],
    )
    async def test_a_command_that_cannot_start_fails_with_the_reason_and_leaves_nothing(
        self, daemon: Daemon, tmp_path: Path, command: str, reason: str
    ) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(
                    agent_id="a0",
                    kernels=[
                        sleeper("ok", ports=[pb.ServicePort(name="http")]),
                        pb.KernelSpec(kernel_id="bad", command=[command]),
                    ],
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == f"kernel 'bad' cannot start: {reason}"
        identity = identity_of(tmp_path)
        for hierarchy in (CGROUPS.memory, CGROUPS.cpuset, CGROUPS.pids):
            if hierarchy is not None:
                agent_dir = hierarchy.base.parent / f"agenthost-{identity}" / "a0"
                assert (
                    not agent_dir.exists() or [p for p in agent_dir.iterdir() if p.is_dir()] == []
                )
        assert list((kernels_dir_of(tmp_path) / "a0").iterdir()) == []
        info = (await daemon.stub.ListAgents(pb.ListAgentsRequest())).agents[0]
        assert (info.kernel_count, info.occupied.ports) == (0, 0)
        # Every uid is free again: the whole range can be taken.
        created = await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper(f"k{i}") for i in range(3)])
        )
        assert len(created.kernels) == 3

    async def test_output_goes_to_the_kernel_log(self, daemon: Daemon) -> None:
        await daemon.stub.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[
                    pb.KernelSpec(
                        kernel_id="talk", command=["sh", "-c", "echo out; echo err >&2; sleep 60"]
                    )
                ],
            )
        )

        async def both() -> bytes | None:
            text = await logs(daemon.stub, "a0", "talk")
            return text if b"err" in text else None

        assert sorted((await eventually(both)).split()) == [b"err", b"out"]

    async def test_many_kernels_start_at_once(self, daemon: Daemon) -> None:
        calls = [
            daemon.stub.CreateKernels(
                pb.CreateKernelsRequest(agent_id="a0", kernels=[sleeper(f"c{i}")])
            )
            for i in range(3)
        ]
        created = await asyncio.gather(*calls)
        assert len({reply.kernels[0].uid for reply in created}) == 3


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _zombie(pid: int) -> bool:
    """Ended, waiting for its parent (init, for a kernel's orphans) to reap it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None

"""Fuzzing every RPC from its request message's descriptor, against a real daemon and a
real manager (`agenthost daemon` and `agenthost manager` processes, the daemon
registered with the manager), both started once for the test.

The property, for any request to any method of `AgentService` and of the manager's
user API: the answer is a precise status code (never `INTERNAL` or `UNKNOWN`), both
servers stay up, and once whatever the requests created is destroyed, every agent's
occupancy (cores, memory, devices, ports, kernels) is back to zero with no process,
kernel directory or cgroup left. The strategies come from the descriptors
(`tests/protostrategies.py`), so a new RPC or field is fuzzed without a change
here; the hints only add ids that exist (so requests get past routing) and keep
the programs kernels run to harmless ones.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protos import agent_pb2 as pb
from protos import agent_pb2_grpc, manager_pb2_grpc
from protos import manager_pb2 as mpb
from tests.managers import (
    ManagerProcess,
    admin_token,
    linked_daemon_config,
    manager_config,
)
from tests.protostrategies import Strategies, methods, texts
from tests.servers import (
    DaemonProcess,
    clean_up_after,
    daemon_cgroups,
    identity_of,
    kernel_processes,
    local_agents,
)

AGENTS = ("a0", "a1")
KERNELS = ("k0", "k1", "k2")
NAMES = ("n0", "n1")  # tokens, templates, groups, networks
# Programs a fuzzed kernel or exec may run: they end at once or sleep, whatever the
# arguments (random words could name real programs: rm, yes, sh, dd).
PROGRAMS = ("true", "false", "echo", "pwd", "env", "cat", "/nonexistent/program", "")
ARGUMENT = st.one_of(st.text(max_size=8), st.sampled_from(["-n", "--", "\0", "x" * 300]))
ARGV = st.one_of(
    st.tuples(st.sampled_from(PROGRAMS), st.lists(ARGUMENT, max_size=3)).map(
        lambda t: [t[0], *t[1]]
    ),
    st.just([]),
    st.integers(4090, 4100).map(lambda n: ["echo"] + ["a"] * n),  # around MAX_ARGV_ITEMS
    st.just(["echo", "x" * (140 << 10)]),  # past MAX_ARGV_BYTES
)
COMMAND = st.one_of(st.just(["sleep", "300"]), ARGV)
TEMPLATE = """\
apiVersion: agenthost.io/v1alpha1
kind: KernelTemplate
metadata: {name: n0}
spec: {command: [sleep, "300"]}
"""
GROUP = """\
apiVersion: agenthost.io/v1alpha1
kind: AgentGroup
metadata: {name: n1}
spec:
  roles:
    - {name: boss, coordinator: true, kernel: {command: [sleep, "300"]}}
    - {name: worker, replicas: 2, dependsOn: [boss], kernel: {command: [sleep, "300"]}}
"""


# Values that exist or pass validation, drawn as often as the generic ones, so that
# requests also get past routing and the edge checks into the handlers.
RESOURCES = st.builds(
    pb.ResourceRequest,
    cpu_count=st.sampled_from([0, 1]),
    memory_bytes=st.sampled_from([0, 64 << 20]),
    cpu_quota=st.sampled_from([0.0, 0.5]),
)
PORTS = st.lists(
    st.builds(pb.ServicePort, name=st.sampled_from(["http", "ssh"]), host_port=st.just(0)),
    max_size=2,
    unique_by=lambda p: p.name,
)
SPEC = st.builds(
    pb.KernelSpec,
    kernel_id=st.sampled_from(["", *KERNELS]),
    command=COMMAND,
    env=st.dictionaries(st.sampled_from(["A", "B_1"]), st.text(max_size=8), max_size=2),
    labels=st.dictionaries(st.sampled_from(["app", "x.io/role"]), st.just("v"), max_size=2),
    ports=PORTS,
    resources=RESOURCES,
)
HINTS: dict[str, st.SearchStrategy[Any]] = {
    "agent_id": st.sampled_from(AGENTS),
    "kernel_id": st.sampled_from(KERNELS),
    "name": st.sampled_from(NAMES),
    "scaling_group": st.sampled_from(["default", "batch"]),
    "template": st.just("n0"),
    # By message too: DelegateLimits.kernels is a count, not a batch.
    "CreateKernelsRequest.kernels": st.lists(
        SPEC, min_size=1, max_size=3, unique_by=lambda s: s.kernel_id or id(s)
    ),
    "spec": SPEC,
    "resources": RESOURCES,
    "ports": PORTS,
    "document": st.sampled_from([TEMPLATE, GROUP]),
    "format": st.sampled_from(["", "yaml"]),  # the documents are YAML
    "grace_seconds": st.sampled_from([0.0, 0.1]),
    "timeout": st.sampled_from([0.0, 2.0]),
    "tail_lines": st.sampled_from([0, 1, 10]),
    "page_size": st.sampled_from([0, 1, 2]),
    "scaling_groups": st.lists(st.sampled_from(["default", "batch"]), min_size=1, max_size=2),
    "expires_in": st.sampled_from([0.0, 60.0]),
}
OVERRIDES: dict[str, st.SearchStrategy[Any]] = {
    "command": COMMAND,
    "argv": ARGV,
    # The bootstrap admin token is this test's credential: revoking it ends the test.
    "token": st.one_of(st.sampled_from(NAMES), texts().filter(lambda t: t != "admin")),
}

AGENT_SERVICE = pb.DESCRIPTOR.services_by_name["AgentService"]
MANAGER_SERVICE = mpb.DESCRIPTOR.services_by_name["ManagerService"]
# Daemon-facing calls of the manager: its identity and sessions, not the user API.
DAEMON_FACING = tuple(
    f"{MANAGER_SERVICE.full_name}.{name}"
    for name in ("RegisterAgents", "RegisterKernels", "Heartbeat")
)
IMPRECISE = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
CALL_TIMEOUT = 60.0
STREAM_TIMEOUT = 1.0  # a followed log, a watch or a wait runs until its deadline
STREAM_MESSAGES = 20
# Unary calls that wait for the kernel's end (timeout 0: for as long as it takes), as
# long as a stream: the client's deadline ends them.
LONG_POLLS = {"WaitKernel"}


class Servers:
    """The daemon and manager processes and a channel to each."""

    def __init__(self, daemon: DaemonProcess, manager: ManagerProcess, state: Path) -> None:
        self.daemon = daemon
        self.manager = manager
        self.state = state
        self.identity = identity_of(state.parent)
        self.channels = {
            AGENT_SERVICE.full_name: grpc.insecure_channel(daemon.address),
            MANAGER_SERVICE.full_name: grpc.insecure_channel(manager.address),
        }
        self.metadata = {
            AGENT_SERVICE.full_name: (),
            MANAGER_SERVICE.full_name: (("authorization", f"Bearer {admin_token()}"),),
        }
        self.agents = agent_pb2_grpc.AgentServiceStub(self.channels[AGENT_SERVICE.full_name])
        self.users = manager_pb2_grpc.ManagerServiceStub(self.channels[MANAGER_SERVICE.full_name])

    def call(self, method: MethodDescriptor, request: Message) -> grpc.StatusCode:
        """Make the call (reading a stream's first messages); its status code."""
        service = method.containing_service.full_name
        path = f"/{service}/{method.name}"
        response = GetMessageClass(method.output_type).FromString
        channel = self.channels[service]
        waits = method.server_streaming or method.name in LONG_POLLS
        try:
            if method.server_streaming:
                stream = channel.unary_stream(path, response_deserializer=response)(
                    request.SerializeToString(),
                    timeout=STREAM_TIMEOUT,
                    metadata=self.metadata[service],
                )
                for i, _ in enumerate(stream):
                    if i >= STREAM_MESSAGES:
                        stream.cancel()
                        break
            else:
                channel.unary_unary(path, response_deserializer=response)(
                    request.SerializeToString(),
                    timeout=STREAM_TIMEOUT if waits else CALL_TIMEOUT,
                    metadata=self.metadata[service],
                )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()
            self.last_details = exc.details()
            if code in IMPRECISE:
                raise AssertionError(
                    f"{method.full_name} answered {code.name} ({exc.details()}) to "
                    f"{_brief(request)}"
                ) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED and not waits:
                raise AssertionError(
                    f"{method.full_name} did not answer within {CALL_TIMEOUT}s: {_brief(request)}"
                ) from None
            return code
        return grpc.StatusCode.OK

    def assert_up(self) -> None:
        """Both processes run and answer."""
        for proc in (self.daemon, self.manager):
            assert proc.proc.poll() is None, f"{proc.command} exited:\n{proc.log()[-3000:]}"
        self.agents.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT)
        self.users.ListAgents(
            mpb.ManagerListAgentsRequest(),
            timeout=CALL_TIMEOUT,
            metadata=self.metadata[MANAGER_SERVICE.full_name],
        )

    def populate(self) -> None:
        """What the hinted ids name: a running kernel k0 with a port on a0, an ended kernel
        k1 with output on a1, template n0 and group n1 (three kernels)."""
        self.agents.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a0",
                kernels=[
                    pb.KernelSpec(
                        kernel_id="k0",
                        command=["sleep", "300"],
                        ports=[pb.ServicePort(name="http")],
                    )
                ],
            ),
            timeout=CALL_TIMEOUT,
        )
        self.agents.CreateKernels(
            pb.CreateKernelsRequest(
                agent_id="a1",
                kernels=[pb.KernelSpec(kernel_id="k1", command=["sh", "-c", "echo out; exit 3"])],
            ),
            timeout=CALL_TIMEOUT,
        )
        users = self.metadata[MANAGER_SERVICE.full_name]
        self.users.ApplyTemplate(
            mpb.ApplyTemplateRequest(document=TEMPLATE), timeout=CALL_TIMEOUT, metadata=users
        )
        self.users.CreateGroup(
            mpb.CreateGroupRequest(document=GROUP), timeout=CALL_TIMEOUT, metadata=users
        )

    def destroy_everything(self) -> None:
        """Delete every group, then destroy every kernel the manager or the daemon has."""
        users = self.metadata[MANAGER_SERVICE.full_name]
        for group in self.users.ListGroups(
            mpb.ListGroupsRequest(), timeout=CALL_TIMEOUT, metadata=users
        ).groups:
            self.users.DeleteGroup(
                mpb.DeleteGroupRequest(name=group.name), timeout=CALL_TIMEOUT, metadata=users
            )
        for template in self.users.ListTemplates(
            mpb.ListTemplatesRequest(), timeout=CALL_TIMEOUT, metadata=users
        ).templates:
            self.users.DeleteTemplate(
                mpb.DeleteTemplateRequest(name=template.name), timeout=CALL_TIMEOUT, metadata=users
            )
        for managed in self.users.ListKernels(
            mpb.ManagerListKernelsRequest(page_size=1000), timeout=CALL_TIMEOUT, metadata=users
        ).kernels:
            with contextlib.suppress(grpc.RpcError):  # NOT_FOUND: gone with its group
                self.users.DestroyKernel(
                    pb.DestroyKernelRequest(kernel_id=managed.kernel.kernel_id),
                    timeout=CALL_TIMEOUT,
                    metadata=users,
                )
        for kernel in self.agents.ListKernels(
            pb.ListKernelsRequest(page_size=1000), timeout=CALL_TIMEOUT
        ).kernels:
            self.agents.DestroyKernel(
                pb.DestroyKernelRequest(agent_id=kernel.agent_id, kernel_id=kernel.kernel_id),
                timeout=CALL_TIMEOUT,
            )

    def leftovers(self) -> list[str]:
        """What any agent still holds: occupancy, processes, directories, cgroups."""
        found = []
        for agent in self.agents.ListAgents(pb.ListAgentsRequest(), timeout=CALL_TIMEOUT).agents:
            held = agent.occupied
            if agent.kernel_count or held.cores or held.memory_bytes or held.devices or held.ports:
                found.append(f"agent {agent.agent_id} holds {agent.kernel_count} kernels, {held}")
            kernels = self.state / "agents" / agent.agent_id / "kernels"
            if kernels.is_dir() and any(kernels.iterdir()):
                found.append(f"kernel directories left: {sorted(os.listdir(kernels))}")
        for proc in kernel_processes(self.identity):
            with contextlib.suppress(psutil.Error):
                found.append(f"process {proc.pid} {proc.cmdline()} left")
        # While the daemon runs it keeps its own and its agents' groups, no kernel's.
        kernel_groups = [g for g in daemon_cgroups(self.identity) if g.parent.name in AGENTS]
        if kernel_groups:
            found.append(f"cgroups left: {kernel_groups}")
        return found

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def _brief(request: Message) -> str:
    text = f"{request.DESCRIPTOR.name}({str(request).strip()!r})"
    return text if len(text) < 600 else text[:600] + "..."


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """One manager and one daemon (two local agents) for every test of the module."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    manager = ManagerProcess(manager_config(tmp_path))
    daemon = None
    try:
        daemon_path = linked_daemon_config(
            tmp_path,
            "node",
            manager.address,
            local_agents(2, memory="1GiB", base_port=47700),
        )
        daemon = DaemonProcess(daemon_path)
        running = Servers(daemon, manager, tmp_path / "node" / "state")
        try:
            yield running
        finally:
            running.close()
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.close()
        manager.terminate()
        manager.close()
        identity = identity_of(tmp_path / "node")
        left = daemon_cgroups(identity)
        clean_up_after(identity)
        assert left == [], "the daemon left its cgroups behind"


SERVICES = [AGENT_SERVICE, MANAGER_SERVICE]
METHODS = methods(SERVICES, skip=DAEMON_FACING)
# Enough to reach every handler and limit; AGENTHOST_FUZZ_EXAMPLES=1000 fuzzes longer.
EXAMPLES_PER_METHOD = int(os.environ.get("AGENTHOST_FUZZ_EXAMPLES", "40"))
STRATEGIES = Strategies(HINTS, OVERRIDES)


class TestFuzz:
    @pytest.mark.parametrize("method", METHODS, ids=[m.full_name.split(".", 2)[2] for m in METHODS])
    def test_any_request_gets_a_precise_code_the_servers_stay_up_and_nothing_leaks(
        self, servers: Servers, method: MethodDescriptor
    ) -> None:
        @settings(
            max_examples=EXAMPLES_PER_METHOD,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(request=STRATEGIES.message(method.input_type))
        def fuzz(request: Message) -> None:
            servers.call(method, request)
            servers.assert_up()

        servers.populate()
        try:
            fuzz()
        finally:
            servers.destroy_everything()
        leftovers = servers.leftovers()
        for _ in range(50):  # an exec or a group member may still be ending
            if not leftovers:
                break
            time.sleep(0.1)
            leftovers = servers.leftovers()
        assert leftovers == []

    def test_every_user_facing_rpc_is_fuzzed(self) -> None:
        assert {m.full_name for m in METHODS} == {
            m.full_name for s in SERVICES for m in s.methods
        } - set(DAEMON_FACING)
        assert len(METHODS) >= 30

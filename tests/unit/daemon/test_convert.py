"""daemon/convert.py: the protocol messages and the daemon's domain values, both ways."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.ids import AgentId, KernelId
from common.kernel_events import EndReason
from daemon import convert
from daemon.agent import AgentStatus
from daemon.backends.base import ExecEvent, ExecExit, ExecOutput
from daemon.kernels import Kernel, KernelSpec, KernelState, ServicePort
from daemon.resources import Allocation, ResourceRequest, ResourceSlice
from protos import agent_pb2 as pb

GIB = 1 << 30

# Strings a proto can carry: valid UTF-8 (no lone surrogates).
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)


@st.composite
def specs(draw: st.DrawFn) -> KernelSpec:
    """Any spec a caller could send (the proto's field ranges, not the daemon's rules)."""
    cores = draw(st.lists(st.integers(0, 2**31 - 1), max_size=4).map(tuple))
    return KernelSpec(
        kernel_id=KernelId(draw(text)),
        image=draw(text),
        command=tuple(draw(st.lists(text, max_size=4))),
        env=draw(st.dictionaries(text, text, max_size=3)),
        resources=ResourceRequest(
            cpu_count=0 if cores else draw(st.integers(0, 2**32 - 1)),
            cores=cores,
            memory=draw(st.integers(0, 2**64 - 1)),
            devices=draw(st.dictionaries(text, st.integers(0, 2**32 - 1), max_size=2)),
            cpu_quota=draw(st.floats(0, 1e6, allow_nan=False)),
        ),
        ports=tuple(
            ServicePort(name=n, container_port=draw(st.integers(0, 65535)))
            for n in draw(st.lists(names, max_size=3, unique=True))
        ),
        labels=draw(st.dictionaries(text, text, max_size=3)),
        networks=tuple(draw(st.lists(text, max_size=3))),
    )


def record(spec: KernelSpec, **fields: Any) -> Kernel:
    return Kernel(
        kernel_id=spec.kernel_id, agent_id=AgentId("a0"), backend="local", spec=spec, **fields
    )


SPEC = KernelSpec(
    kernel_id=KernelId("k1"),
    image="python:3.11",
    command=("python3", "-m", "http.server"),
    env={"A": "1"},
    resources=ResourceRequest(cpu_count=2, memory=GIB, devices={"cuda": 1}, cpu_quota=1.5),
    ports=(ServicePort(name="http", container_port=8000),),
    labels={"team": "ml"},
    networks=("session1",),
)


class TestSpecRoundTrip:
    @settings(max_examples=150, deadline=None)
    @given(specs())
    def test_spec_to_proto_and_back_is_the_same_spec(self, spec: KernelSpec) -> None:
        msg = convert.kernel_to_proto(record(spec)).spec
        assert convert.spec_from_proto(pb.KernelSpec.FromString(msg.SerializeToString())) == spec

    def test_an_empty_message_is_the_default_spec_with_no_id(self) -> None:
        assert convert.spec_from_proto(pb.KernelSpec()) == KernelSpec(kernel_id=KernelId(""))

    def test_every_field_of_the_message_is_read(self) -> None:
        msg = pb.KernelSpec(
            kernel_id="k1",
            image="python:3.11",
            command=["python3", "-m", "http.server"],
            env={"A": "1"},
            resources=pb.ResourceRequest(
                cpu_count=2, memory_bytes=GIB, devices={"cuda": 1}, cpu_quota=1.5
            ),
            ports=[pb.ServicePort(name="http", container_port=8000)],
            labels={"team": "ml"},
            networks=["session1"],
        )
        assert convert.spec_from_proto(msg) == SPEC


@dataclass(frozen=True)
class Shown:
    """kernel_to_proto of a record with `fields` shows `expected` (field -> value)."""

    name: str
    fields: dict[str, Any]
    expected: dict[str, Any]


SHOWN = [
    Shown("pending", {}, {"state": pb.KERNEL_STATE_PENDING, "finished_at": 0.0}),
    Shown(
        "running_with_what_it_holds",
        {
            "state": KernelState.RUNNING,
            "allocation": Allocation(cores=(2, 3), memory=GIB, devices={"cuda": ("1",)}),
            "ports": {"http": 30000, "ssh": 30001},
            "memory_limit": "cgroup-v1",
            "backend_ref": "pid 4242",
            "created_at": 1700000000.25,
        },
        {
            "state": pb.KERNEL_STATE_RUNNING,
            "allocated": pb.Resources(
                cores=[2, 3],
                memory_bytes=GIB,
                devices={"cuda": pb.DeviceIds(ids=["1"])},
                ports=2,
            ),
            "ports": {"http": 30000, "ssh": 30001},
            "memory_limit": "cgroup-v1",
            "backend_ref": "pid 4242",
            "created_at": 1700000000.25,
        },
    ),
    Shown(
        "terminated_with_an_exit_code",
        {
            "state": KernelState.TERMINATED,
            "exit_code": 0,
            "status_message": "exited",
            "finished_at": 1700000001.5,
        },
        {
            "state": pb.KERNEL_STATE_TERMINATED,
            "exit_code": 0,
            "status_message": "exited",
            "finished_at": 1700000001.5,
            "allocated": pb.Resources(),
            "ports": {},
        },
    ),
]


class TestKernelToProto:
    @pytest.mark.parametrize("case", SHOWN, ids=[c.name for c in SHOWN])
    def test_shows_the_records_fields(self, case: Shown) -> None:
        msg = convert.kernel_to_proto(record(SPEC, **case.fields))
        assert (msg.kernel_id, msg.agent_id, msg.backend) == ("k1", "a0", "local")
        assert convert.spec_from_proto(msg.spec) == SPEC
        for field, value in case.expected.items():
            shown = getattr(msg, field)
            assert (dict(shown) if field == "ports" else shown) == value, field

    def test_an_unknown_exit_code_is_absent_not_zero(self) -> None:
        msg = convert.kernel_to_proto(record(SPEC).ended(None, "vanished", EndReason.LOST))
        assert not msg.HasField("exit_code")
        assert msg.status_message == "vanished"
        assert convert.kernel_to_proto(record(SPEC).ended(0, "exited", EndReason.EXITED)).HasField(
            "exit_code"
        )

    def test_spec_and_allocated_are_present_even_when_empty(self) -> None:
        msg = convert.kernel_to_proto(record(KernelSpec(kernel_id=KernelId("k0"))))
        assert msg.HasField("spec") and msg.spec.HasField("resources")
        assert msg.HasField("allocated") and msg.allocated == pb.Resources()

    @pytest.mark.parametrize("state", list(KernelState), ids=[s.value for s in KernelState])
    def test_every_state_has_its_enum_value(self, state: KernelState) -> None:
        msg = convert.kernel_to_proto(record(SPEC, state=state))
        assert pb.KernelState.Name(msg.state) == f"KERNEL_STATE_{state.name}"


class TestAgentToProto:
    def test_shows_capacity_occupancy_and_health(self) -> None:
        status = AgentStatus(
            agent_id=AgentId("a1"),
            backend="docker",
            scaling_group="batch",
            port_range=(30100, 30199),
            capacity=ResourceSlice(cores=(0, 1), memory=2 * GIB, devices={"cuda": ("0",)}),
            occupied=Allocation(cores=(1,), memory=GIB),
            ports_total=100,
            ports_used=3,
            kernel_count=2,
            healthy=False,
            status_message="docker engine at unix:///x does not answer",
        )
        assert convert.agent_to_proto(status) == pb.AgentInfo(
            agent_id="a1",
            backend="docker",
            scaling_group="batch",
            port_range=pb.PortRange(start=30100, end=30199),
            capacity=pb.Resources(
                cores=[0, 1],
                memory_bytes=2 * GIB,
                devices={"cuda": pb.DeviceIds(ids=["0"])},
                ports=100,
            ),
            occupied=pb.Resources(cores=[1], memory_bytes=GIB, ports=3),
            kernel_count=2,
            healthy=False,
            status_message="docker engine at unix:///x does not answer",
        )


@dataclass(frozen=True)
class Event:
    """exec_event_to_proto(event) is `expected`."""

    name: str
    event: ExecEvent
    expected: pb.ExecuteResponse


EVENTS = [
    Event("stdout", ExecOutput("stdout", b"hello\n"), pb.ExecuteResponse(stdout=b"hello\n")),
    Event("stderr", ExecOutput("stderr", b"oops\n"), pb.ExecuteResponse(stderr=b"oops\n")),
    Event(
        "exit",
        ExecExit(exit_code=3),
        pb.ExecuteResponse(exit=pb.ExecuteExit(exit_code=3, timed_out=False)),
    ),
    Event(
        "timed_out",
        ExecExit(exit_code=-9, timed_out=True),
        pb.ExecuteResponse(exit=pb.ExecuteExit(exit_code=-9, timed_out=True)),
    ),
    Event(
        "exit_zero_is_still_an_exit",
        ExecExit(exit_code=0),
        pb.ExecuteResponse(exit=pb.ExecuteExit()),
    ),
]


class TestExecEvents:
    @pytest.mark.parametrize("case", EVENTS, ids=[c.name for c in EVENTS])
    def test_each_event_is_one_response(self, case: Event) -> None:
        msg = convert.exec_event_to_proto(case.event)
        assert msg == case.expected
        assert msg.WhichOneof("output") == case.expected.WhichOneof("output")

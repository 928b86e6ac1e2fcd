"""common/validation.py: every request is checked at the edge, in linear time, and a
refusal names the limit without echoing more than a short prefix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.limits import MAX_ARGV_BYTES, MAX_PORTS, QUOTE, Limits
from common.validation import quote, validate
from protos import agent_pb2 as pb
from protos import manager_pb2 as mpb


def spec(**fields: Any) -> pb.KernelSpec:
    fields.setdefault("kernel_id", "k")
    fields.setdefault("command", ["sleep", "1"])
    return pb.KernelSpec(**fields)


def create(*specs: pb.KernelSpec) -> pb.CreateKernelsRequest:
    return pb.CreateKernelsRequest(agent_id="a0", kernels=list(specs))


@dataclass(frozen=True)
class Bad:
    """A request refused with exactly this message."""

    name: str
    request: Any
    message: str
    limits: Limits = field(default_factory=Limits)


LONG_ID = "k" * 300
BAD = [
    Bad(
        "kernel-id-too-long-is-quoted-short",
        create(spec(kernel_id=LONG_ID)),
        f"kernel_id {LONG_ID[:QUOTE]!r}... (300 characters) is not valid: 1-63 characters "
        "of letters, digits, '_', '.', '-', starting with a letter or digit",
    ),
    Bad("empty-batch", create(), "kernels: give at least one kernel spec"),
    Bad(
        "batch-past-max-batch",
        create(*(spec(kernel_id=f"k{i}") for i in range(5))),
        "kernels: 5 specs in one batch, at most 4 allowed (max_batch)",
        Limits(max_batch=4),
    ),
    Bad(
        "repeated-id-in-batch",
        create(spec(kernel_id="a"), spec(kernel_id="a")),
        "kernel ids repeat within the batch: 'a' is given twice",
    ),
    Bad(
        "empty-argv0",
        create(spec(command=["", "x"])),
        "kernel 'k': command[0]: the program to run must not be empty",
    ),
    Bad(
        "nul-in-env-value",
        create(spec(env={"A": "x\0y"})),
        "kernel 'k': env key 'A' is not a valid environment variable name "
        "(non-empty, no '=' and no NUL byte)",
    ),
    Bad(
        "argv-past-its-size",
        create(spec(command=["x" * (MAX_ARGV_BYTES // 2), "y" * (MAX_ARGV_BYTES // 2)])),
        "kernel 'k': command: 131074 bytes in all, at most 131072 (128KiB) allowed",
    ),
    Bad(
        "thousands-of-ports",
        create(spec(ports=[pb.ServicePort(name=f"p{i}") for i in range(3000)])),
        f"kernel 'k': ports: 3000 given, at most {MAX_PORTS} allowed",
    ),
    Bad(
        "memory-below-the-floor",
        create(spec(resources=pb.ResourceRequest(memory_bytes=1024))),
        "kernel 'k': resources.memory_bytes: 1024 is below the 6MiB a kernel needs to run "
        "(0: no reservation)",
    ),
    Bad(
        "nan-cpu-quota",
        create(spec(resources=pb.ResourceRequest(cpu_quota=float("nan")))),
        "kernel 'k': resources.cpu_quota must be a finite number from 0 to 4096, not nan",
    ),
    Bad(
        "infinite-grace",
        pb.DestroyKernelRequest(kernel_id="k", grace_seconds=float("inf")),
        "grace_seconds must be a finite number of seconds from 0 to 3600, not inf",
    ),
    Bad(
        "nan-timeout",
        pb.ExecuteRequest(kernel_id="k", argv=["true"], timeout=float("nan")),
        "timeout must be a finite number of seconds from 0 to 604800, not nan",
    ),
    Bad("exec-without-argv", pb.ExecuteRequest(kernel_id="k"), "argv: give the command to execute"),
    Bad(
        "stdin-past-one-message",
        pb.ExecuteRequest(kernel_id="k", argv=["cat"], stdin=b"x" * (2 << 20)),
        "stdin: 2MiB given, at most 1MiB in one Execute",
    ),
    Bad(
        "log-bytes-past-one-reply",
        pb.GetKernelLogsRequest(kernel_id="k", max_bytes=64 << 20),
        "max_bytes: 67108864 given, at most 3145728 allowed",
    ),
    Bad(
        "page-too-big",
        pb.ListKernelsRequest(page_size=5000),
        "page_size: 5000 given, at most 1000 allowed",
    ),
    Bad(
        "label-key-with-a-space",
        pb.ListKernelsRequest(labels={"a b": "c"}),
        "label key 'a b' is not valid: 1-253 characters of letters, digits, '_', '.', '-', "
        "'/', starting and ending with a letter or digit",
    ),
    Bad(
        "manager-create-with-a-nul-image",
        mpb.CreateKernelRequest(spec=spec(image="a\0b")),
        "kernel 'k': image 'a\\x00b' contains a NUL byte",
    ),
    Bad(
        "delegate-limits-without-delegate",
        mpb.CreateKernelRequest(spec=spec(), delegate_limits=mpb.DelegateLimits(kernels=2)),
        "delegate_limits: given without delegate (limits bound what a delegating kernel "
        "creates; set delegate too)",
    ),
    Bad(
        "delegate-kernels-past-the-bound",
        mpb.CreateKernelRequest(
            spec=spec(), delegate=True, delegate_limits=mpb.DelegateLimits(kernels=10_001)
        ),
        "delegate_limits.kernels: 10001 given, at most 10000 allowed",
    ),
    Bad(
        "missing-kernel-id",
        pb.GetKernelRequest(agent_id="a0"),
        "kernel_id is required",
    ),
    Bad(
        "prune-with-negative-age",
        mpb.PruneKernelsRequest(older_than=-1),
        "older_than must be a finite number of seconds from 0 to 315360000, not -1.0",
    ),
]


class TestRefusals:
    @pytest.mark.parametrize("case", BAD, ids=[c.name for c in BAD])
    def test_is_invalid_argument_with_the_exact_message(self, case: Bad) -> None:
        with pytest.raises(InvalidArgument) as err:
            validate(case.request, case.limits)
        assert str(err.value) == case.message


class TestAccepted:
    @pytest.mark.parametrize(
        "request_",
        [
            create(spec(), spec(kernel_id="", command=[])),
            pb.GetKernelRequest(kernel_id="k"),
            pb.ExecuteRequest(kernel_id="k", argv=["sh", "-c", "true"], timeout=5),
            pb.ListKernelsRequest(
                states=[pb.KERNEL_STATE_RUNNING], labels={"agenthost.io/group": "g"}
            ),
            pb.ListAgentsRequest(),
            mpb.CreateKernelRequest(
                spec=spec(), delegate=True, delegate_limits=mpb.DelegateLimits(cores=0)
            ),
        ],
        ids=["batch", "get", "exec", "list-filtered", "no-rules", "delegate"],
    )
    def test_passes(self, request_: Any) -> None:
        validate(request_)


class TestQuote:
    def test_long_values_are_cut(self) -> None:
        assert quote("x" * 1000) == f"{'x' * QUOTE!r}... (1000 characters)"
        assert quote("short") == "'short'"


TEXT = st.text(max_size=80)


@st.composite
def kernel_specs(draw: st.DrawFn) -> pb.KernelSpec:
    return pb.KernelSpec(
        kernel_id=draw(TEXT),
        image=draw(TEXT),
        command=draw(st.lists(TEXT, max_size=5)),
        env=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
        labels=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
        ports=[pb.ServicePort(name=n) for n in draw(st.lists(TEXT, max_size=4))],
        resources=pb.ResourceRequest(
            memory_bytes=draw(st.integers(0, 2**64 - 1)),
            cpu_quota=draw(st.floats()),
            cores=draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4)),
        ),
    )


class TestProperties:
    @settings(max_examples=300, deadline=None)
    @given(specs=st.lists(kernel_specs(), max_size=4))
    def test_a_create_is_accepted_or_refused_precisely_and_briefly(
        self, specs: list[pb.KernelSpec]
    ) -> None:
        request = create(*specs)
        try:
            validate(request)
        except InvalidArgument as exc:
            assert len(str(exc)) < 400

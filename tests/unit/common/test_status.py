"""common/status.py: the one table between domain errors and gRPC status codes."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import grpc
import pytest

from common import errors
from common.errors import (
    Aborted,
    AgentHostError,
    AlreadyExists,
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from common.status import STATUS_CODES, error_class, status_code
from daemon.errors import CheckpointError


@dataclass(frozen=True)
class Code:
    """Errors of class `error` end their call with `code`."""

    error: type[AgentHostError]
    code: grpc.StatusCode


TABLE = [
    Code(InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    Code(NotFound, grpc.StatusCode.NOT_FOUND),
    Code(AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    Code(ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    Code(FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    Code(Unavailable, grpc.StatusCode.UNAVAILABLE),
    Code(Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    Code(Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    Code(PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    Code(Aborted, grpc.StatusCode.ABORTED),
]


class _GoneAgent(NotFound):
    """A subclass the table does not name."""


class _GoneAgentOnALostDaemon(_GoneAgent):
    """Two levels below NotFound."""


class _NotFoundAndDown(NotFound, Unavailable):
    """Two mapped bases: the first in the MRO wins."""


SUBCLASSES = [
    Code(ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    Code(CheckpointError, grpc.StatusCode.FAILED_PRECONDITION),
    Code(_GoneAgent, grpc.StatusCode.NOT_FOUND),
    Code(_GoneAgentOnALostDaemon, grpc.StatusCode.NOT_FOUND),
    Code(_NotFoundAndDown, grpc.StatusCode.NOT_FOUND),
]


def make(cls: type[AgentHostError]) -> AgentHostError:
    return ConfigError(["a problem"]) if cls is ConfigError else cls("a problem")


class TestStatusCode:
    @pytest.mark.parametrize("case", TABLE, ids=[c.error.__name__ for c in TABLE])
    def test_each_domain_error_has_its_code(self, case: Code) -> None:
        assert status_code(make(case.error)) == case.code

    @pytest.mark.parametrize("case", SUBCLASSES, ids=[c.error.__name__ for c in SUBCLASSES])
    def test_a_subclass_takes_its_nearest_mapped_base_code(self, case: Code) -> None:
        assert status_code(make(case.error)) == case.code

    def test_the_base_class_itself_is_internal(self) -> None:
        assert status_code(AgentHostError("odd")) == grpc.StatusCode.INTERNAL

    def test_every_shared_domain_error_is_in_the_table(self) -> None:
        shared = {
            cls
            for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, AgentHostError) and cls is not AgentHostError
        }
        assert shared - {ConfigError} == set(STATUS_CODES)
        assert {c.error for c in TABLE} == set(STATUS_CODES)

    def test_no_two_errors_share_a_code(self) -> None:
        assert len(set(STATUS_CODES.values())) == len(STATUS_CODES)


class TestErrorClass:
    @pytest.mark.parametrize("case", TABLE, ids=[c.code.name for c in TABLE])
    def test_a_code_comes_back_as_its_error(self, case: Code) -> None:
        assert error_class(case.code) is case.error

    @pytest.mark.parametrize("case", TABLE, ids=[c.code.name for c in TABLE])
    def test_code_to_error_to_code_is_the_identity(self, case: Code) -> None:
        cls = error_class(case.code)
        assert cls is not None and status_code(cls("x")) == case.code

    @pytest.mark.parametrize(
        "code",
        [c for c in grpc.StatusCode if c not in STATUS_CODES.values()],
        ids=lambda c: c.name,
    )
    def test_codes_with_no_domain_meaning_have_no_error(self, code: grpc.StatusCode) -> None:
        assert error_class(code) is None

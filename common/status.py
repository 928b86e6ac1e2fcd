"""The one table between domain errors and gRPC status codes, both ways.

Servers turn a raised domain error into its status code (`status_code`);
clients turn a peer's status back into the domain error of the same meaning
(`error_for_status`), so an error crosses a hop with its code and message.
"""

from __future__ import annotations

import grpc

from common.errors import (
    Aborted,
    AgentHostError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unsupported,
)

STATUS_CODES: dict[type[AgentHostError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Aborted: grpc.StatusCode.ABORTED,
}

_ERRORS: dict[grpc.StatusCode, type[AgentHostError]] = {
    code: cls for cls, code in STATUS_CODES.items()
}


def status_code(exc: AgentHostError) -> grpc.StatusCode:
    """The gRPC status code of a domain error (its nearest mapped base class)."""
    return status_code_of(type(exc))


def status_code_of(error: type[BaseException]) -> grpc.StatusCode:
    """The gRPC status code of a kind of domain error (its nearest mapped base class)."""
    for cls in error.__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def error_class(code: grpc.StatusCode) -> type[AgentHostError] | None:
    """The domain error a status code stands for, or None for codes with no meaning here."""
    return _ERRORS.get(code)

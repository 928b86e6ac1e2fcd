"""The apiserver's `Status` objects: every error the stand-in answers is built here.

Shapes, reasons and message wording follow what a real kube-apiserver sends, so that a
backend parsing `ApiException.body` (reason, code, details.causes) sees the same thing it
would see against a cluster. This module knows nothing of HTTP routing or of pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Cause:
    """One `details.causes[]` entry: a field path, a machine reason and a message."""

    reason: str
    message: str
    field: str = ""

    def to_json(self) -> JsonObject:
        """The cause as the apiserver serialises it (empty field omitted)."""
        out: JsonObject = {"reason": self.reason, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


class ApiError(Exception):
    """An error answer: raised anywhere in a handler, written as a Status by one middleware."""

    def __init__(self, status: JsonObject) -> None:
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        """The HTTP status code the Status carries."""
        return int(self.status["code"])


def status_object(
    code: int, reason: str, message: str, details: JsonObject | None = None
) -> JsonObject:
    """A failure `Status` as the apiserver writes it."""
    out: JsonObject = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details is not None:
        out["details"] = details
    out["code"] = code
    return out


def success_status(details: JsonObject | None = None) -> JsonObject:
    """A `Success` Status (what the remotecommand error channel sends for exit code 0)."""
    out: JsonObject = {"metadata": {}, "status": "Success"}
    if details is not None:
        out["details"] = details
    return out


def not_found(resource: str, name: str) -> ApiError:
    """404 `pods "x" not found`."""
    return ApiError(
        status_object(
            404, "NotFound", f'{resource} "{name}" not found', {"name": name, "kind": resource}
        )
    )


def path_not_found() -> ApiError:
    """404 for a path the stand-in does not serve, worded as the apiserver words it."""
    return ApiError(
        status_object(404, "NotFound", "the server could not find the requested resource", {})
    )


def already_exists(resource: str, name: str) -> ApiError:
    """409 `pods "x" already exists`."""
    return ApiError(
        status_object(
            409,
            "AlreadyExists",
            f'{resource} "{name}" already exists',
            {"name": name, "kind": resource},
        )
    )


def conflict(resource: str, name: str, message: str) -> ApiError:
    """409 Conflict, e.g. a failed delete precondition."""
    return ApiError(
        status_object(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource} "{name}": {message}',
            {"name": name, "kind": resource},
        )
    )


def invalid(kind: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid with one cause per field error, message as `Pod "x" is invalid: ...`."""
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        status_object(
            422,
            "Invalid",
            f'{kind} "{name}" is invalid: {summary}',
            {"name": name, "kind": kind, "causes": [c.to_json() for c in causes]},
        )
    )


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(status_object(400, "BadRequest", message))


def undecodable(kind: str, message: str) -> ApiError:
    """400 for a body that does not decode into the kind (wrong JSON types, bad quantities)."""
    return bad_request(f'{kind} in version "v1" cannot be handled as a {kind}: {message}')


def unauthorized() -> ApiError:
    """401 Unauthorized, for a missing or wrong bearer token."""
    return ApiError(status_object(401, "Unauthorized", "Unauthorized"))


def method_not_allowed(verb: str, resource: str) -> ApiError:
    """405 for a verb the stand-in does not serve on a path it knows."""
    return ApiError(
        status_object(
            405,
            "MethodNotAllowed",
            f"the server does not allow this method on the requested resource ({verb} {resource})",
            {},
        )
    )


def expired(requested: int, oldest: int) -> JsonObject:
    """410 Expired: a watch asked for events older than the kept history."""
    return status_object(410, "Expired", f"too old resource version: {requested} ({oldest})")


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """504 Timeout: a watch or get asked for a resourceVersion the server has not reached."""
    return ApiError(
        status_object(
            504,
            "Timeout",
            f"Timeout: Too large resource version: {requested}, current: {current}",
            {
                "causes": [
                    {
                        "reason": "ResourceVersionTooLarge",
                        "message": "Too large resource version",
                    }
                ],
                "retryAfterSeconds": 1,
            },
        )
    )


def internal_error(message: str) -> JsonObject:
    """500 InternalError, with the message repeated as the single cause (as the apiserver does)."""
    return status_object(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def status_for(code: int, reason: str, message: str) -> ApiError:
    """Any Status a test wants the stand-in to answer with (fault injection)."""
    return ApiError(status_object(code, reason, message, {}))

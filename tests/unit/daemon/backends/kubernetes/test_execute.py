"""The exit code of an exec, from the Status the kubelet writes on the error channel."""

from __future__ import annotations

import json

import pytest

from daemon.backends.kubernetes.execute import exit_code


def status(**fields: object) -> bytes:
    return json.dumps({"metadata": {}, **fields}).encode()


class TestExitCode:
    def test_success_is_zero(self) -> None:
        assert exit_code(status(status="Success")) == (0, b"")

    def test_a_non_zero_exit_code_is_the_causes_message(self) -> None:
        failure = status(
            status="Failure",
            reason="NonZeroExitCode",
            details={"causes": [{"reason": "ExitCode", "message": "7"}]},
        )
        assert exit_code(failure) == (7, b"")

    def test_a_command_that_cannot_start_is_127_with_the_runtimes_message(self) -> None:
        message = 'exec: "nope": executable file not found in $PATH: unknown'
        code, stderr = exit_code(status(status="Failure", reason="InternalError", message=message))
        assert (code, stderr) == (127, message.encode() + b"\n")

    def test_other_failures_are_126(self) -> None:
        code, _ = exit_code(status(status="Failure", reason="InternalError", message="denied"))
        assert code == 126

    @pytest.mark.parametrize("text", [b"", b"not json", b"[]"])
    def test_no_status_is_an_error(self, text: bytes) -> None:
        with pytest.raises(ValueError):
            exit_code(text)

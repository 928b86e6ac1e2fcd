"""`agenthost kernel create --delegate*` flags, checked before any call is made."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from manager.cli.connection import _ca_source
from manager.cli.kernels import _delegate_limits, kernel_group


class TestDelegateFlags:
    def test_limits_without_delegate_are_a_usage_error(self) -> None:
        result = CliRunner().invoke(
            kernel_group,
            ["create", "--delegate-cores", "2", "--delegate-kernels", "3", "--", "true"],
        )
        assert result.exit_code == 2
        assert "--delegate-cores, --delegate-kernels only go with --delegate" in result.output

    def test_unset_limits_stay_unset_and_memory_is_a_size(self) -> None:
        limits = _delegate_limits(True, None, "1GiB", 2)
        assert limits is not None
        assert not limits.HasField("cores")
        assert (limits.memory_bytes, limits.kernels) == (1 << 30, 2)
        assert _delegate_limits(False, None, None, None) is None


class TestCaSource:
    def test_pem_text_is_taken_as_it_is_and_anything_else_is_a_path(self) -> None:
        pem = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n"
        assert _ca_source(pem) == pem.encode()
        assert _ca_source("/etc/ca.crt") == Path("/etc/ca.crt")
        assert _ca_source(None) is None and _ca_source("") is None

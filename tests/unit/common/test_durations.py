"""Durations as people write them."""

from __future__ import annotations

import pytest

from common.durations import format_duration, parse_duration
from common.errors import InvalidArgument


class TestDurations:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("90s", 90),
            ("15m", 900),
            ("8h", 28800),
            ("30d", 2592000),
            ("1h30m", 5400),
            ("2w", 1209600),
            ("42", 42),
            ("0.5", 0.5),
        ],
    )
    def test_parse(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == seconds

    @pytest.mark.parametrize("text", ["", "10x", "m", "1h 30m", "-5", "nan", "inf", "5m3"])
    def test_refused(self, text: str) -> None:
        with pytest.raises(InvalidArgument):
            parse_duration(text)

    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(3600, "1h"), (5400, "1h30m"), (42, "42s"), (0, "0s"), (90061, "1d1h1m1s")],
    )
    def test_format(self, seconds: float, text: str) -> None:
        assert format_duration(seconds) == text

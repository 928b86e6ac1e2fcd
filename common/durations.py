"""Durations as people write them: `90s`, `15m`, `8h`, `30d`, `1h30m`."""

from __future__ import annotations

import re

from common.errors import InvalidArgument

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DURATION_SYNTAX = "a number with a unit s, m, h, d or w, e.g. 90s, 15m, 8h, 30d, 1h30m"


def parse_duration(text: str) -> float:
    """Seconds in text; InvalidArgument for anything else (a bare number is seconds)."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds < 0 or seconds != seconds or seconds == float("inf"):
            raise InvalidArgument(f"duration {text[:32]!r} must be finite and not negative")
        return seconds
    parts = _PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise InvalidArgument(f"duration {text[:32]!r} is not {DURATION_SYNTAX}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """3600 -> '1h', 5400 -> '1h30m', 42 -> '42s'."""
    remaining = int(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if remaining >= size:
            out += f"{remaining // size}{unit}"
            remaining %= size
    if remaining or not out:
        out += f"{remaining}s"
    return out

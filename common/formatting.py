"""Text for people: counts with plurals, byte sizes, aligned tables."""

from __future__ import annotations

from collections.abc import Sequence


def plural(count: int, word: str) -> str:
    """'1 agent', '3 agents'."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def format_bytes(n: int) -> str:
    """2147483648 -> '2GiB'; exact binary units where possible."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    if n < 1 << 20 and n % 1024 == 0 and n:
        return f"{n // 1024}KiB"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f}GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f}MiB"
    return f"{n}B"


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
        for r in [headers, *rows]
    ]
    return "\n".join(lines)

"""The engine's framed stdout/stderr stream, demultiplexed."""

from __future__ import annotations

import struct

from daemon.backends.docker.execute import demultiplex


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(data)) + data


class TestDemultiplex:
    def test_payloads_are_joined_in_order(self) -> None:
        raw = frame(1, b"out\n") + frame(2, b"err\n") + frame(1, b"more")
        assert demultiplex(raw) == b"out\nerr\nmore"

    def test_a_truncated_frame_keeps_what_arrived(self) -> None:
        assert demultiplex(frame(1, b"whole") + frame(1, b"partial")[:-3]) == b"wholepart"

    def test_nothing_is_nothing(self) -> None:
        assert demultiplex(b"") == b""

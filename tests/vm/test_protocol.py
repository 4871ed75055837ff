"""The guest agent's framing, without QEMU."""

from __future__ import annotations

import base64

import pytest

from persona.errors import VmError
from persona.vm import protocol


def frame(rid: int, rc: int, out: bytes, err: bytes, wrap: int = 76) -> bytes:
    def b64(b: bytes) -> bytes:
        s = base64.b64encode(b)
        return b"".join(s[i:i + wrap] + b"\n" for i in range(0, len(s), wrap))
    return (f"RES {rid} {rc} {len(out)} {len(err)}\n".encode() + b64(out) + b"--\n" + b64(err)
            + f"END {rid}\n".encode())


def test_request_frame_carries_script_and_data_lengths() -> None:
    raw = protocol.encode_request(7, "echo hi", 2.4, b"\x00\x01")
    head, _, body = raw.partition(b"\n")
    kw, rid, to, n, m = head.split()
    assert (kw, rid, to) == (b"REQ", b"7", b"2")
    assert base64.b64decode(body[:int(n)]) == b"echo hi"
    assert base64.b64decode(body[int(n):]) == b"\x00\x01" and len(body) == int(n) + int(m)
    with pytest.raises(ValueError):
        protocol.encode_request(-1, "x", 1)


def test_ready_noise_and_result_split_at_every_byte() -> None:
    out = bytes(range(256)) * 3
    stream = b"garbage from boot\r\nREADY abc-123 2.50\n" + frame(3, 1, out, b"oops\n")
    p = protocol.Parser()
    events: list[protocol.Event] = []
    for i in range(len(stream)):
        events += p.feed(stream[i:i + 1])
    assert events[0] == protocol.Ready("abc-123", 2.5)
    res = events[1]
    assert isinstance(res, protocol.Result)
    assert (res.id, res.rc, res.stdout, res.stderr) == (3, 1, out, b"oops\n")
    assert p.noise_lines == 1
    with pytest.raises(VmError, match=r"exit 1.*oops"):
        res.check("thing")


def test_empty_output_and_back_to_back_results() -> None:
    p = protocol.Parser()
    evs = p.feed(frame(1, 0, b"", b"") + frame(2, 0, b"x", b""))
    assert [e.id for e in evs if isinstance(e, protocol.Result)] == [1, 2]
    assert isinstance(evs[0], protocol.Result) and evs[0].stdout == b""


def test_length_mismatch_and_wrong_end_are_errors() -> None:
    bad = frame(1, 0, b"abcd", b"").replace(b"RES 1 0 4", b"RES 1 0 5")
    with pytest.raises(VmError, match="corrupted"):
        protocol.Parser().feed(bad)
    with pytest.raises(VmError, match="ended with"):
        protocol.Parser().feed(frame(1, 0, b"a", b"").replace(b"END 1", b"END 2"))
    with pytest.raises(VmError, match="bad base64"):
        protocol.Parser().feed(b"RES 1 0 1 0\n!!!\n--\n\nEND 1\n")

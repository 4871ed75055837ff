"""The guest agent's wire protocol: pure framing, no I/O.

The channel is a byte stream (the guest's second serial port, ``/dev/ttyS1`` in raw mode,
backed on the host by a QEMU unix-socket chardev). One request at a time:

host -> guest::

    REQ <id> <timeout_s> <n> <m>\\n<n bytes: base64 of a POSIX shell script><m bytes: base64 data>

The script finds the decoded data (file contents to write, an archive to unpack) in the file
named by ``$PERSONA_DATA``; shipping data beside the script keeps it out of the shell's parser.

guest -> host::

    READY <boot_id> <uptime_s>\\n                  (once, when the agent starts)
    RES <id> <rc> <stdout_len> <stderr_len>\\n
    <base64 of stdout, any line wrapping>\\n
    --\\n
    <base64 of stderr>\\n
    END <id>\\n

Lines that are not part of a frame (noise before the agent starts) are skipped and counted.
The payload is read by the guest with ``head -c n`` (block reads), so large scripts do not go
through the shell's byte-at-a-time ``read``. Lengths are checked after decoding.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from persona.errors import VmError


@dataclass(frozen=True)
class Ready:
    boot_id: str
    uptime_s: float


@dataclass(frozen=True)
class Result:
    id: int
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def check(self, what: str) -> Result:
        """Raise VmError naming ``what`` and the guest's stderr if rc != 0."""
        if self.rc != 0:
            err = self.stderr.decode("utf-8", "replace").strip()[-500:]
            raise VmError(f"{what} failed in the guest (exit {self.rc}): {err or '(no stderr)'}")
        return self


Event = Ready | Result


def encode_request(req_id: int, script: str, timeout_s: float, data: bytes = b"") -> bytes:
    """One request frame. ``timeout_s`` is enforced by the guest (``timeout -s KILL``)."""
    if req_id < 0:
        raise ValueError("request id must be >= 0")
    t = max(1, round(timeout_s))
    payload = base64.b64encode(script.encode())
    blob = base64.b64encode(data)
    return f"REQ {req_id} {t} {len(payload)} {len(blob)}\n".encode() + payload + blob


@dataclass
class Parser:
    """Incremental parser of the guest -> host stream: ``feed(bytes)`` returns complete events."""

    _buf: bytes = b""
    _state: str = "idle"  # idle | out | err
    _head: tuple[int, int, int, int] | None = None
    _out: list[bytes] = field(default_factory=list)
    _err: list[bytes] = field(default_factory=list)
    noise_lines: int = 0

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        events: list[Event] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line, self._buf = self._buf[:nl].rstrip(b"\r"), self._buf[nl + 1:]
            ev = self._line(line)
            if ev is not None:
                events.append(ev)
        return events

    def _line(self, line: bytes) -> Event | None:
        if self._state == "idle":
            f = line.split()
            if len(f) == 3 and f[0] == b"READY":
                try:
                    return Ready(f[1].decode(), float(f[2]))
                except ValueError:
                    self.noise_lines += 1
                    return None
            if len(f) == 5 and f[0] == b"RES":
                try:
                    self._head = (int(f[1]), int(f[2]), int(f[3]), int(f[4]))
                except ValueError as e:
                    raise VmError(f"guest agent sent a malformed result header {line!r}") from e
                self._state, self._out, self._err = "out", [], []
                return None
            self.noise_lines += 1
            return None
        if self._state == "out":
            if line == b"--":
                self._state = "err"
            else:
                self._out.append(line)
            return None
        # state err
        assert self._head is not None
        if line.startswith(b"END "):
            rid, rc, nout, nerr = self._head
            if line.split()[1:] != [str(rid).encode()]:
                raise VmError(f"guest agent frame for request {rid} ended with {line!r}")
            out, err = _b64(b"".join(self._out), rid), _b64(b"".join(self._err), rid)
            if len(out) != nout or len(err) != nerr:
                raise VmError(f"guest agent result {rid}: got {len(out)}/{len(err)} bytes of "
                              f"stdout/stderr, header said {nout}/{nerr} (channel corrupted)")
            self._state, self._head = "idle", None
            return Result(rid, rc, out, err)
        self._err.append(line)
        return None


def _b64(data: bytes, rid: int) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VmError(f"guest agent result {rid}: bad base64 ({e})") from e

"""A tiny RESP (redis protocol) client and connection pool: the demo apps carry no dependencies."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RedisConn:
    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError(f"bad RESP reply {line!r}")

    def cmd(self, *args: object):
        parts = [str(a).encode() if not isinstance(a, bytes) else a for a in args]
        out = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.sock.sendall(out)
        return self._reply()

    def read_push(self):
        """The next message pushed by redis on a (P)SUBSCRIBEd connection (blocks)."""
        return self._reply()

    def close(self) -> None:
        self.sock.close()


def when_loaded(conn: RedisConn, *args: object, wait_s: float = 120.0):
    """``conn.cmd(*args)``, retried while redis answers ``LOADING`` (it is still reading its
    dataset from disk after a start: a cold start of the host)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return conn.cmd(*args)
        except RuntimeError as e:
            if not str(e).startswith("LOADING") or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Pool:
    """Fixed-size pool of persistent connections, opened eagerly (they stay ESTABLISHED)."""

    def __init__(self, host: str, port: int, size: int, timeout: float) -> None:
        self.host, self.port, self.size, self.timeout = host, port, size, timeout
        self.free = [RedisConn(host, port, timeout) for _ in range(size)]
        self.cond = threading.Condition()
        self.in_use = 0
        self.waits = 0

    @contextmanager
    def conn(self) -> Iterator[RedisConn]:
        with self.cond:
            if not self.free:
                self.waits += 1
            while not self.free:
                self.cond.wait()
            c = self.free.pop()
            self.in_use += 1
        ok = False
        try:
            yield c
            ok = True
        finally:
            if not ok:
                c.close()
                c = RedisConn(self.host, self.port, self.timeout)
            with self.cond:
                self.free.append(c)
                self.in_use -= 1
                self.cond.notify()

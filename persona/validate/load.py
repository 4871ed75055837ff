"""Asyncio load generators against an HTTP/1.1 API (keep-alive, no third-party client).

- :func:`open_loop`: requests at a fixed rate, each timed from its *intended* send time
  (wrk2-style, no coordinated omission: a stalled server makes queued requests late, and that
  lateness is counted); connections are taken from a pool and opened on demand up to a cap.
- :func:`closed_loop`: fixed concurrency, completions per window (throughput).
- :func:`replay`: the functional corpus, one request at a time, full responses kept.
All bounded by explicit durations and per-request timeouts; seeded key choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from persona.detect.probes import LAB_SUBNETS, check_address
from persona.errors import ValidationError

# where validation traffic may go: the container lab's network and the VM lab's bridge
# (persona.vm.net.SUBNET), both created by the project; plus loopback (check_address)
VALIDATION_SUBNETS = (*LAB_SUBNETS, ipaddress.ip_network("10.78.0.0/24"))


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @staticmethod
    def parse(api_url: str) -> Endpoint:
        u = urllib.parse.urlsplit(api_url)
        if u.scheme != "http" or not u.hostname:
            raise ValidationError(f"api_url must be http://IP:PORT, got {api_url!r}")
        try:
            check_address(u.hostname, VALIDATION_SUBNETS)
        except Exception as e:
            raise ValidationError(str(e)) from e
        return Endpoint(u.hostname, u.port or 80)


class Conn:
    """One keep-alive HTTP/1.1 connection (Content-Length bodies only, as the demo API sends)."""

    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @staticmethod
    async def open(ep: Endpoint) -> Conn:
        r, w = await asyncio.open_connection(ep.host, ep.port)
        return Conn(r, w)

    def _quickack(self) -> None:
        # The demo API writes headers and body separately without TCP_NODELAY: with our delayed
        # ACK that costs 40 ms per response (Nagle), hiding what we measure. Quick ACKs avoid it.
        sock = self.w.get_extra_info("socket")
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    async def get(self, ep: Endpoint, path: str, method: str = "GET") -> tuple[int, bytes]:
        self._quickack()
        self.w.write(f"{method} {path} HTTP/1.1\r\nHost: {ep.host}\r\n\r\n".encode())
        await self.w.drain()
        head = await self.r.readuntil(b"\r\n\r\n")
        self._quickack()
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        body = await self.r.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.w.close()


class ConnPool:
    def __init__(self, ep: Endpoint, cap: int) -> None:
        self.ep, self.cap, self.opened = ep, cap, 0
        self.sem = asyncio.Semaphore(cap)
        self.free: list[Conn] = []

    async def request(self, path: str, timeout: float) -> tuple[int, bytes]:
        async with self.sem:
            if self.free:
                conn = self.free.pop()
            else:
                conn = await asyncio.wait_for(Conn.open(self.ep), timeout)
                self.opened += 1
            try:
                res = await asyncio.wait_for(conn.get(self.ep, path), timeout)
            except BaseException:
                conn.close()
                raise
            self.free.append(conn)
            return res

    def close(self) -> None:
        for c in self.free:
            c.close()
        self.free.clear()


def item_paths(items: int, seed: int) -> Callable[[], str]:
    rng = np.random.default_rng(seed)
    return lambda: f"/item/{int(rng.integers(items))}"


@dataclass
class LoadResult:
    """Per request: intended offset from start (s), latency from intended send (ms), ok flag."""

    rate_hz: float
    duration_s: float
    intended_s: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    ok: list[bool] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return len(self.ok)

    @property
    def error_count(self) -> int:
        return self.sent - sum(self.ok)

    def ok_latencies(self) -> list[float]:
        return [lat for lat, ok in zip(self.latency_ms, self.ok, strict=True) if ok]


def _ok_status(status: int) -> bool:
    return 200 <= status < 300


async def _open_loop(
    ep: Endpoint,
    rate_hz: float,
    duration_s: float,
    paths: Callable[[], str],
    timeout_s: float,
    max_conns: int,
) -> LoadResult:
    res = LoadResult(rate_hz, duration_s)
    pool = ConnPool(ep, max_conns)
    n = max(1, int(rate_hz * duration_s))
    loop = asyncio.get_running_loop()
    t0 = loop.time() + 0.05

    async def one(i: int, path: str) -> None:
        intended = t0 + i / rate_hz
        await asyncio.sleep(max(0.0, intended - loop.time()))
        ok, err = False, ""
        try:
            status, _ = await asyncio.wait_for(pool.request(path, timeout_s), timeout_s)
            ok = _ok_status(status)
            err = "" if ok else f"HTTP {status}"
        except TimeoutError:
            err = "timeout"
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            err = type(e).__name__
        res.intended_s.append(intended - t0)
        res.latency_ms.append((loop.time() - intended) * 1000.0)
        res.ok.append(ok)
        if err:
            res.errors[err] = res.errors.get(err, 0) + 1

    try:
        await asyncio.gather(*(one(i, paths()) for i in range(n)))
    finally:
        pool.close()
    return res


def open_loop(
    api_url: str,
    rate_hz: float,
    duration_s: float,
    items: int,
    seed: int,
    timeout_s: float = 2.0,
    max_conns: int = 16,
) -> LoadResult:
    """Fixed-rate GETs of random items for ``duration_s``; latency from intended send times."""
    if rate_hz <= 0 or duration_s <= 0:
        raise ValidationError("open-loop load needs rate_hz > 0 and duration_s > 0")
    ep = Endpoint.parse(api_url)
    return asyncio.run(
        _open_loop(ep, rate_hz, duration_s, item_paths(items, seed), timeout_s, max_conns)
    )


async def _closed_loop(
    ep: Endpoint,
    concurrency: int,
    windows: int,
    window_s: float,
    paths: Callable[[], str],
    timeout_s: float,
) -> list[float]:
    loop = asyncio.get_running_loop()
    counts = [0] * windows
    t0 = loop.time()
    end = t0 + windows * window_s

    async def worker() -> None:
        conn: Conn | None = None
        while loop.time() < end:
            try:
                if conn is None:
                    conn = await asyncio.wait_for(Conn.open(ep), timeout_s)
                status, _ = await asyncio.wait_for(conn.get(ep, paths()), timeout_s)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                if conn is not None:
                    conn.close()
                conn = None
                await asyncio.sleep(0.01)
                continue
            w = int((loop.time() - t0) / window_s)
            if _ok_status(status) and w < windows:
                counts[w] += 1
        if conn is not None:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [c / window_s for c in counts]


def closed_loop(
    api_url: str,
    concurrency: int,
    windows: int,
    window_s: float,
    items: int,
    seed: int,
    timeout_s: float = 2.0,
) -> list[float]:
    """Successful requests per second in each of ``windows`` windows at fixed concurrency."""
    ep = Endpoint.parse(api_url)
    return asyncio.run(
        _closed_loop(ep, concurrency, windows, window_s, item_paths(items, seed), timeout_s)
    )


async def _replay(
    ep: Endpoint, corpus: Sequence[Mapping[str, str]], timeout_s: float, deadline_s: float
) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    conn: Conn | None = None
    end = time.monotonic() + deadline_s
    for req in corpus:
        if time.monotonic() > end:
            out.append((0, b"<deadline>"))
            continue
        try:
            if conn is None:
                conn = await asyncio.wait_for(Conn.open(ep), timeout_s)
            out.append(await asyncio.wait_for(conn.get(ep, req["path"], req["method"]), timeout_s))
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            out.append((0, f"<{type(e).__name__}>".encode()))
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()
    return out


def replay(
    api_url: str,
    corpus: Sequence[Mapping[str, str]],
    timeout_s: float = 2.0,
    deadline_s: float = 10.0,
) -> list[tuple[int, bytes]]:
    """Each request of the corpus once, sequentially; transport errors become status 0, and
    requests not sent before ``deadline_s`` become status 0 ``<deadline>``."""
    return asyncio.run(_replay(Endpoint.parse(api_url), corpus, timeout_s, deadline_s))


def monotonic() -> float:
    return time.monotonic()

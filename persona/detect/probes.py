"""Live probes (the thin adapter): TCP connect and HTTP GET, each bounded by a timeout.

Only lab addresses (10.77.0.0/24 by default, the network the lab creates) or loopback may be
probed: :func:`check_address` refuses anything else.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

from persona.errors import ConfigError

LAB_SUBNETS = (ipaddress.ip_network("10.77.0.0/24"),)


def check_address(
    host: str, subnets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = LAB_SUBNETS
) -> str:
    """``host`` if it is a literal IP inside the lab's networks or loopback, else ConfigError."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError as e:
        raise ConfigError(
            f"{host!r} is not an IP address; probes and validation only talk to "
            "lab addresses (e.g. 10.77.0.10) or loopback"
        ) from e
    if ip.is_loopback or any(ip in n for n in subnets):
        return host
    raise ConfigError(
        f"{host} is outside the lab's networks ({', '.join(map(str, subnets))}) "
        "and not loopback; refusing to send it traffic"
    )


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_s: float
    error: str = ""


class Probe(Protocol):
    def __call__(self) -> ProbeResult: ...


@dataclass(frozen=True)
class TcpProbe:
    """Connect to ``host:port`` within ``timeout_s``."""

    host: str
    port: int
    timeout_s: float = 0.4

    def __post_init__(self) -> None:
        check_address(self.host)

    def __call__(self) -> ProbeResult:
        t0 = time.monotonic()
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout_s):
                return ProbeResult(True, time.monotonic() - t0)
        except OSError as e:
            return ProbeResult(False, time.monotonic() - t0, f"{type(e).__name__}: {e}")


@dataclass(frozen=True)
class HttpProbe:
    """GET ``url`` within ``timeout_s``; ok when the status is in ``expect`` (default 200)."""

    url: str
    timeout_s: float = 0.4
    expect: tuple[int, ...] = (200,)

    def __post_init__(self) -> None:
        u = urllib.parse.urlsplit(self.url)
        if u.scheme != "http" or not u.hostname:
            raise ConfigError(f"HTTP probe needs an http:// URL, got {self.url!r}")
        check_address(u.hostname)

    def __call__(self) -> ProbeResult:
        u = urllib.parse.urlsplit(self.url)
        t0 = time.monotonic()
        conn = http.client.HTTPConnection(u.hostname or "", u.port or 80, timeout=self.timeout_s)
        try:
            conn.request("GET", u.path or "/")
            r = conn.getresponse()
            r.read()
            ok = r.status in self.expect
            return ProbeResult(ok, time.monotonic() - t0, "" if ok else f"HTTP {r.status}")
        except (OSError, http.client.HTTPException) as e:
            return ProbeResult(False, time.monotonic() - t0, f"{type(e).__name__}: {e}")
        finally:
            conn.close()


@dataclass(frozen=True)
class AllOf:
    """Several probes that must all succeed (e.g. TCP redis + HTTP API)."""

    probes: tuple[Probe, ...]

    def __call__(self) -> ProbeResult:
        t0 = time.monotonic()
        for p in self.probes:
            r = p()
            if not r.ok:
                return ProbeResult(False, time.monotonic() - t0, r.error)
        return ProbeResult(True, time.monotonic() - t0)

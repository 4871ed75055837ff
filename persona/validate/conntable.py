"""The connection table of a host's network namespace, normalised so that two hosts can be
compared: listeners by (address, port), and internal connections (both ends inside the
namespace) by role and service port, independent of ephemeral ports. Client connections from
outside are transient (load generators, probes) and are excluded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from persona.capture.parse import TcpSocket, parse_proc_net_tcp
from persona.errors import ValidationError


def read_sockets(pid: int, proc_root: Path = Path("/proc")) -> list[TcpSocket]:
    base = proc_root / str(pid) / "net"
    try:
        socks = parse_proc_net_tcp((base / "tcp").read_text())
        if (base / "tcp6").exists():
            socks += parse_proc_net_tcp((base / "tcp6").read_text())
    except OSError as e:
        raise ValidationError(
            f"cannot read the connection table of pid {pid} ({e}); "
            "is the host running and are we root?"
        ) from e
    return socks


# Docker's embedded DNS resolver listens on 127.0.0.11 at a port chosen anew in every network
# namespace: it belongs to the engine, not to the host's persona, and never matches.
ENGINE_ADDRESSES = frozenset({"127.0.0.11"})


def _internal(addr: str, own: set[str]) -> bool:
    return addr.startswith("127.") or addr == "::1" or addr in own


def normalise(sockets: Sequence[TcpSocket]) -> dict[str, Any]:
    """``{"listen": [[addr, port], ...], "internal": {"server:6379": n, "client:6379": n}}``."""
    sockets = [
        s for s in sockets if s.local not in ENGINE_ADDRESSES and s.remote not in ENGINE_ADDRESSES
    ]
    listen = sorted({(s.local, s.local_port) for s in sockets if s.state == "LISTEN"})
    ports = {p for _, p in listen}
    own = {s.local for s in sockets if s.local not in ("0.0.0.0", "::")}
    internal: Counter[str] = Counter()
    for s in sockets:
        if s.state != "ESTABLISHED" or not _internal(s.remote, own):
            continue
        role = f"server:{s.local_port}" if s.local_port in ports else f"client:{s.remote_port}"
        internal[role] += 1
    return {"listen": [list(x) for x in listen], "internal": dict(sorted(internal.items()))}


def compare(base: dict[str, Any], cand: dict[str, Any]) -> list[str]:
    """Human-readable differences (empty: equivalent)."""
    out = []
    bl = {tuple(x) for x in base["listen"]}
    cl = {tuple(x) for x in cand["listen"]}
    for a, p in sorted(bl - cl):
        out.append(f"listener {a}:{p} missing")
    for a, p in sorted(cl - bl):
        out.append(f"unexpected listener {a}:{p}")
    for role in sorted(set(base["internal"]) | set(cand["internal"])):
        b, c = base["internal"].get(role, 0), cand["internal"].get(role, 0)
        if b != c:
            out.append(f"internal {role}: {c} connections, baseline {b}")
    return out

"""Pure parsers for what the capture reads from procfs, sysfs, cgroup files and CRIU images.

No function here opens a file or a socket: each takes text (or decoded image dicts) and
returns typed values, so all of it is unit-tested against fixtures in the exact kernel formats.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from persona.errors import CaptureError

TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING", "0C": "NEW_SYN_RECV",
}


@dataclass(frozen=True)
class TcpSocket:
    local: str
    local_port: int
    remote: str
    remote_port: int
    state: str
    inode: int


def _addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, struct.pack("<I", int(hexaddr, 16)))
    if len(raw) == 16:  # four host-order 32-bit words
        words = struct.unpack("<4I", raw)
        return str(ipaddress.IPv6Address(struct.pack(">4I", *words)))
    raise CaptureError(f"bad address {hexaddr!r} in /proc/net/tcp")


def parse_proc_net_tcp(text: str) -> list[TcpSocket]:
    """/proc/<pid>/net/tcp or tcp6: 'sl local_address rem_address st ... inode ...'."""
    out = []
    lines = text.splitlines()
    if not lines or not lines[0].split() or lines[0].split()[0] != "sl":
        raise CaptureError("not a /proc/net/tcp table (header 'sl local_address ...' missing)")
    for n, line in enumerate(lines[1:], 2):
        f = line.split()
        if not f:
            continue
        try:
            la, lp = f[1].split(":")
            ra, rp = f[2].split(":")
            out.append(TcpSocket(_addr(la), int(lp, 16), _addr(ra), int(rp, 16),
                                 TCP_STATES.get(f[3].upper(), f[3]), int(f[9])))
        except (IndexError, ValueError) as e:
            raise CaptureError(f"/proc/net/tcp line {n} malformed: {line.strip()!r}") from e
    return out


@dataclass(frozen=True)
class Route:
    iface: str
    destination: str
    gateway: str
    mask: str
    metric: int


def parse_proc_net_route(text: str) -> list[Route]:
    """/proc/<pid>/net/route (IPv4 routing table, little-endian hex addresses)."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        out.append(Route(f[0], _addr(f[1]), _addr(f[2]), _addr(f[7]), int(f[6])))
    return out


@dataclass(frozen=True)
class KernelModule:
    name: str
    size: int
    refcount: int
    used_by: tuple[str, ...]
    state: str
    load_position: int  # 0 = loaded first
    parameters: Mapping[str, str]


def parse_proc_modules(text: str) -> list[tuple[str, int, int, tuple[str, ...], str]]:
    """/proc/modules: 'name size refcount used_by state address [taint]', newest first."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if not f:
            continue
        if len(f) < 5:
            raise CaptureError(f"/proc/modules line {n} malformed: {line!r}")
        try:
            used = tuple(u for u in f[3].split(",") if u and u != "-")
            out.append((f[0], int(f[1]), int(f[2]) if f[2] != "-" else 0, used, f[4]))
        except ValueError as e:
            raise CaptureError(f"/proc/modules line {n} malformed: {line!r}") from e
    return out


def modules_in_load_order(rows: list[tuple[str, int, int, tuple[str, ...], str]],
                          params: Mapping[str, Mapping[str, str]]) -> list[KernelModule]:
    """/proc/modules lists the most recently loaded module first: reverse it."""
    ordered = list(reversed(rows))
    return [KernelModule(name, size, ref, used, state, i, dict(params.get(name, {})))
            for i, (name, size, ref, used, state) in enumerate(ordered)]


def module_dependencies(mods: list[KernelModule]) -> dict[str, tuple[str, ...]]:
    """'used_by' of X lists modules that need X: invert it into depends_on."""
    deps: dict[str, list[str]] = {m.name: [] for m in mods}
    for m in mods:
        for user in m.used_by:
            if user in deps:
                deps[user].append(m.name)
    return {k: tuple(sorted(v)) for k, v in deps.items()}


# ---------------------------------------------------------------- cgroup v1
UNLIMITED = 1 << 62


def cpu_limit_cores(quota_us: str, period_us: str) -> float | None:
    q, p = int(quota_us.strip()), int(period_us.strip())
    if q <= 0 or p <= 0:
        return None
    return q / p


def memory_limit(limit_in_bytes: str) -> int | None:
    v = int(limit_in_bytes.strip())
    return None if v >= UNLIMITED else v


def blkio_bytes(io_service_bytes: str) -> tuple[int, int]:
    """blkio.throttle.io_service_bytes: '<maj:min> Read N' ... 'Total N'. Returns (read, write)."""
    r = w = 0
    for line in io_service_bytes.splitlines():
        f = line.split()
        if len(f) == 3 and f[1] == "Read":
            r += int(f[2])
        elif len(f) == 3 and f[1] == "Write":
            w += int(f[2])
    return r, w


@dataclass(frozen=True)
class CgroupSample:
    t: float  # seconds (monotonic)
    cpu_ns: int  # cpuacct.usage
    mem_bytes: int  # memory.usage_in_bytes
    mem_peak_bytes: int  # memory.max_usage_in_bytes
    io_read: int
    io_write: int


def summarize_samples(samples: list[CgroupSample]) -> dict[str, float | int]:
    """Mean and peak CPU cores, memory and I/O rates over a window of samples."""
    if len(samples) < 2:
        raise CaptureError("need at least 2 cgroup samples to measure usage; raise --window")
    rates = []
    for a, b in itertools.pairwise(samples):
        dt = b.t - a.t
        if dt <= 0:
            raise CaptureError("cgroup samples are not in time order")
        rates.append((b.cpu_ns - a.cpu_ns) / 1e9 / dt)
    window = samples[-1].t - samples[0].t
    return {
        "cpu_usage_cores": max(0.0, (samples[-1].cpu_ns - samples[0].cpu_ns) / 1e9 / window),
        "cpu_peak_cores": max(0.0, max(rates)),
        "memory_bytes": int(sum(s.mem_bytes for s in samples) / len(samples)),
        "memory_peak_bytes": max(max(s.mem_bytes for s in samples), samples[-1].mem_peak_bytes),
        "io_read_bps": max(0.0, (samples[-1].io_read - samples[0].io_read) / window),
        "io_write_bps": max(0.0, (samples[-1].io_write - samples[0].io_write) / window),
        "window_s": window,
        "samples": len(samples),
    }


# ---------------------------------------------------------------- sockets <-> processes
def socket_inodes(fd_links: Iterable[str]) -> set[int]:
    """Readlink values of /proc/<pid>/fd/* -> the inodes of 'socket:[N]' entries."""
    out = set()
    for link in fd_links:
        if link.startswith("socket:[") and link.endswith("]"):
            out.add(int(link[8:-1]))
    return out


@dataclass(frozen=True)
class Join:
    """One established connection and the components at each end (None: outside the host)."""

    local: str
    remote: str
    client: str | None
    server: str | None


def join_connections(sockets: list[TcpSocket], owners: Mapping[int, str]) -> list[Join]:
    """Match ESTABLISHED sockets to the components owning them (by socket inode), and pair
    the two ends of connections whose both ends live in the host (loopback or own IP)."""
    est = [s for s in sockets if s.state == "ESTABLISHED"]
    listening = {s.local_port for s in sockets if s.state == "LISTEN"}
    by_ends = {(s.local, s.local_port, s.remote, s.remote_port): s for s in est}
    out = []
    seen = set()
    for s in est:
        key = (s.local, s.local_port, s.remote, s.remote_port)
        if key in seen:
            continue
        peer = by_ends.get((s.remote, s.remote_port, s.local, s.local_port))
        seen.add(key)
        if peer is not None:
            seen.add((peer.local, peer.local_port, peer.remote, peer.remote_port))
        # the server end is the one on a listening port
        server: TcpSocket | None
        client: TcpSocket | None
        if s.local_port in listening and (peer is None or s.remote_port not in listening):
            server, client = s, peer
        else:
            server, client = peer, s
        out.append(Join(
            local=f"{(client or s).local}:{(client or s).local_port}",
            remote=f"{(server or s).local}:{(server or s).local_port}" if server else
            f"{s.remote}:{s.remote_port}",
            client=owners.get(client.inode) if client else None,
            server=owners.get(server.inode) if server else None,
        ))
    return out


# ---------------------------------------------------------------- CRIU images (decoded)
def criu_image_summary(images: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Metadata from decoded CRIU images (pycriu.images.load output, keyed by file name)."""
    pstree = images.get("pstree.img", {}).get("entries", [])
    pages = 0
    regions = 0
    for name, img in images.items():
        if name.startswith("pagemap-"):
            ents = img.get("entries", [])[1:]  # first entry is the header {pages_id}
            regions += len(ents)
            pages += sum(int(e.get("nr_pages", 0)) for e in ents)
    files = images.get("files.img", {}).get("entries", [])
    kinds: dict[str, int] = {}
    for f in files:
        kinds[f.get("type", "?")] = kinds.get(f.get("type", "?"), 0) + 1
    tcp = []
    for f in files:
        isk = f.get("isk")
        if f.get("type") == "INETSK" and isk:
            tcp.append({"src_port": isk.get("src_port"), "dst_port": isk.get("dst_port"),
                        "state": isk.get("state"), "ino": isk.get("ino")})
    return {
        "processes": [{"pid": p["pid"], "ppid": p["ppid"], "threads": len(p.get("threads", []))}
                      for p in pstree],
        "memory_pages": pages,
        "memory_bytes": pages * 4096,
        "memory_regions": regions,
        "open_files": len(files),
        "open_files_by_type": kinds,
        "inet_sockets": tcp,
    }


CRIU_LOG_MARKS = (  # (phase that ends at this line, first line starting with the marker)
    ("start", "Running pre-dump scripts"),  # runc + CRIU start-up, kernel probe (or kdat cache)
    ("freeze_seize", "Seized task"),  # (gate wait), cgroup freezer, ptrace seize
    ("tasks", "Dumping pages"),  # mount tree walk, task state, files, sockets, parasite
    ("memory", "cg: Dumping cgroups for thread"),  # pages
    ("cgroups_mounts_ns", "Running post-dump scripts"),  # cgroups, mounts (tmpfs tars), netns
    ("post_cleanup", "Unfreezing tasks"),  # post-dump/network-unlock hooks, temp mount cleanup
    ("unseize", "Dumping finished successfully"),
)


def criu_log_phases(text: str) -> dict[str, float]:
    """Milliseconds per dump phase from a CRIU ``dump.log`` (its ``(sss.uuuuuu)`` stamps).

    Phases are delimited by the first line of each marker in ``CRIU_LOG_MARKS`` *after* the
    previous marker; missing markers leave their phase out."""
    import re

    stamps: list[tuple[float, str]] = []
    for line in text.splitlines():
        m = re.match(r"\((\d+\.\d+)\)\s?(.*)", line)
        if m:
            stamps.append((float(m.group(1)), m.group(2).strip()))
    out: dict[str, float] = {}
    prev_t, i = 0.0, 0
    for phase, mark in CRIU_LOG_MARKS:
        j = next((k for k in range(i, len(stamps)) if stamps[k][1].startswith(mark)), None)
        if j is None:
            continue
        out[phase] = round((stamps[j][0] - prev_t) * 1000, 1)
        prev_t, i = stamps[j][0], j + 1
    return out

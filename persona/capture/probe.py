"""Side-effect readers: procfs, sysfs, cgroup v1 files, CRIU images, config files.

Every root is a parameter so tests can point them at fixtures in the exact kernel formats.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from persona.capture import parse
from persona.errors import CaptureError


def read_kernel_modules(proc_root: Path = Path("/proc"),
                        sys_root: Path = Path("/sys")) -> tuple[list[parse.KernelModule], str]:
    """(modules in load order, note). No /proc/modules (kernel booted with `nomodule` or
    built without module support) is recorded as a note, not an error."""
    path = proc_root / "modules"
    if not path.exists():
        return [], f"no {path}: this kernel has no loadable modules (nomodule or CONFIG_MODULES=n)"
    rows = parse.parse_proc_modules(path.read_text())
    params: dict[str, dict[str, str]] = {}
    for name, *_ in rows:
        pdir = sys_root / "module" / name / "parameters"
        if pdir.is_dir():
            vals = {}
            for p in sorted(pdir.iterdir()):
                try:
                    vals[p.name] = p.read_text().rstrip("\n")
                except OSError:  # some parameters are write-only
                    continue
            params[name] = vals
    mods = parse.modules_in_load_order(rows, params)
    return mods, f"{len(mods)} modules from {path}"


def cgroup_dir(controller: str, cid: str, root: Path = Path("/sys/fs/cgroup")) -> Path:
    for cand in (root / controller / "docker" / cid, root / controller / "system.slice" / f"docker-{cid}.scope"):
        if cand.is_dir():
            return cand
    raise CaptureError(f"no {controller} cgroup for container {cid[:12]} under {root}; "
                       "is it running (cgroup v1 + cgroupfs driver expected)?")


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError as e:
        raise CaptureError(f"cannot read {p}: {e.strerror}; did the container exit?") from e


def cgroup_sample(cid: str, root: Path = Path("/sys/fs/cgroup")) -> parse.CgroupSample:
    cpu = cgroup_dir("cpuacct", cid, root)
    mem = cgroup_dir("memory", cid, root)
    blk = cgroup_dir("blkio", cid, root)
    r, w = parse.blkio_bytes(_read(blk / "blkio.throttle.io_service_bytes"))
    return parse.CgroupSample(time.monotonic(), int(_read(cpu / "cpuacct.usage")),
                              int(_read(mem / "memory.usage_in_bytes")),
                              int(_read(mem / "memory.max_usage_in_bytes")), r, w)


def cgroup_limits(cid: str, root: Path = Path("/sys/fs/cgroup")) -> tuple[float | None, int | None]:
    cpu = cgroup_dir("cpu", cid, root)
    mem = cgroup_dir("memory", cid, root)
    return (parse.cpu_limit_cores(_read(cpu / "cpu.cfs_quota_us"), _read(cpu / "cpu.cfs_period_us")),
            parse.memory_limit(_read(mem / "memory.limit_in_bytes")))


def sample_window(cids: list[str], window_s: float, n: int,
                  sample: Callable[[str], parse.CgroupSample] = cgroup_sample
                  ) -> dict[str, list[parse.CgroupSample]]:
    out: dict[str, list[parse.CgroupSample]] = {c: [] for c in cids}
    for i in range(n):
        for c in cids:
            out[c].append(sample(c))
        if i < n - 1:
            time.sleep(window_s / (n - 1))
    return out


def cgroup_pids(cid: str, root: Path = Path("/sys/fs/cgroup")) -> list[int]:
    return [int(x) for x in _read(cgroup_dir("pids", cid, root) / "cgroup.procs").split()]


def socket_owners(pids_by_component: Mapping[str, list[int]], proc_root: Path = Path("/proc")
                  ) -> dict[int, str]:
    owners: dict[int, str] = {}
    for comp, pids in pids_by_component.items():
        for pid in pids:
            fd_dir = proc_root / str(pid) / "fd"
            links = []
            try:
                for fd in os.listdir(fd_dir):
                    try:
                        links.append(os.readlink(fd_dir / fd))
                    except OSError:
                        continue
            except OSError:
                continue
            for ino in parse.socket_inodes(links):
                owners[ino] = comp
    return owners


def netns_tables(pid: int, proc_root: Path = Path("/proc")) -> dict[str, Any]:
    """TCP sockets (v4+v6), routes and addresses of the network namespace of ``pid``."""
    base = proc_root / str(pid) / "net"
    socks = parse.parse_proc_net_tcp(_read(base / "tcp"))
    if (base / "tcp6").exists():
        socks += parse.parse_proc_net_tcp(_read(base / "tcp6"))
    routes = parse.parse_proc_net_route(_read(base / "route"))
    res = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-j", "addr", "show"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise CaptureError(f"cannot list addresses in netns of pid {pid}: {res.stderr.strip()}")
    import json
    addrs = [{"ifname": i["ifname"], "addr": f"{a['local']}/{a['prefixlen']}", "family": a["family"]}
             for i in json.loads(res.stdout) for a in i.get("addr_info", [])]
    return {"sockets": socks, "routes": routes, "addresses": addrs}


def load_criu_images(directory: Path) -> dict[str, dict[str, Any]]:
    """Decode the metadata images of one checkpoint with pycriu (pages-*.img are raw)."""
    try:
        import pycriu.images
    except ImportError as e:
        raise CaptureError("pycriu is not importable: run persona lab up --no-demo") from e
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(directory.glob("*.img")):
        if p.name.startswith(("pstree", "pagemap-", "files", "inventory")):
            with p.open("rb") as f:
                try:
                    out[p.name] = pycriu.images.load(f)
                except Exception as e:
                    raise CaptureError(f"cannot decode CRIU image {p}: {e}") from e
    return out


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def read_in_root(pid: int, path: str, proc_root: Path = Path("/proc")) -> bytes:
    p = proc_root / str(pid) / "root" / path.lstrip("/")
    try:
        return p.read_bytes()
    except OSError as e:
        raise CaptureError(f"cannot read declared config file {path} of pid {pid}: {e.strerror}") from e


def stat_in_root(pid: int, path: str, proc_root: Path = Path("/proc")) -> os.stat_result:
    p = proc_root / str(pid) / "root" / path.lstrip("/")
    try:
        return p.stat()
    except OSError as e:
        raise CaptureError(f"cannot stat declared config file {path} of pid {pid}: {e.strerror}") from e


def run_text(cmd: list[str], timeout: float = 30) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CaptureError(f"{cmd[0]} failed: {e}") from e
    if r.returncode != 0:
        raise CaptureError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-300:]}")
    return r.stdout

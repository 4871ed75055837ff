"""Capture a VM guest's persona through its agent, into the project's persona model.

Kernel modules are read from the guest's ``/proc/modules`` and ``/sys/module/*/parameters``,
copied into a temp tree of the same layout and parsed by the capture module's own reader
(:func:`persona.capture.probe.read_kernel_modules` + :mod:`persona.capture.parse`): one parser
for containers' hosts and VMs. Network tables use the same ``/proc/net/{route,tcp}`` parsers.

Process memory: through the guest's own CRIU when the image carries it (a warm restore on
the replacement); otherwise, or when the dump fails, the process component says
``memory_state: cold-start: <why>`` and the replacement starts the service fresh.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persona.capture import parse, probe
from persona.errors import VmError
from persona.model import (
    Component,
    ComponentKind,
    HostInfo,
    LoadProfile,
    PersonaManifest,
    ResourceProfile,
)
from persona.vm import guest as g_files
from persona.vm.host import TREE_ROOT, Guest, criu_dump_script

SAMPLE_ITEMS = 5  # items of the service whose answers the capture records (warm proof)
# what the guest's CRIU needs from the kernel (its feature probe, socket collection)
CRIU_KMODS = ("kmod.nf_tables", "kmod.inet_diag", "kmod.tcp_diag")

MODULES_SCRIPT = r"""cat /proc/modules
echo '@@PARAMS'
for m in $(cut -d' ' -f1 /proc/modules); do
  d=/sys/module/$m/parameters
  [ -d "$d" ] || continue
  for p in "$d"/*; do
    v=$(cat "$p" 2>/dev/null) || continue
    printf '%s\t%s\t%s\n' "$m" "${p##*/}" "$v"
  done
done
"""

# interface -> the module of its device's driver ('' for virtual interfaces such as dummy0)
IFACE_DRIVERS_SCRIPT = r"""for i in $(ls /sys/class/net); do
  m=$(readlink /sys/class/net/$i/device/driver/module 2>/dev/null)
  printf '%s\t%s\n' "$i" "${m##*/}"
done
"""

FS_SCRIPT = r"""find / -xdev -type f ! -path '""" + g_files.BASELINE + r"""' | sort | xargs sha256sum
"""


# ---------------------------------------------------------------- pure
def split_modules_dump(text: str) -> tuple[str, dict[str, dict[str, str]]]:
    """MODULES_SCRIPT output -> (/proc/modules text, {module: {param: value}})."""
    if "@@PARAMS\n" not in text:
        raise VmError("guest module dump lacks its @@PARAMS marker (agent output cut?)")
    modules, rest = text.split("@@PARAMS\n", 1)
    params: dict[str, dict[str, str]] = {}
    for line in rest.splitlines():
        f = line.split("\t", 2)
        if len(f) == 3:
            params.setdefault(f[0], {})[f[1]] = f[2]
    return modules, params


def read_modules(modules_text: str, params: Mapping[str, Mapping[str, str]],
                 ) -> tuple[list[parse.KernelModule], str]:
    """Lay the guest's files out as procfs/sysfs and parse them with the capture's reader."""
    with tempfile.TemporaryDirectory(prefix="persona-vm-kmods-") as d:
        root = Path(d)
        (root / "proc").mkdir()
        (root / "proc" / "modules").write_text(modules_text)
        for m, ps in params.items():
            pdir = root / "sys" / "module" / m / "parameters"
            pdir.mkdir(parents=True)
            for k, v in ps.items():
                (pdir / k).write_text(v + "\n")
        return probe.read_kernel_modules(root / "proc", root / "sys")


def parse_sha256sum(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        f = line.split(None, 1)
        if len(f) == 2:
            out[f[1].strip()] = f[0]
    return out


@dataclass(frozen=True)
class FsDiff:
    added: tuple[str, ...]
    changed: tuple[str, ...]
    deleted: tuple[str, ...]
    hashes: Mapping[str, str]  # added + changed path -> sha256


def fs_diff(baseline: Mapping[str, str], now: Mapping[str, str]) -> FsDiff:
    added = tuple(sorted(p for p in now if p not in baseline))
    changed = tuple(sorted(p for p in now if p in baseline and now[p] != baseline[p]))
    deleted = tuple(sorted(p for p in baseline if p not in now))
    return FsDiff(added, changed, deleted, {p: now[p] for p in (*added, *changed)})


def parse_ip_addr(text: str) -> list[dict[str, str]]:
    """``ip -o addr`` lines -> [{iface, family, addr, prefix}]."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] in ("inet", "inet6"):
            addr, _, prefix = f[3].partition("/")
            out.append({"iface": f[1], "family": f[2], "addr": addr, "prefix": prefix or "32"})
    return out


def parse_ip_link(text: str) -> dict[str, str]:
    """``ip -o link`` lines -> {iface: MAC} (interfaces with an ether address)."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2 and "link/ether" in f:
            i = f.index("link/ether")
            if i + 1 < len(f):
                out[f[1].rstrip(":").split("@")[0]] = f[i + 1]
    return out


def cpu_rate(text: str) -> tuple[float, float]:
    """Two (cgroup usage_usec, uptime s) samples -> (mean CPU cores, window s)."""
    f = text.split()
    if len(f) != 4:
        raise VmError(f"capture: cannot read the service's CPU usage from {text!r}")
    u1, t1, u2, t2 = int(f[0]), float(f[1]), int(f[2]), float(f[3])
    if t2 <= t1:
        raise VmError("capture: guest uptime did not advance over the CPU window")
    return max(0.0, (u2 - u1) / 1e6 / (t2 - t1)), t2 - t1


def json_or_empty(text: str) -> dict[str, Any]:
    try:
        v = json.loads(text)
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def parse_kv(text: str) -> dict[str, str]:
    """'key<TAB>value' lines."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("\t")
        if sep:
            out[k] = v
    return out


def iface_modules(ifaces: list[str], drivers: Mapping[str, str], have: set[str],
                  ) -> tuple[str, ...]:
    """The kernel-module components the interfaces need: the driver module of a device
    (eth0 -> virtio_net), else the interface kind by name (dummy0 -> dummy), when captured."""
    out: list[str] = []
    for i in ifaces:
        m = f"kmod.{drivers.get(i) or i.rstrip('0123456789')}"
        if m in have and m not in out:
            out.append(m)
    return tuple(out)


# ---------------------------------------------------------------- capture
@dataclass(frozen=True)
class VmCapture:
    manifest: PersonaManifest
    data_dir: Path
    timings: Mapping[str, float]


def capture_vm(g: Guest, out_dir: Path, config_paths: tuple[str, ...], cgroup: str,
               sysctls: tuple[str, ...], vm_labels: Mapping[str, str] | None = None,
               window_s: float = 1.0, service_url: str | None = None) -> VmCapture:
    """Capture the guest's persona into ``out_dir`` (manifest.json + data files).
    ``service_url``: the service's base URL; its ``/introspect`` (pid, counters) and the answers
    for items ``0..SAMPLE_ITEMS-1`` are fetched inside the guest just before the CRIU dump and go
    into the process component (``service``), which a warm proof compares with the
    replacement's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tm: dict[str, float] = {}
    t_all = time.monotonic()

    def step(name: str, script: str, timeout: float = 60) -> str:
        t = time.monotonic()
        text = g.run(script, timeout).check(f"capture: {name}").text
        tm[f"{name}_s"] = round(time.monotonic() - t, 3)
        return text

    # kernel modules (through the capture module's parser)
    mtext, params = split_modules_dump(step("kernel_modules", MODULES_SCRIPT))
    mods, mnote = read_modules(mtext, params)
    # network
    addr = parse_ip_addr(step("addresses", "ip -o addr"))
    macs = parse_ip_link(step("links", "ip -o link"))
    drivers = parse_kv(step("iface_drivers", IFACE_DRIVERS_SCRIPT))
    routes = parse.parse_proc_net_route(step("routes", "cat /proc/net/route"))
    tcp = parse.parse_proc_net_tcp(step("tcp", "cat /proc/net/tcp"))
    # sysctls and config files
    sysvals = parse_kv(step("sysctls", "\n".join(
        f"printf '%s\\t%s\\n' {k} \"$(sysctl -n {k})\"" for k in sysctls))) if sysctls else {}
    files: dict[str, dict[str, Any]] = {}
    cdata: list[str] = []
    for p in config_paths:
        raw = g.run(f"cat {p}").check(f"capture: reading {p}").stdout
        rel = "config/" + p.strip("/").replace("/", "__")
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(raw)
        files[p] = {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw), "data": rel}
        cdata.append(rel)
    # filesystem diff against the image's baseline
    base = parse_sha256sum(g.run(f"cat {g_files.BASELINE}").check("capture: baseline").text)
    diff = fs_diff(base, parse_sha256sum(step("fs_hash", FS_SCRIPT, 120)))
    # directories services made in the tmpfs /run (their contents are runtime state, not kept)
    rundirs = sorted(step("run_dirs", "find /run -mindepth 1 -type d ! -path '/run/criu*'")
                     .split())
    members = [*diff.added, *diff.changed]
    tar = b""
    if members:
        tar = g.run("tar -cf - " + " ".join(f"'{p}'" for p in members), 60).check(
            "capture: filesystem tar").stdout
        _check_tar(tar, diff)
    (out_dir / "fs.tar").write_bytes(tar)
    # the service: cgroup limits + usage, process command lines
    cg = f"/sys/fs/cgroup/{cgroup}"
    cgv = parse_kv(step("cgroup", "\n".join(
        f"printf '%s\\t%s\\n' {f} \"$(cat {cg}/{f} | tr '\\n' ' ')\""
        for f in ("cpu.max", "memory.max", "pids.max", "memory.current", "memory.peak",
                  "cpu.stat", "cgroup.procs"))))
    pids = cgv.get("cgroup.procs", "").split()
    if not pids:
        raise VmError(f"capture: no process in cgroup {cg}; is the service running?")
    usage = step("cpu_window", f"for i in 1 2; do sed -n 's/^usage_usec //p' {cg}/cpu.stat; "
                 f"cut -d' ' -f1 /proc/uptime; [ $i = 2 ] || sleep {window_s}; done",
                 30 + window_s)
    cpu_cores, window = cpu_rate(usage)
    facts = parse_kv(step("guest_facts", "printf 'cpus\t%s\nmem_total_kb\t%s\n' "
                          "\"$(nproc)\" \"$(sed -n 's/^MemTotal: *\\([0-9]*\\).*/\\1/p' "
                          "/proc/meminfo)\""))
    procs = f"{cg}/cgroup.procs"
    cmdline = step("cmdline", TREE_ROOT.format(procs=procs)
                   + "\ntr '\\0' ' ' < /proc/$root/cmdline").strip()
    # process memory through the guest's own CRIU, when the image has it
    criu: dict[str, Any] = {}
    pdata: tuple[str, ...] = ()
    service: dict[str, Any] = {}
    if service_url:
        service = json_or_empty(g.run(f"wget -q -O - {service_url}/introspect", 20).text)
        service["items"] = {str(k): json_or_empty(g.run(
            f"wget -q -O - {service_url}/item/{k}", 20).text) for k in range(SAMPLE_ITEMS)}
    has = g.run("command -v criu && criu --version | sed -n 's/^Version: //p'").text.split()
    if len(has) < 2:
        state = ("cold-start: the guest image has no CRIU (built without it, or the lab's CRIU 4.2 was "
                 "missing at build time); the replacement starts the service fresh")
    else:
        t = time.monotonic()
        r = g.run(criu_dump_script(cgroup), 120)
        tm["criu_dump_s"] = round(time.monotonic() - t, 3)
        if r.rc == 0:
            (out_dir / "process.criu.tgz").write_bytes(r.stdout)
            pdata = ("process.criu.tgz",)
            criu = {"version": has[1], "dump_s": tm["criu_dump_s"], "archive_bytes": len(r.stdout),
                    "pids": pids}
            state = f"warm: CRIU {has[1]} images of the process tree ({len(r.stdout)} B tar.gz)"
        else:
            err = r.stderr.decode("utf-8", "replace").strip()[-300:]
            state = f"cold-start: CRIU dump failed in the guest: {err}"
    tm["total_s"] = round(time.monotonic() - t_all, 3)

    # ---- model
    comps: list[Component] = []
    deps = parse.module_dependencies(mods)
    for m in mods:  # load order: kernel modules come first
        comps.append(Component(
            name=f"kmod.{m.name}", kind=ComponentKind.KERNEL_MODULE, size_bytes=m.size,
            depends_on=tuple(f"kmod.{d}" for d in deps[m.name]), role="system",
            attributes={"load_position": m.load_position, "parameters": dict(m.parameters),
                        "refcount": m.refcount, "state": m.state, "used_by": list(m.used_by)}))
    have = {c.name for c in comps}
    ifaces = sorted({a["iface"] for a in addr if a["iface"] != "lo"})
    comps.append(Component(
        name="network", kind=ComponentKind.NETWORK, size_bytes=0, role="system",
        depends_on=iface_modules(ifaces, drivers, have),
        attributes={"addresses": addr, "links": macs, "drivers": drivers,
                    "routes": [r.__dict__ for r in routes],
                    "listening": [f"{s.local}:{s.local_port}" for s in tcp if s.state == "LISTEN"],
                    "established": [f"{s.local}:{s.local_port}->{s.remote}:{s.remote_port}"
                                    for s in tcp if s.state == "ESTABLISHED"]}))
    if sysvals:
        comps.append(Component(
            name="sysctl", kind=ComponentKind.CONFIG, size_bytes=0, role="system",
            depends_on=tuple(c for c in ("kmod.nf_conntrack",) if c in have
                             and any(k.startswith("net.netfilter.") for k in sysvals)),
            attributes={"sysctls": sysvals}))
    comps.append(Component(
        name="rootfs.filesystem", kind=ComponentKind.FILESYSTEM, size_bytes=len(tar), role="app",
        attributes={"added": list(diff.added), "changed": list(diff.changed),
                    "deleted": list(diff.deleted), "sha256": dict(diff.hashes),
                    "runtime_dirs": rundirs,
                    "baseline": g_files.BASELINE, "excluded": list(g_files.VOLATILE),
                    "format": "tar of added+changed regular files; deletions listed"},
        data=("fs.tar",)))
    comps.append(Component(
        name="demo.config", kind=ComponentKind.CONFIG,
        size_bytes=sum(int(f["size"]) for f in files.values()), role="app",
        depends_on=("rootfs.filesystem",),
        attributes={"files": {p: {"sha256": f["sha256"], "size": f["size"]}
                              for p, f in files.items()}},
        data=tuple(cdata)))
    cpu_max = cgv.get("cpu.max", "max").split()
    cpu_lim = (int(cpu_max[0]) / int(cpu_max[1])
               if len(cpu_max) == 2 and cpu_max[0] != "max" else None)
    mem_lim = cgv.get("memory.max", "max").strip()
    mem_now = int(cgv.get("memory.current", "0").strip() or 0)
    peak = cgv.get("memory.peak", "").strip()
    comps.append(Component(
        name="demo.process", kind=ComponentKind.PROCESS, size_bytes=int(criu.get("archive_bytes", 0)),
        role="app",
        depends_on=tuple(c for c in ("rootfs.filesystem", "demo.config", "network", "sysctl",
                                     *(CRIU_KMODS if pdata else ()))
                         if c in {x.name for x in comps}),
        resources=ResourceProfile(
            cpu_usage_cores=round(cpu_cores, 4), cpu_peak_cores=round(cpu_cores, 4),
            window_s=round(window, 3), samples=2, memory_bytes=mem_now,
            memory_peak_bytes=int(peak) if peak.isdigit() else mem_now,
            cpu_limit_cores=cpu_lim,
            memory_limit_bytes=int(mem_lim) if mem_lim.isdigit() else None),
        data=pdata,
        attributes={"cmdline": cmdline, "cgroup": cgroup, "pids": pids, "criu": criu,
                    "service": {k: service[k] for k in ("version", "pid", "requests",
                                                        "mutations", "items") if k in service},
                    "cgroup_limits": {k: cgv[k].strip() for k in ("cpu.max", "memory.max",
                                                                  "pids.max") if k in cgv},
                    "cpu_stat": cgv.get("cpu.stat", "").strip(),
                    "memory_state": state}))
    labels = {"kind": "vm", "kernel_modules_note": mnote, "guest_cpus": facts.get("cpus", ""),
              "guest_mem_total_kb": facts.get("mem_total_kb", ""), **(vm_labels or {})}
    kernel = g.run("uname -r").check("capture: uname").text.strip()
    man = PersonaManifest(
        host=HostInfo(name=g.name, captured_at=datetime.now(UTC).isoformat(timespec="seconds"),
                      kernel=kernel, labels=labels),
        components=tuple(comps), load=LoadProfile(peak_cpu_cores=cpu_lim or 0.0))
    man.save(out_dir / "manifest.json")
    return VmCapture(man, out_dir, tm)


def _check_tar(tar: bytes, diff: FsDiff) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
            for m in tf.getmembers():
                f = tf.extractfile(m)
                if f is None:
                    continue
                path = "/" + m.name.lstrip("/")
                if diff.hashes.get(path) not in (None, hashlib.sha256(f.read()).hexdigest()):
                    raise VmError(f"capture: {path} changed while it was archived; capture again")
    except tarfile.TarError as e:
        raise VmError(f"capture: the guest's tar of the filesystem diff is unreadable: {e}") from e

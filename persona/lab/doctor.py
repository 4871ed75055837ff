"""``persona doctor``: every prerequisite of the live lab, each with the command that fixes it.

Parsing and judging are pure functions (unit-tested); ``probe_all`` runs the real probes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_CRIU = (4, 2)
INSTALL = "persona lab up --no-demo   (or: scripts/lab-install.sh --venv .venv)"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def parse_criu_version(text: str) -> tuple[int, ...] | None:
    """`criu --version` prints 'Version: 4.2.1' (and maybe a GitID line)."""
    m = re.search(r"^Version:\s*(\d+(?:\.\d+)*)", text, re.M)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def runc_conf_has_tcp_established(text: str) -> bool:
    """runc.conf is CRIU's config format: one option per line, '#' comments, optional '--'."""
    for line in text.splitlines():
        opt = line.split("#", 1)[0].strip().lstrip("-")
        if opt == "tcp-established":
            return True
    return False


def judge_criu(version_text: str | None) -> Check:
    if version_text is None:
        return Check("criu", False, "criu is not on PATH", INSTALL)
    v = parse_criu_version(version_text)
    if v is None:
        return Check("criu", False, f"cannot parse `criu --version`: {version_text[:80]!r}", INSTALL)
    vs = ".".join(map(str, v))
    if v < MIN_CRIU:
        return Check("criu", False,
                     f"criu {vs} is too old (need >= 4.2: older ones fail on this kernel's vDSO "
                     "or on AF_INET sockets)", INSTALL)
    return Check("criu", True, f"criu {vs}")


def _run(cmd: list[str], timeout: float = 30.0) -> tuple[int, str]:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return r.returncode, (r.stdout + r.stderr)


def probe_root() -> Check:
    ok = os.geteuid() == 0
    return Check("root", ok, "running as root" if ok else "not root: CRIU and nsenter need root",
                 "sudo persona doctor")


def probe_engine() -> list[Check]:
    from persona.errors import LabError
    from persona.lab import engine
    try:
        client = engine.connect(timeout=10)
    except LabError as e:
        return [Check("docker engine", False, str(e), INSTALL)]
    v = client.version()
    out = [Check("docker engine", True, f"Engine {v.get('Version')} API {v.get('ApiVersion')}")]
    exp = bool(v.get("Experimental"))
    out.append(Check("docker experimental", exp,
                     "checkpoint routes enabled" if exp else "engine runs without --experimental",
                     "" if exp else "kill $(pidof dockerd); dockerd --experimental "
                     ">/var/log/dockerd.log 2>&1 &"))
    return out


def probe_criu() -> list[Check]:
    if shutil.which("criu") is None:
        return [judge_criu(None)]
    _, text = _run(["criu", "--version"])
    out = [judge_criu(text)]
    if out[0].ok:
        rc, text = _run(["criu", "check"], timeout=60)
        ok = rc == 0 and "Looks good" in text
        out.append(Check("criu check", ok, "Looks good" if ok else text.strip()[-300:],
                         "" if ok else "see `criu check --all`; the kernel lacks a feature CRIU needs"))
    return out


def probe_runc_conf(path: Path = Path("/etc/criu/runc.conf")) -> Check:
    ok = path.exists() and runc_conf_has_tcp_established(path.read_text())
    return Check("runc.conf", ok,
                 f"{path} has tcp-established" if ok else
                 f"{path} lacks tcp-established: established TCP connections cannot be checkpointed",
                 f"mkdir -p {path.parent} && echo tcp-established >> {path}")


def probe_pycriu() -> Check:
    rc, text = _run([sys.executable, "-c", "import pycriu.images, google.protobuf as p; print(p.__version__)"])
    return Check("pycriu", rc == 0, f"importable (protobuf {text.strip()})" if rc == 0 else
                 f"not importable in {sys.prefix}: {text.strip()[-200:]}", INSTALL)


def probe_tool(name: str, pkg: str) -> Check:
    p = shutil.which(name)
    return Check(name, p is not None, p or f"{name} not on PATH", f"apt-get install {pkg}")


def probe_iptables_netns() -> Check:
    if shutil.which("unshare") is None or shutil.which("iptables") is None:
        return Check("iptables in netns", False, "unshare or iptables missing",
                     "apt-get install iptables util-linux")
    rc, text = _run(["unshare", "--net", "iptables", "-S", "INPUT"])
    return Check("iptables in netns", rc == 0,
                 "iptables works in a fresh network namespace" if rc == 0 else text.strip()[-200:],
                 "apt-get install iptables; the kernel needs netfilter (ip_tables)")


def probe_kernel(proc: Path = Path("/proc")) -> list[Check]:
    out = []
    ok = (proc / "sys/kernel/ns_last_pid").exists()
    out.append(Check("kernel checkpoint/restore", ok,
                     "CONFIG_CHECKPOINT_RESTORE (ns_last_pid present)" if ok else
                     "no /proc/sys/kernel/ns_last_pid: kernel lacks CONFIG_CHECKPOINT_RESTORE",
                     "boot a kernel with CONFIG_CHECKPOINT_RESTORE=y"))
    fs = (proc / "filesystems").read_text() if (proc / "filesystems").exists() else ""
    ok = "overlay" in fs
    out.append(Check("kernel overlayfs", ok, "overlay filesystem available" if ok else
                     "no overlay in /proc/filesystems", "modprobe overlay"))
    return out


PROBES: list[Callable[[], Check | list[Check]]] = [
    probe_root, probe_engine, probe_criu, probe_runc_conf, probe_pycriu,
    lambda: probe_tool("nsenter", "util-linux"), lambda: probe_tool("debootstrap", "debootstrap"),
    lambda: probe_tool("busybox", "busybox-static"), probe_iptables_netns, probe_kernel,
]


def probe_all() -> list[Check]:
    out: list[Check] = []
    for p in PROBES:
        r = p()
        out.extend(r if isinstance(r, list) else [r])
    return out


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"[{'ok' if c.ok else 'FAIL'}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"       fix: {c.fix}")
    bad = sum(not c.ok for c in checks)
    lines.append("all prerequisites present" if bad == 0 else f"{bad} problem(s)")
    return "\n".join(lines)

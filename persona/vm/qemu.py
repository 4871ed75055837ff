"""QEMU guests: argv (pure), boot, the agent channel, shutdown, and a bounded KVM probe.

A guest is ``qemu-system-x86_64 -M pc`` booting the image's kernel and initramfs directly
(``-kernel``/``-initrd``), no disk; without a tap no network device (``-nic none``), with one a
virtio-net NIC on that tap (a port of the project's bridge, :mod:`persona.vm.net`; the guest
drives it only once it loads ``virtio_net``), two ISA serial ports:
ttyS0 -> ``console.log``, ttyS1 -> a unix socket for the agent (:mod:`persona.vm.protocol`).
Every guest has its own temp folder; :meth:`Vm.close` ends the QEMU process it started (by pid)
and removes the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from persona.errors import VmError
from persona.vm import protocol
from persona.vm.image import CACHE, Image

QEMU = "qemu-system-x86_64"
# TCG is slow: commands get this much on top of their own timeout before the host gives up.
HOST_GRACE_S = 10.0


@dataclass(frozen=True)
class VmConfig:
    name: str
    memory_mb: int = 256
    cpus: int = 1
    accel: str = "tcg"  # tcg | kvm
    boot_timeout_s: float = 60.0
    tap: str | None = None  # a tap on the VM bridge (persona.vm.net): the guest gets a NIC
    mac: str = ""


def nic_argv(cfg: VmConfig) -> list[str]:
    if cfg.tap is None:
        return ["-nic", "none"]
    # romfile= : no PXE option ROM (the guest boots from -kernel; ipxe ROMs may be absent)
    return ["-netdev", f"tap,id=net0,ifname={cfg.tap},script=no,downscript=no",
            "-device", "virtio-net-pci,netdev=net0,romfile=" + (f",mac={cfg.mac}" if cfg.mac
                                                                    else "")]


def qemu_argv(image: Image, cfg: VmConfig, workdir: Path, qemu: str = QEMU) -> list[str]:
    append = (f"console=ttyS0 quiet panic=-1 8250.nr_uarts=2 mitigations=off "
              f"persona.host={cfg.name}")
    return [
        qemu, "-name", cfg.name, "-accel", cfg.accel, "-M", "pc", "-m", str(cfg.memory_mb),
        "-smp", str(cfg.cpus), "-nodefaults", "-no-user-config", "-display", "none",
        "-no-reboot", *nic_argv(cfg),
        "-kernel", str(image.kernel), "-initrd", str(image.initrd), "-append", append,
        "-serial", f"file:{workdir / 'console.log'}",
        "-chardev", f"socket,id=agent,path={workdir / 'agent.sock'},server=on,wait=off",
        "-serial", "chardev:agent",
    ]


@dataclass
class Vm:
    """A running guest with its agent channel. Use as a context manager or call close()."""

    cfg: VmConfig
    workdir: Path
    proc: subprocess.Popen[bytes]
    sock: socket.socket | None = None
    parser: protocol.Parser = field(default_factory=protocol.Parser)
    boot_s: float = 0.0
    guest_uptime_s: float = 0.0
    boot_id: str = ""
    _next: int = 1
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _keep_workdir: bool = False
    _t0: float = 0.0

    @property
    def name(self) -> str:
        return self.cfg.name

    # ---- lifecycle
    @classmethod
    def boot(cls, image: Image, cfg: VmConfig, workdir: Path | None = None) -> Vm:
        """Start QEMU and wait for the guest agent (or raise VmError, guest removed)."""
        vm = cls.start(image, cfg, workdir)
        vm.wait_ready()
        return vm

    @classmethod
    def start(cls, image: Image, cfg: VmConfig, workdir: Path | None = None) -> Vm:
        """Start QEMU (call from a long-lived thread: QEMU is killed when it ends)."""
        wd = workdir or Path(tempfile.mkdtemp(prefix=f"persona-vm-{cfg.name}-"))
        if shutil.which(QEMU) is None:
            raise VmError(f"{QEMU} not found: apt-get install qemu-system-x86 "
                          "(or `persona vm build`, which installs it)")
        t0 = time.monotonic()
        log = (wd / "qemu.log").open("wb")
        try:
            proc = subprocess.Popen(qemu_argv(image, cfg, wd), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=_die_with_parent)
        except OSError as e:
            raise VmError(f"cannot start {QEMU}: {e}") from e
        finally:
            log.close()
        return cls(cfg=cfg, workdir=wd, proc=proc, _keep_workdir=workdir is not None, _t0=t0)

    def connect(self) -> None:
        """Connect to the agent socket. Do it right after start: QEMU drops what the guest
        writes while no client is connected (the agent's READY line included)."""
        try:
            self._connect(self._t0 + self.cfg.boot_timeout_s)
        except BaseException:
            self.close()
            raise

    def wait_ready(self) -> None:
        deadline = self._t0 + self.cfg.boot_timeout_s
        try:
            if self.sock is None:
                self._connect(deadline)
            ready = self._wait_ready(deadline)
        except BaseException:
            self.close()
            raise
        self.boot_s = time.monotonic() - self._t0
        self.guest_uptime_s, self.boot_id = ready.uptime_s, ready.boot_id

    def _connect(self, deadline: float) -> None:
        path = self.workdir / "agent.sock"
        while True:
            self._check_alive("connecting to the agent socket")
            if path.exists():
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(str(path))
                    self.sock = s
                    return
                except OSError:
                    s.close()
            if time.monotonic() > deadline:
                raise VmError(f"{self.cfg.name}: QEMU never opened {path}")
            time.sleep(0.05)

    def _wait_ready(self, deadline: float) -> protocol.Ready:
        while True:
            for ev in self._recv(deadline, "waiting for the guest agent (boot)"):
                if isinstance(ev, protocol.Ready):
                    return ev

    def _recv(self, deadline: float, what: str) -> list[protocol.Event]:
        assert self.sock is not None
        left = deadline - time.monotonic()
        if left <= 0:
            raise VmError(f"{self.cfg.name}: timed out {what} "
                          f"(accel {self.cfg.accel}); console: {self.console_tail()}")
        self.sock.settimeout(min(left, 0.5))
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            self._check_alive(what)
            return []
        except OSError as e:
            raise VmError(f"{self.cfg.name}: agent channel broke while {what}: {e}") from e
        if not data:
            self._check_alive(what)
            raise VmError(f"{self.cfg.name}: agent channel closed while {what}")
        return self.parser.feed(data)

    def _check_alive(self, what: str) -> None:
        rc = self.proc.poll()
        if rc is not None:
            raise VmError(f"{self.cfg.name}: QEMU exited ({rc}) while {what}; "
                          f"qemu.log: {self._tail('qemu.log')}; console: {self.console_tail()}")

    def _tail(self, name: str, n: int = 600) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")[-n:].strip() or "(empty)"
        except OSError:
            return "(none)"

    def console_tail(self) -> str:
        return self._tail("console.log")

    def close(self) -> None:
        """Power the guest off (bounded), end our QEMU process, remove the temp folder."""
        if self.proc.poll() is None and self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.sendall(protocol.encode_request(0, "poweroff -f", 5))
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- agent
    def run(self, script: str, timeout: float = 30.0, data: bytes = b"") -> protocol.Result:
        """Run a shell script in the guest; the guest kills it after ``timeout`` s (rc 137).
        ``data`` is available to the script in the file ``$PERSONA_DATA``."""
        with self._lock:
            if self.sock is None:
                raise VmError(f"{self.cfg.name}: guest is closed")
            rid = self._next
            self._next += 1
            try:
                self.sock.settimeout(timeout + HOST_GRACE_S)
                self.sock.sendall(protocol.encode_request(rid, script, timeout, data))
            except OSError as e:
                raise VmError(f"{self.cfg.name}: cannot send to the agent: {e}") from e
            deadline = time.monotonic() + timeout + HOST_GRACE_S
            while True:
                for ev in self._recv(deadline, f"running {script.splitlines()[0][:60]!r}"):
                    if isinstance(ev, protocol.Result) and ev.id == rid:
                        return ev

    def sh(self, script: str, what: str, timeout: float = 30.0) -> str:
        """Run and require exit 0; returns stdout as text."""
        return self.run(script, timeout).check(what).text

    def read_file(self, path: str, timeout: float = 30.0) -> bytes:
        return self.run(f"cat {_q(path)}", timeout).check(f"reading {path}").stdout

    def write_file(self, path: str, data: bytes, mode: int = 0o644, timeout: float = 30.0) -> None:
        d = os.path.dirname(path) or "/"
        self.run(f"mkdir -p {_q(d)} && cp \"$PERSONA_DATA\" {_q(path)} && chmod {mode:o} {_q(path)}",
                 timeout, data).check(f"writing {path}")


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the Python process that started QEMU dies, so a
    killed test or CLI never leaves a guest running."""
    import ctypes
    import signal
    with contextlib.suppress(OSError):  # PR_SET_PDEATHSIG: the starting *thread* counts
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- accelerator choice
def kvm_probe(image: Image, timeout_s: float = 8.0, cache: Path = CACHE) -> dict[str, object]:
    """Does a KVM guest reach its agent within ``timeout_s``? Bounded, cached per host kernel
    and QEMU version (``cache/kvm-probe.json``). On this machine kind a KVM guest hangs in the
    firmware, so the answer is usually no and guests run under TCG (software emulation)."""
    key = f"{os.uname().release} {_qemu_version()}"
    path = cache / "kvm-probe.json"
    try:
        old = json.loads(path.read_text())
        if old.get("key") == key:
            return dict(old)
    except (OSError, ValueError):
        pass
    res: dict[str, object] = {"key": key, "works": False}
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        res["why"] = "/dev/kvm missing or not accessible"
    else:
        t0 = time.monotonic()
        try:
            with Vm.boot(image, VmConfig("kvm-probe", accel="kvm", boot_timeout_s=timeout_s)) as vm:
                res.update(works=True, why=f"guest agent ready in {vm.boot_s:.2f} s")
        except VmError as e:
            res["why"] = f"no agent within {timeout_s:.0f} s under KVM: {str(e)[:200]}"
        res["probe_s"] = round(time.monotonic() - t0, 2)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=2) + "\n")
    return res


def choose_accel(image: Image, requested: str = "auto") -> tuple[str, str]:
    """(accel, reason). ``requested``: auto | kvm | tcg; env PERSONA_VM_ACCEL overrides auto."""
    req = os.environ.get("PERSONA_VM_ACCEL", requested) if requested == "auto" else requested
    if req in ("tcg", "kvm"):
        return req, "requested"
    if req != "auto":
        raise VmError(f"unknown accelerator {req!r}; use auto, kvm or tcg")
    probe = kvm_probe(image)
    if probe.get("works"):
        return "kvm", str(probe.get("why"))
    return "tcg", f"KVM not usable ({probe.get('why')})"


def _qemu_version() -> str:
    try:
        out = subprocess.run([QEMU, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0] if out.stdout else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "missing"


def boot_many(image: Image, cfgs: Sequence[VmConfig]) -> list[Vm]:
    """Boot guests in parallel: start every QEMU from this thread, then wait for each agent.
    On any failure every guest started here is removed."""
    vms: list[Vm] = []
    try:
        for c in cfgs:
            vms.append(Vm.start(image, c))
        for v in vms:
            v.connect()
        for v in vms:
            v.wait_ready()
    except BaseException:
        for v in vms:
            v.close()
        raise
    return vms

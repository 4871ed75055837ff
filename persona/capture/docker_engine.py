"""The real ``Engine`` for cuts and captures: one call per method.

- ``DockerEngine``: everything through the Engine API (``docker pause``, checkpoint route).
- ``FastEngine``: the same cut with less work inside the frozen window (see docs/lab.md,
  "Freeze time"): freeze/thaw by writing the container's cgroup freezer directly (what
  runc does for ``docker pause``, without the dockerd -> containerd -> shim -> runc round
  trips; only with ``dump="runc"``: containerd pauses a task itself before its checkpoint
  and fails on a task frozen behind its back), and checkpoints by runc itself with Docker's runc state
  root (what containerd runs for the Engine route, without containerd's tar into its content
  store and dockerd's untar back, which happen while the host is frozen). The image folder
  has the same layout, so ``docker start --checkpoint`` restores it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from persona.errors import CaptureError
from persona.lab import engine as lab_engine

RUNC_ROOT = "/run/docker/runtime-runc/moby"
CRIU_LOG_NAME = "criu-dump.log"  # CRIU's dump log, kept in the image folder (restore ignores it)  # dockerd's default runc state root (namespace moby)


class DockerEngine:
    def __init__(self, client: Any) -> None:
        self.client = client

    def pause(self, cid: str) -> None:
        self.client.pause(cid)

    def unpause(self, cid: str) -> None:
        self.client.unpause(cid)

    def state(self, cid: str) -> str:
        try:
            st = self.client.inspect_container(cid)["State"]
        except Exception as e:
            raise CaptureError(f"container {cid[:12]} vanished: {e}") from e
        if st.get("Paused"):
            return "paused"
        return str(st.get("Status", "unknown"))

    def checkpoint(self, cid: str, name: str, directory: str) -> None:
        lab_engine.checkpoint_create(self.client, cid, name, directory, exit_=False)


def freezer_state_file(cid: str, cgroup_root: Path = Path("/sys/fs/cgroup")) -> Path:
    """The cgroup v1 ``freezer.state`` of a Docker container (cgroupfs driver)."""
    for cand in (cgroup_root / "freezer" / "docker" / cid,
                 cgroup_root / "freezer" / "system.slice" / f"docker-{cid}.scope"):
        if (cand / "freezer.state").exists():
            return cand / "freezer.state"
    raise CaptureError(f"no cgroup v1 freezer for container {cid[:12]} under {cgroup_root}; "
                       "use the Engine route (--cut engine) on this host")


def runc_checkpoint_cmd(cid: str, image_path: str, work_path: str,
                        root: str = RUNC_ROOT) -> list[str]:
    """runc's checkpoint of a running container that stays running (pure)."""
    return ["runc", "--root", root, "checkpoint", "--leave-running", "--tcp-established",
            "--image-path", image_path, "--work-path", work_path, cid]


class FastEngine(DockerEngine):
    """Cut with the cgroup freezer (and optionally runc dumps); see the module docstring."""

    def __init__(self, client: Any, freeze: str = "freezer", dump: str = "engine",
                 cgroup_root: Path = Path("/sys/fs/cgroup"), timeout_s: float = 10.0) -> None:
        super().__init__(client)
        if freeze not in ("engine", "freezer"):
            raise CaptureError(f"unknown freeze route {freeze!r}: use engine or freezer")
        if dump not in ("engine", "runc"):
            raise CaptureError(f"unknown dump route {dump!r}: use engine or runc")
        if (freeze, dump) == ("freezer", "engine"):
            # containerd pauses a task itself before its checkpoint; it believes the task runs
            # (the freezer was written behind its back), so runc refuses: "container not running"
            raise CaptureError("the Engine checkpoint route needs the Engine's own pause: "
                               "use freeze=engine with dump=engine, or dump=runc")
        self.freeze, self.dump = freeze, dump
        self.cgroup_root = cgroup_root
        self.timeout_s = timeout_s

    def _set(self, cid: str, want: str) -> None:
        f = freezer_state_file(cid, self.cgroup_root)
        try:
            f.write_text(want)
            deadline = time.monotonic() + self.timeout_s
            while f.read_text().strip() != want:  # FREEZING -> FROZEN
                if time.monotonic() > deadline:
                    raise CaptureError(f"container {cid[:12]} did not become {want} in "
                                       f"{self.timeout_s:.0f}s")
                time.sleep(0.001)
        except OSError as e:
            raise CaptureError(f"cannot write {f}: {e.strerror}; did the container exit?") from e

    def pause(self, cid: str) -> None:
        if self.freeze == "engine":
            super().pause(cid)
        else:
            self._set(cid, "FROZEN")

    def unpause(self, cid: str) -> None:
        if self.freeze == "engine":
            super().unpause(cid)
        else:
            self._set(cid, "THAWED")

    def state(self, cid: str) -> str:
        st = super().state(cid)
        if st == "running" and self.freeze == "freezer":
            try:
                frozen = freezer_state_file(cid, self.cgroup_root).read_text().strip()
            except (OSError, CaptureError):
                return st
            return "paused" if frozen != "THAWED" else st
        return st

    def checkpoint(self, cid: str, name: str, directory: str) -> None:
        if self.dump == "engine":
            super().checkpoint(cid, name, directory)
            return
        image = Path(directory) / name
        image.mkdir(parents=True, exist_ok=False)
        work = tempfile.mkdtemp(prefix="runc-work-", dir=directory)
        try:
            res = subprocess.run(runc_checkpoint_cmd(cid, str(image), work),
                                 capture_output=True, text=True, timeout=120)
            if res.returncode != 0:
                log = Path(work) / "dump.log"
                tail = log.read_text()[-800:] if log.exists() else ""
                raise CaptureError(f"runc checkpoint of {cid[:12]} failed: "
                                   f"{res.stderr.strip()[-400:]} {tail}")
            if (Path(work) / "dump.log").exists():
                shutil.copyfile(Path(work) / "dump.log", image / CRIU_LOG_NAME)
        except FileNotFoundError as e:
            raise CaptureError("runc is not on PATH; use --cut engine") from e
        finally:
            shutil.rmtree(work, ignore_errors=True)


# ---- the gated dump: runc and CRIU start while the host still runs, and wait at CRIU's
# pre-dump hook (before CRIU touches the tasks) until the whole host is frozen.
GATE_SCRIPT = """#!/bin/sh
# persona cut gate: CRIU action script (passed only to persona's own runc calls through
# CRIU_CONFIG_FILE). At pre-dump it reports ready and waits for the cut's go/abort.
[ "$CRTOOLS_SCRIPT_ACTION" = pre-dump ] || exit 0
f="$PERSONA_CUT_GATE/go.$CRTOOLS_INIT_PID"
[ -p "$f" ] || exit 0
: > "$f.ready"
x=$(timeout 60 cat "$f")
[ "$x" = go ]
"""


def write_gate(gate: Path) -> Path:
    """The gate folder's script and CRIU config; returns the config path (CRIU_CONFIG_FILE)."""
    script = gate / "gate.sh"
    script.write_text(GATE_SCRIPT)
    script.chmod(0o755)
    conf = gate / "criu.conf"
    # network-lock skip: the cut locks the host's namespace once, outside the frozen window
    # (see netns_lock), instead of every CRIU running 7 iptables processes inside it
    conf.write_text(f"action-script {script}\nnetwork-lock skip\n")
    return conf


NETLOCK_COMMENT = "persona-cut-lock"


def netns_lock_rule() -> list[str]:
    """Drop every packet entering the host's namespace from outside (loopback stays open:
    its peers are all frozen); the kernel then ACKs nothing the dumps could miss (pure)."""
    return ["INPUT", "!", "-i", "lo", "-m", "comment", "--comment", NETLOCK_COMMENT,
            "-j", "DROP"]


def _iptables(pid: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-w", *args],
                          capture_output=True, text=True, timeout=30)


def netns_lock(pid: int) -> Callable[[], None]:
    """Lock the network namespace of ``pid``; returns the unlock. Stale locks of an earlier,
    crashed cut are removed first."""
    while _iptables(pid, "-D", *netns_lock_rule()).returncode == 0:
        pass
    r = _iptables(pid, "-I", *netns_lock_rule())
    if r.returncode != 0:
        raise CaptureError(f"cannot lock the host's network (iptables in netns of {pid}): "
                           f"{r.stderr.strip()}; check: persona doctor")

    def unlock() -> None:
        for _ in range(3):
            if _iptables(pid, "-D", *netns_lock_rule()).returncode == 0:
                return
            time.sleep(0.05)
        raise CaptureError(f"could not remove the network lock of the host (netns of pid {pid})"
                           f"; run: nsenter -t {pid} -n iptables -D {' '.join(netns_lock_rule())}")

    return unlock


class GatedDump:
    """One runc checkpoint started ahead of the freeze, held at CRIU's pre-dump hook."""

    def __init__(self, cid: str, pid: int, image: Path, gate: Path, conf: Path) -> None:
        import os

        self.cid, self.image = cid, image
        self.fifo = gate / f"go.{pid}"
        os.mkfifo(self.fifo, 0o600)
        image.mkdir(parents=True, exist_ok=False)
        self.work = Path(tempfile.mkdtemp(prefix="runc-work-", dir=gate))
        env = {**os.environ, "CRIU_CONFIG_FILE": str(conf), "PERSONA_CUT_GATE": str(gate)}
        try:
            self.proc = subprocess.Popen(runc_checkpoint_cmd(cid, str(image), str(self.work)),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True, env=env)
        except FileNotFoundError as e:
            raise CaptureError("runc is not on PATH; use --cut engine") from e
        self.released = False

    def ready(self) -> bool:
        """True once CRIU waits at the gate; CaptureError if runc ended before reaching it."""
        if Path(f"{self.fifo}.ready").exists():
            return True
        if self.proc.poll() is not None:
            self._raise_failed()
        return False

    def release(self, go: bool) -> None:
        """Tell the waiting CRIU to dump (go) or to give up before touching the tasks."""
        import os

        if self.released:
            return
        self.released = True
        deadline = time.monotonic() + 5.0
        while True:
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:  # ENXIO: the gate script has not opened its end yet
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    return
                time.sleep(0.0005)
        try:
            os.write(fd, b"go\n" if go else b"abort\n")
        finally:
            os.close(fd)

    def wait(self, timeout_s: float = 120.0) -> None:
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise CaptureError(f"runc checkpoint of {self.cid[:12]} still running after "
                               f"{timeout_s:.0f}s") from e
        if self.proc.returncode != 0:
            self._raise_failed()
        log = self.work / "dump.log"
        if log.exists():  # kept with the images: the per-phase timings of this dump
            shutil.copyfile(log, self.image / CRIU_LOG_NAME)

    def _raise_failed(self) -> None:
        self.proc.wait()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        log = self.work / "dump.log"
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        raise CaptureError(f"runc checkpoint of {self.cid[:12]} failed: {err.strip()[-400:]} "
                           f"{tail}")


class GatedEngine(FastEngine):
    """Fast route whose dumps start before the freeze (see ``persona.capture.cut.gated_cut``)."""

    def __init__(self, client: Any, cgroup_root: Path = Path("/sys/fs/cgroup")) -> None:
        super().__init__(client, "freezer", "runc", cgroup_root=cgroup_root)
        self.gate: tuple[Path, Path] | None = None

    def lock_network(self, netns_pid: int) -> Callable[[], None]:
        return netns_lock(netns_pid)

    def open_gate(self, gate: Path) -> None:
        self.gate = (gate, write_gate(gate))

    def start_checkpoint(self, cid: str, name: str, directory: str) -> GatedDump:
        if self.gate is None:
            raise CaptureError("open_gate() first")
        try:
            pid = int(self.client.inspect_container(cid)["State"]["Pid"])
        except Exception as e:
            raise CaptureError(f"container {cid[:12]} vanished: {e}") from e
        return GatedDump(cid, pid, Path(directory) / name, *self.gate)

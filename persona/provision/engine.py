"""The provisioner's side effects: one Docker/CRIU/iptables/procfs operation per method.

``ProvisionEngine`` is the narrow protocol :mod:`persona.provision.apply` needs; ``DockerProvisioner``
is the real one (Engine API through the docker SDK's low-level client), tests use a typed fake.
Every library error is translated here into ``RestoreError``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from persona.capture import parse
from persona.errors import LabError, RestoreError
from persona.lab import demo
from persona.lab import engine as lab_engine
from persona.lab.spec import ContainerSpec

CONTAINERS_ROOT = Path("/var/lib/docker/containers")
# containerd's shim bundle: runc's CRIU work dir (stats-restore, restore.log) lives here
TASK_ROOT = Path("/var/lib/docker/containerd/daemon/io.containerd.runtime.v2.task/moby")
RUN_TASK_ROOT = Path("/var/run/docker/containerd/daemon/io.containerd.runtime.v2.task/moby")
# the netns lock: nothing reaches the replacement's sockets while CRIU repairs them - neither
# loopback peers (a connection between two of the host's processes) nor outside clients
LOCK_RULE = ("INPUT", "-j", "DROP")


class ProvisionEngine(Protocol):
    def find(self, name: str) -> str | None: ...
    def create(self, spec: ContainerSpec, netns_id: str | None) -> str: ...
    def start(self, cid: str) -> None: ...
    def remove(self, cid: str) -> None: ...
    def netns_pid(self, cid: str) -> int: ...
    def extract_fs(self, cid: str, archive: Path) -> int: ...
    def write_file(
        self, cid: str, path: str, data: bytes, mtime_ns: int | None = None, mode: int | None = None
    ) -> str: ...
    def set_cpu(self, cid: str, cores: float | None) -> None: ...
    def read_file(self, cid: str, path: str) -> bytes | None: ...
    def restore(self, cid: str, checkpoint: Path, name: str) -> dict[str, Any]: ...
    def lock(self, pid: int) -> None: ...
    def unlock(self, pid: int) -> None: ...
    def addresses(self, pid: int) -> list[str]: ...
    def listening(self, pid: int) -> set[str]: ...
    def kernel_modules(self) -> tuple[bool, str]: ...


if TYPE_CHECKING:
    from persona.model import PersonaManifest
    from persona.provision.apply import ApplyOptions, Trace
    from persona.provision.plan import Plan


@runtime_checkable
class HostEngine(Protocol):
    """A provisioner that builds a whole replacement host itself (a VM: boot a guest, apply the
    persona inside it) instead of one container operation per step. ``apply_persona``,
    ``cold_start`` and ``remove_replacement`` of :mod:`persona.provision.apply` hand such an
    engine the whole job, so the recovery workflow drives both kinds through the same calls.
    Same contract: a failure rolls the replacement back and raises ``StepFailed`` with the trace."""

    def apply_persona(
        self,
        manifest: PersonaManifest,
        data_dir: Path,
        plan: Plan,
        version: str,
        opts: ApplyOptions,
    ) -> Trace: ...
    def cold_start(
        self, manifest: PersonaManifest, data_dir: Path | None, version: str
    ) -> Trace: ...
    def remove_replacement(self, trace: Trace) -> None: ...


def _run(cmd: list[str], what: str) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RestoreError(f"{what}: {e}") from e
    if res.returncode != 0:
        raise RestoreError(f"{what} failed: {res.stderr.strip()[-400:]}")
    return res.stdout


def criu_log_errors(paths: list[Path], keep: int = 6, text: str | None = None) -> str:
    """The last ``keep`` error lines of the first CRIU log that exists, or of ``text`` (a copy
    taken while the log still existed); '' if none."""
    for p in paths:
        if text is not None:
            break
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
    if text is None:
        return ""
    errs = [ln.strip() for ln in text.splitlines() if "Error" in ln or "error" in ln]
    return " | ".join(errs[-keep:])


class LogTail:
    """Keep the latest contents of a log that its writer deletes on failure (runc's work dir,
    removed with the task before the caller sees the error): polled from a thread while the
    operation runs. ``text`` is the last copy read, None if the log never appeared."""

    def __init__(self, paths: list[Path], period_s: float = 0.02) -> None:
        import threading

        self.paths = paths
        self.period_s = period_s
        self.text: str | None = None
        self._stop = threading.Event()
        self._th = threading.Thread(target=self._run, daemon=True, name="criu-log-tail")

    def _run(self) -> None:
        while True:
            for p in self.paths:
                try:
                    self.text = p.read_text(errors="replace")
                except OSError:
                    continue
            if self._stop.wait(self.period_s):
                return

    def __enter__(self) -> LogTail:
        self._th.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._th.join(2.0)


def read_restore_stats(directory: Path) -> dict[str, Any]:
    """CRIU's ``stats-restore`` image in runc's work dir, decoded with pycriu: pages restored,
    forking and restore times (us). {} when CRIU left none."""
    for p in (directory / "stats-restore",):
        if p.exists():
            try:
                import pycriu

                with p.open("rb") as f:
                    img = pycriu.images.load(f)
                entry = img["entries"][0].get("restore", {})
                return {k: v for k, v in entry.items()}
            except Exception as e:  # pycriu raises plain exceptions on odd images
                return {"error": f"cannot decode {p.name}: {e}"}
    return {}


class DockerProvisioner:
    def __init__(self, client: Any) -> None:
        self.client = client

    def find(self, name: str) -> str | None:
        c = demo.find(self.client, name)
        return None if c is None else str(c["Id"])

    def create(self, spec: ContainerSpec, netns_id: str | None) -> str:
        from persona.lab import spec as lab_spec

        a = lab_spec.create_args(spec, netns_id)
        hc = dict(a["host_config"])  # type: ignore[call-overload]
        kw: dict[str, Any] = {
            "image": a["image"],
            "command": a["command"],
            "name": a["name"],
            "labels": a["labels"],
            "environment": a["environment"],
            "detach": True,
            "host_config": self.client.create_host_config(**hc),
        }
        if a.get("hostname"):
            kw["hostname"] = a["hostname"]
        if "networking_config" in a:
            ((net, ep),) = a["networking_config"].items()  # type: ignore[attr-defined]
            kw["networking_config"] = self.client.create_networking_config(
                {net: self.client.create_endpoint_config(**ep)}
            )
        try:
            return str(self.client.create_container(**kw)["Id"])
        except Exception as e:
            raise RestoreError(f"cannot create {spec.name} from {spec.image}: {e}") from e

    def start(self, cid: str) -> None:
        try:
            self.client.start(cid)
        except Exception as e:
            raise RestoreError(f"cannot start {cid[:12]}: {e}") from e

    def remove(self, cid: str) -> None:
        try:
            self.client.remove_container(cid, force=True)
        except Exception as e:
            if "No such container" not in str(e):
                raise RestoreError(f"cannot remove {cid[:12]}: {e}") from e

    def netns_pid(self, cid: str) -> int:
        pid = int(self.client.inspect_container(cid)["State"]["Pid"])
        if pid <= 0:
            raise RestoreError(f"container {cid[:12]} is not running (no pid)")
        return pid

    def _upper(self, cid: str) -> Path:
        return Path(self.client.inspect_container(cid)["GraphDriver"]["Data"]["UpperDir"])

    def extract_fs(self, cid: str, archive: Path) -> int:
        """Unpack the captured upper-dir tar into the new container's upper dir (whiteouts,
        i.e. 0/0 character devices, included: overlayfs hides the deleted files again)."""
        up = self._upper(cid)
        try:
            with tarfile.open(archive) as tar:
                members = tar.getmembers()
                tar.extractall(up, numeric_owner=True, filter="fully_trusted")
        except (OSError, tarfile.TarError) as e:
            raise RestoreError(f"cannot unpack {archive.name} into {cid[:12]}: {e}") from e
        return len(members)

    def read_file(self, cid: str, path: str) -> bytes | None:
        """What the container wrote to ``path`` (its upper dir), or None if it wrote nothing."""
        try:
            return (self._upper(cid) / path.lstrip("/")).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RestoreError(f"cannot read {path} of {cid[:12]}: {e}") from e

    def write_file(
        self, cid: str, path: str, data: bytes, mtime_ns: int | None = None, mode: int | None = None
    ) -> str:
        """Write ``path`` into the container's upper dir with its captured mode and mtime (an
        app that watches its config's mtime must not see the restore as a config change)."""
        dst = self._upper(cid) / path.lstrip("/")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".persona-tmp")
            tmp.write_bytes(data)
            if mode is not None:
                os.chmod(tmp, mode)
            if mtime_ns is not None:
                os.utime(tmp, ns=(mtime_ns, mtime_ns))
            os.replace(tmp, dst)
            return hashlib.sha256(dst.read_bytes()).hexdigest()
        except OSError as e:
            raise RestoreError(f"cannot write {path} into {cid[:12]}: {e.strerror}") from e

    def set_cpu(self, cid: str, cores: float | None) -> None:
        """CFS quota through the Engine (cgroup v1 cpu.cfs_quota_us); None lifts the limit."""
        period = 100_000
        quota = -1 if cores is None else max(1000, round(cores * period))
        try:
            self.client.update_container(cid, cpu_period=period, cpu_quota=quota)
        except Exception as e:
            raise RestoreError(f"cannot set CPU of {cid[:12]} to {cores} cores: {e}") from e

    def restore(self, cid: str, checkpoint: Path, name: str) -> dict[str, Any]:
        dst = CONTAINERS_ROOT / cid / "checkpoints" / name
        try:
            shutil.copytree(checkpoint, dst)
        except OSError as e:
            raise RestoreError(f"cannot install checkpoint {checkpoint} for {cid[:12]}: {e}") from e
        logs = [
            RUN_TASK_ROOT / cid / "work" / "restore.log",
            TASK_ROOT / cid / "work" / "restore.log",
        ]
        try:
            # the runtime deletes its work dir (and CRIU's log) as soon as a restore fails:
            # a copy is kept while it runs, so CRIU's own reason reaches the error and trace
            with LogTail(logs) as tail:
                lab_engine.start_from_checkpoint(self.client, cid, name)
        except LabError as e:
            why = criu_log_errors(logs, text=tail.text)
            raise RestoreError(
                f"CRIU restore of {cid[:12]} failed: {e}" + (f"; CRIU log: {why}" if why else "")
            ) from e
        stats = read_restore_stats(TASK_ROOT / cid)
        stats["images_bytes"] = sum(p.stat().st_size for p in dst.rglob("*") if p.is_file())
        return stats

    def lock(self, pid: int) -> None:
        _run(["nsenter", "-t", str(pid), "-n", "iptables", "-I", *LOCK_RULE], "netns lock")

    def unlock(self, pid: int) -> None:
        _run(["nsenter", "-t", str(pid), "-n", "iptables", "-D", *LOCK_RULE], "netns unlock")

    def addresses(self, pid: int) -> list[str]:
        out = _run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "-4", "addr", "show"], "ip addr")
        return [f.split()[3] for f in out.splitlines() if len(f.split()) > 3]

    def listening(self, pid: int) -> set[str]:
        out: set[str] = set()
        for f in ("tcp", "tcp6"):
            try:
                text = Path(f"/proc/{pid}/net/{f}").read_text()
            except OSError:
                continue
            out |= {
                f"{s.local}:{s.local_port}"
                for s in parse.parse_proc_net_tcp(text)
                if s.state == "LISTEN"
            }
        return out

    def kernel_modules(self) -> tuple[bool, str]:
        if not Path("/proc/modules").exists():
            return False, (
                "this kernel has no loadable modules (/proc/modules missing); and a "
                "container cannot load modules anyway: needs a VM provisioner"
            )
        return False, (
            "the provisioner is a container on a shared kernel: modules cannot be "
            "loaded per host (needs a VM provisioner); presence is verified instead"
        )

    def loaded_modules(self) -> set[str]:
        try:
            return {ln.split()[0] for ln in Path("/proc/modules").read_text().splitlines() if ln}
        except OSError:
            return set()

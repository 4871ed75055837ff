"""A typed fake of ``ProvisionEngine``: records every call, fails where told."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona.errors import RestoreError
from persona.lab.spec import ContainerSpec


@dataclass
class FakeEngine:
    fail_restore: set[str] = field(default_factory=set)  # container names whose restore fails
    fail_extract_times: int = 0  # first N extract_fs calls fail
    fail_restore_times: int = 0  # first N restore calls fail (CRIU's intermittent errors)
    existing: set[str] = field(default_factory=set)
    listening_set: set[str] = field(
        default_factory=lambda: {"0.0.0.0:8080", "127.0.0.1:6379", "127.0.0.11:41234"}
    )
    addrs: list[str] = field(default_factory=lambda: ["127.0.0.1/8", "10.77.0.61/24"])
    calls: list[tuple[str, ...]] = field(default_factory=list)
    containers: dict[str, str] = field(default_factory=dict)  # cid -> name
    running: set[str] = field(default_factory=set)
    cpu: dict[str, float | None] = field(default_factory=dict)
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    file_meta: dict[tuple[str, str], tuple[int | None, int | None]] = field(default_factory=dict)
    locked: bool = False

    def _name(self, cid: str) -> str:
        return self.containers[cid]

    def find(self, name: str) -> str | None:
        if name in self.existing:
            return "old" + name
        return next((c for c, n in self.containers.items() if n == name), None)

    def create(self, spec: ContainerSpec, netns_id: str | None) -> str:
        n = sum(1 for c in self.calls if c[:2] == ("create", spec.name))
        cid = hashlib.sha256(f"{spec.name}#{n}".encode()).hexdigest()
        self.containers[cid] = spec.name
        self.calls.append(("create", spec.name, str(spec.ip), str(spec.cpus)))
        return cid

    def start(self, cid: str) -> None:
        self.running.add(cid)
        self.calls.append(("start", self._name(cid)))

    def remove(self, cid: str) -> None:
        self.calls.append(("remove", self.containers.pop(cid)))
        self.running.discard(cid)

    def netns_pid(self, cid: str) -> int:
        return 4242

    def extract_fs(self, cid: str, archive: Path) -> int:
        self.calls.append(("extract", self._name(cid), archive.name))
        if self.fail_extract_times > 0:
            self.fail_extract_times -= 1
            raise RestoreError("disk hiccup")
        return 3

    def write_file(
        self, cid: str, path: str, data: bytes, mtime_ns: int | None = None, mode: int | None = None
    ) -> str:
        self.files[(self._name(cid), path)] = data
        self.file_meta[(self._name(cid), path)] = (mtime_ns, mode)
        self.calls.append(("write", self._name(cid), path))
        return hashlib.sha256(data).hexdigest()

    def read_file(self, cid: str, path: str) -> bytes | None:
        self.calls.append(("read", self._name(cid), path))
        return self.files.get((self._name(cid), path))

    def set_cpu(self, cid: str, cores: float | None) -> None:
        self.cpu[self._name(cid)] = cores
        self.calls.append(("cpu", self._name(cid), str(cores)))

    def restore(self, cid: str, checkpoint: Path, name: str) -> dict[str, Any]:
        self.calls.append(("restore", self._name(cid), "locked" if self.locked else "unlocked"))
        if self._name(cid) in self.fail_restore:
            raise RestoreError(f"CRIU restore of {cid[:12]} failed: boom")
        if self.fail_restore_times > 0:
            self.fail_restore_times -= 1
            raise RestoreError(f"CRIU restore of {cid[:12]} failed: type NOTIFY errno 0")
        self.running.add(cid)
        return {"pages_restored": 10, "restore_time": 1000}

    def lock(self, pid: int) -> None:
        assert not self.locked
        self.locked = True
        self.calls.append(("lock",))

    def unlock(self, pid: int) -> None:
        assert self.locked
        self.locked = False
        self.calls.append(("unlock",))

    def addresses(self, pid: int) -> list[str]:
        return list(self.addrs)

    def listening(self, pid: int) -> set[str]:
        return set(self.listening_set)

    def kernel_modules(self) -> tuple[bool, str]:
        return False, "container provisioner: cannot load modules"


def persona_dir(tmp: Path, manifest_path: Path) -> Path:
    """A fetched-persona folder for the fixture manifest: every data file it names exists."""
    import json

    d = tmp / "persona"
    d.mkdir()
    m = json.loads(manifest_path.read_text())
    for c in m["components"]:
        for rel in c["data"]:
            p = d / rel
            if c["kind"] == "process":
                p.mkdir(parents=True, exist_ok=True)
                (p / "core-1.img").write_bytes(b"core" * 10)
            elif c["kind"] == "config":  # the real captured files (their sha256 is checked)
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes((manifest_path.parent / rel).read_bytes())
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(b"x")
    (d / "manifest.json").write_text(manifest_path.read_text())
    return d

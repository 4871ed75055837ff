"""Bring up a replacement host and apply a persona to it, step by step, with a restore trace.

:func:`provision` creates the replacement (same images, network and IP; a new namespace owner,
i.e. pause container, started; the other containers created, not started). :func:`apply_plan`
then follows the plan: filesystem diffs, configuration files, kernel modules (honestly reported
as not loadable in a container), per process the CPU allocation and the CRIU restore into the
new container under a netns lock that goes as soon as both ends of every captured connection
are back, and finally network checks. :func:`cold_start` is the comparison without process
state: the same containers started fresh from their images plus the captured disk (filesystem
diffs and configs), so the apps rebuild their memory from disk themselves.

Every step is timed into a :class:`Trace`. Any failure rolls the replacement back (lock rule
dropped, every created container removed) and raises ``RestoreError`` carrying the trace; the
stored persona is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from persona.errors import PersonaError, RestoreError
from persona.model import ComponentKind, PersonaManifest
from persona.provision.engine import HostEngine, ProvisionEngine
from persona.provision.plan import (
    Plan,
    Replacement,
    check_plan,
    connections,
    cpu_allocation,
    external_holders,
    lock_pairs,
    lock_release_after,
    replacement,
)

CHECKPOINT_NAME = "persona"
DNS_PREFIX = "127.0.0.11:"  # Docker's embedded DNS listens on a random port per namespace


@dataclass
class StepRecord:
    name: str
    kind: str
    action: str
    start_s: float
    end_s: float = 0.0
    outcome: str = "running"  # ok | failed | unsupported | skipped
    detail: str = ""
    level: int | None = None
    alloc_cores: float | None = None
    retries: int = 0
    criu: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["duration_s"] = round(self.duration_s, 4)
        d["start_s"], d["end_s"] = round(self.start_s, 4), round(self.end_s, 4)
        return d


@dataclass
class Trace:
    host: str
    policy: str
    version: str
    started_at: float  # wall clock (epoch s)
    steps: list[StepRecord] = field(default_factory=list)
    lock: dict[str, Any] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)  # provision_s, apply_s
    containers: dict[str, str] = field(default_factory=dict)  # name -> id
    outcome: str = "running"  # ok | failed
    rolled_back: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "policy": self.policy,
            "version": self.version,
            "started_at": self.started_at,
            "outcome": self.outcome,
            "rolled_back": self.rolled_back,
            "error": self.error,
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            "lock": self.lock,
            "containers": self.containers,
            "steps": [s.to_dict() for s in self.steps],
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path


class StepFailed(RestoreError):
    """A plan step failed and the replacement was rolled back. ``trace`` says where."""

    def __init__(self, message: str, trace: Trace) -> None:
        super().__init__(message)
        self.trace = trace


@dataclass(frozen=True)
class ApplyOptions:
    retries: int = 1  # extra tries of a step that failed (not for CRIU restores: see below)
    # a failed CRIU restore leaves its container unusable: it is retried this many times in a
    # fresh container (same spec, the container's filesystem diff and configs re-applied)
    restore_retries: int = 1
    cpu_override: Mapping[str, float] = field(default_factory=dict)  # component -> cores
    config_override: Mapping[str, bytes] = field(default_factory=dict)  # path -> content
    lock: bool = True  # the netns lock during restores (off only to show what it prevents)
    break_checkpoint: bool = False  # truncate the first process's core image (working copy)
    # a process captured with a ready file (label persona.ready-file) is restored when its
    # heartbeat says "ready" again after the restore, at most this long after it
    ready_timeout_s: float = 60.0


class _Clock:
    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now
        self.t0 = now()

    def rel(self) -> float:
        return self.now() - self.t0


def _record(
    trace: Trace,
    clock: _Clock,
    name: str,
    kind: str,
    action: str,
    fn: Callable[[StepRecord], str],
    retries: int = 0,
) -> StepRecord:
    rec = StepRecord(name, kind, action, clock.rel())
    trace.steps.append(rec)
    while True:
        try:
            rec.detail = fn(rec)
            rec.outcome = rec.outcome if rec.outcome != "running" else "ok"
            rec.end_s = clock.rel()
            return rec
        except PersonaError as e:
            if rec.retries < retries:
                rec.retries += 1
                continue
            rec.outcome, rec.detail, rec.end_s = "failed", str(e), clock.rel()
            raise


class Session:
    """One replacement being built: what was created so far, so it can be rolled back."""

    def __init__(
        self,
        engine: ProvisionEngine,
        manifest: PersonaManifest,
        data_dir: Path,
        trace: Trace,
        opts: ApplyOptions,
        now: Callable[[], float],
        cold: bool = False,
    ) -> None:
        self.e = engine
        self.m = manifest
        self.data = data_dir
        self.trace = trace
        self.opts = opts
        self.clock = _Clock(now)
        self.rep: Replacement = replacement(manifest, cpu_limits=cold)
        self.ids: dict[str, str] = {}
        self.ns_pid: int | None = None
        self.locked = False
        self.restored: set[str] = set()  # processes restored by apply_step
        self.applied: list[str] = []  # non-process components applied so far, in order

    # ---- rollback
    def rollback(self) -> list[str]:
        problems = []
        if self.locked and self.ns_pid is not None:
            try:
                self.e.unlock(self.ns_pid)
                self.locked = False
            except PersonaError as e:
                problems.append(str(e))
        for _name, cid in reversed(list(self.ids.items())):
            try:
                self.e.remove(cid)
            except PersonaError as e:
                problems.append(str(e))
        self.trace.rolled_back = True
        return problems

    # ---- provision: same images, network and IP, a new namespace owner
    def provision(self) -> None:
        t = self.clock.rel()
        for s in self.rep.specs:
            other = self.e.find(s.name)
            if other is not None:
                raise RestoreError(
                    f"container {s.name} ({other[:12]}) still exists: fence the "
                    "old host first (never two live copies)"
                )
        owner = self.rep.specs[0]

        def pause(rec: StepRecord) -> str:
            cid = self.e.create(owner, None)
            self.ids[owner.name] = cid
            self.e.start(cid)
            self.ns_pid = self.e.netns_pid(cid)
            return f"{owner.name} {cid[:12]} at {owner.ip}, netns pid {self.ns_pid}"

        _record(
            self.trace, self.clock, owner.name, "provision", "create+start namespace owner", pause
        )
        for s in self.rep.specs[1:]:

            def create(rec: StepRecord, s: Any = s) -> str:
                cid = self.e.create(s, self.ids[owner.name])
                self.ids[s.name] = cid
                return f"{s.name} {cid[:12]} from {s.image} (created, not started)"

            _record(self.trace, self.clock, s.name, "provision", "create", create)
        self.trace.containers = dict(self.ids)
        self.trace.phases["provision_s"] = self.clock.rel() - t

    # ---- apply
    def apply(self, plan: Plan) -> None:
        check_plan(self.m, plan)
        t = self.clock.rel()
        procs = [s.component for s in plan.steps if s.kind == ComponentKind.PROCESS.value]
        conns = lock_pairs(self.m)
        release_at = lock_release_after(procs, conns) if self.opts.lock else -1
        self.trace.lock = {
            "connections": [list(c) for c in connections(self.m)],
            "external": external_holders(self.m),
            "release_after": procs[release_at] if release_at >= 0 else None,
        }
        n_proc = 0
        for step in plan.steps:
            c = self.m.component(step.component)
            if c.kind == ComponentKind.PROCESS:
                if n_proc == 0 and release_at >= 0:
                    self._lock()
                self._process(plan.levels, step.component, step.level)
                if n_proc == release_at:
                    self._unlock(f"both ends of {len(conns)} connection(s) are back")
                self._ready(step.component)
                n_proc += 1
            else:
                self._component(step.component)
        self._network_post()
        self.trace.phases["apply_s"] = self.clock.rel() - t

    def _component(self, name: str) -> None:
        kind = self.m.component(name).kind
        if kind == ComponentKind.FILESYSTEM:
            self._filesystem(name)
        elif kind == ComponentKind.CONFIG:
            self._config(name)
        elif kind == ComponentKind.KERNEL_MODULE:
            self._kmod(name)
        elif kind == ComponentKind.NETWORK:
            self._network_pre(name)
        self.applied.append(name)

    def _touches(self, name: str, ctr: str) -> bool:
        """Whether applying component ``name`` wrote into container ``ctr``."""
        if self.rep.fs_container.get(name) == ctr:
            return True
        return any(c == ctr for c, _, _ in self.rep.config_files.get(name, ()))

    def _recreate(self, ctr: str, why: PersonaError) -> None:
        """Replace container ``ctr`` (after a failed CRIU restore left it unusable) by a fresh
        one from the same spec in the same namespace, and re-apply what was written into it."""
        spec = next(s for s in self.rep.specs if s.name == ctr)
        owner = self.rep.specs[0].name

        def run(rec: StepRecord) -> str:
            old = self.ids.pop(ctr)
            self.e.remove(old)
            cid = self.e.create(spec, self.ids[owner])
            self.ids[ctr] = cid
            self.trace.containers = dict(self.ids)
            return f"{ctr}: {old[:12]} replaced by {cid[:12]} after: {why}"

        _record(self.trace, self.clock, ctr, "provision", "recreate after failed restore", run)
        for name in [c for c in self.applied if self._touches(c, ctr)]:
            self.applied.remove(name)
            self._component(name)

    # ---- one step at a time (the live environment decides each next step)
    def apply_step(self, name: str, level: int, levels: tuple[float, ...]) -> StepRecord:
        """Apply ONE component at allocation ``level`` (index into ``levels``) and return its
        last trace record. Raises ``PersonaError`` when the step fails; nothing is rolled back
        here (the caller decides: :meth:`rollback`). The netns lock follows :meth:`apply`'s
        rule over the order taken so far: engaged before the first process restore, released
        once both ends of every captured connection are back and every process holding a
        connection to an outside peer is restored."""
        if name not in self.m.names:
            raise RestoreError(f"{name!r} is not a component of {self.m.host.name}'s persona")
        if not 0 <= level < len(levels):
            raise RestoreError(f"allocation level {level} outside 0..{len(levels) - 1}")
        if self.m.component(name).kind != ComponentKind.PROCESS:
            self._component(name)
            return self.trace.steps[-1]
        conns = lock_pairs(self.m)
        if self.opts.lock and conns and not self.restored and not self.locked:
            self.trace.lock = {
                "connections": [list(c) for c in connections(self.m)],
                "external": external_holders(self.m),
                "release_after": None,
            }
            self._lock()
        self._process(levels, name, level)
        self.restored.add(name)
        if self.locked and all(a in self.restored and b in self.restored for a, b in conns):
            self.trace.lock["release_after"] = name
            self._unlock(f"both ends of {len(conns)} connection(s) are back")
        self._ready(name)
        return self.trace.steps[-1]

    def finish(self) -> StepRecord:
        """After the last step: the captured listening sockets are back (raises if not)."""
        self._network_post()
        return self.trace.steps[-1]

    def _filesystem(self, name: str) -> None:
        ctr = self.rep.fs_container[name]
        arc = self.rep.fs_archive.get(name)

        def run(rec: StepRecord) -> str:
            if arc is None:
                return "no filesystem diff captured"
            n = self.e.extract_fs(self.ids[ctr], self.data / arc)
            return f"{n} entries of {arc} into {ctr}'s upper dir"

        _record(self.trace, self.clock, name, "filesystem", "unpack diff", run, self.opts.retries)

    def _config(self, name: str) -> None:
        files = self.rep.config_files.get(name, ())
        want = self.m.component(name).attributes.get("files") or {}

        def run(rec: StepRecord) -> str:
            out = []
            for ctr, path, data in files:
                raw = self.opts.config_override.get(path)
                content = raw if raw is not None else (self.data / data).read_bytes()
                meta = want.get(path) or {}
                sha = self.e.write_file(
                    self.ids[ctr],
                    path,
                    content,
                    mtime_ns=meta.get("mtime_ns") if raw is None else None,
                    mode=meta.get("mode"),
                )
                exp = meta.get("sha256")
                if raw is None and exp and sha != exp:
                    raise RestoreError(f"{path} in {ctr}: sha256 {sha[:12]} != captured {exp[:12]}")
                out.append(
                    f"{path} sha256 {sha[:12]}" + (" (OVERRIDDEN)" if raw is not None else "")
                )
            return "; ".join(out) or "no files"

        _record(self.trace, self.clock, name, "config", "write + verify", run, self.opts.retries)

    def _kmod(self, name: str) -> None:
        def run(rec: StepRecord) -> str:
            ok, why = self.e.kernel_modules()
            if not ok:
                rec.outcome = "unsupported"
            return why

        _record(self.trace, self.clock, name, "kernel_module", "load in captured order", run)

    def _network_pre(self, name: str) -> None:
        want = [
            a["addr"]
            for a in self.m.component(name).attributes.get("addresses", [])
            if a.get("family") == "inet"
        ]

        def run(rec: StepRecord) -> str:
            assert self.ns_pid is not None
            have = self.e.addresses(self.ns_pid)
            missing = sorted(set(want) - set(have))
            if missing:
                raise RestoreError(
                    f"replacement namespace lacks captured address(es) "
                    f"{', '.join(missing)} (has {', '.join(have)})"
                )
            return f"addresses {', '.join(sorted(have))} as captured"

        _record(self.trace, self.clock, name, "network", "check addresses", run)

    def _lock(self) -> None:
        assert self.ns_pid is not None
        t = self.clock.rel()
        self.e.lock(self.ns_pid)
        self.locked = True
        self.trace.lock["engaged_s"] = round(t, 4)

    def _unlock(self, why: str) -> None:
        assert self.ns_pid is not None
        self.e.unlock(self.ns_pid)
        self.locked = False
        t = self.clock.rel()
        self.trace.lock["released_s"] = round(t, 4)
        self.trace.lock["window_s"] = round(t - self.trace.lock.get("engaged_s", t), 4)
        self.trace.lock["why"] = why

    def reallocate(self, name: str, level: int, levels: tuple[float, ...]) -> StepRecord:
        """Remediation after a failed performance check: give restored process ``name`` the
        CPU quota of ``level`` (no restart: the quota applies to the running process)."""
        if self.m.component(name).kind != ComponentKind.PROCESS:
            raise RestoreError(f"{name!r} is not a process; only processes get CPU allocations")
        self._allocate(levels, name, level, "remediation: raise cpu quota")
        return self.trace.steps[-1]

    def reset_allocations(self) -> None:
        """Give every restored process its captured CPU limit back: the allocation a restore
        chose is the restorer's decision, not part of the host's configuration."""
        for name in sorted(self.restored):
            r = self.m.component(name).resources
            self.e.set_cpu(
                self.ids[self.rep.process_container[name]], r.cpu_limit_cores if r else None
            )

    def _allocate(self, levels: tuple[float, ...], name: str, level: int, action: str) -> None:
        r = self.m.component(name).resources
        cid = self.ids[self.rep.process_container[name]]
        cores = self.opts.cpu_override.get(name)
        if cores is None:
            cores = cpu_allocation(
                levels[level],
                r.cpu_peak_cores if r else None,
                r.cpu_limit_cores if r else None,
            )

        def alloc(rec: StepRecord) -> str:
            rec.level, rec.alloc_cores = level, cores
            self.e.set_cpu(cid, cores)
            src = (
                "override"
                if name in self.opts.cpu_override
                else f"{levels[level]:g}x peak {r.cpu_peak_cores if r else 0:.3f}, floor = "
                f"captured limit {r.cpu_limit_cores if r else None}"
            )
            return f"cpu {cores if cores is not None else 'unlimited'} cores ({src})"

        _record(self.trace, self.clock, name, "resources", action, alloc, self.opts.retries)

    def _process(self, levels: tuple[float, ...], name: str, level: int) -> None:
        ctr = self.rep.process_container[name]
        self._allocate(levels, name, level, "cgroup cpu quota")
        ck = self.rep.checkpoint.get(name)
        if ck is None:
            raise RestoreError(f"{name}: no checkpoint captured")

        if self.opts.break_checkpoint and not any(s.kind == "process" for s in self.trace.steps):
            for core in sorted((self.data / ck).glob("core-*.img")):
                core.write_bytes(core.read_bytes()[:16])  # the fetched copy, never the store

        def restore(rec: StepRecord) -> str:
            # not retried in place: a failed CRIU restore leaves the container unusable
            cid = self.ids[ctr]
            rec.criu = self.e.restore(cid, self.data / ck, CHECKPOINT_NAME)
            return f"CRIU restore of {ck} into {ctr} {cid[:12]}"

        tries = 0
        while True:
            try:
                _record(self.trace, self.clock, name, "process", "CRIU restore", restore)
                break
            except PersonaError as e:
                if tries >= self.opts.restore_retries:
                    raise
                tries += 1
                self._recreate(ctr, e)
                self._allocate(levels, name, level, "cgroup cpu quota (fresh container)")

    def _ready(self, name: str) -> None:
        """After a process's restore and the lock decision that follows it: wait for its ready
        heartbeat, if it was captured with one. Waiting after the unlock keeps a restored
        process's network usable while it gets ready (under the lock its own requests to a
        peer would be dropped until an application timeout fires)."""
        ready = self.m.component(name).attributes.get("ready_file")
        if ready:
            self._wait_ready(name, self.rep.process_container[name], str(ready))

    def _wait_ready(self, name: str, ctr: str, path: str) -> None:
        """Wait for a fresh "ready" heartbeat of a restored process: the file it captured
        holds an old one, so only a heartbeat written after the restore counts."""
        since = time.time()  # the container shares the machine's wall clock

        def run(rec: StepRecord) -> str:
            cid = self.ids[ctr]
            deadline = time.monotonic() + self.opts.ready_timeout_s
            seen = b""
            while True:
                seen = self.e.read_file(cid, path) or b""
                if ready_since(seen, since):
                    return f"{path}: {seen.decode(errors='replace')[:40]}"
                if time.monotonic() > deadline:
                    raise RestoreError(
                        f"{name} not ready {self.opts.ready_timeout_s:.0f} s after its restore "
                        f"({path}: {seen.decode(errors='replace')[:60] or 'nothing'}); see: "
                        f"docker logs {ctr}"
                    )
                time.sleep(0.02)

        _record(self.trace, self.clock, name, "process", "wait until ready", run)

    def _network_post(self) -> None:
        net = next((c for c in self.m.components if c.kind == ComponentKind.NETWORK), None)
        want = {
            x
            for x in (net.attributes.get("listening", []) if net else [])
            if not str(x).startswith(DNS_PREFIX)
        }

        def run(rec: StepRecord) -> str:
            assert self.ns_pid is not None
            deadline = self.clock.rel() + 5.0
            while True:
                have = {x for x in self.e.listening(self.ns_pid) if not x.startswith(DNS_PREFIX)}
                missing = sorted(want - have)
                if not missing:
                    return f"listening {', '.join(sorted(want))} as captured"
                if self.clock.rel() > deadline:
                    raise RestoreError(f"not listening on captured {', '.join(missing)}")
                time.sleep(0.05)

        _record(self.trace, self.clock, "network", "network", "check listening sockets", run)


def ready_since(heartbeat: bytes, since: float) -> bool:
    """Whether a ready-file heartbeat (``ready <unix time>``) was written at or after ``since``."""
    parts = heartbeat.split()
    if len(parts) != 2 or parts[0] != b"ready":
        return False
    try:
        return float(parts[1]) >= since
    except ValueError:
        return False


def apply_persona(
    engine: ProvisionEngine | HostEngine,
    manifest: PersonaManifest,
    data_dir: Path,
    plan: Plan,
    version: str,
    opts: ApplyOptions | None = None,
    now: Callable[[], float] = time.perf_counter,
) -> Trace:
    """Provision a replacement and apply ``plan``. On failure: roll back, raise ``StepFailed``."""
    if isinstance(engine, HostEngine):  # builds whole hosts (VMs): same contract, its own steps
        return engine.apply_persona(manifest, data_dir, plan, version, opts or ApplyOptions())
    trace = Trace(manifest.host.name, plan.policy, version, time.time())
    s = Session(engine, manifest, data_dir, trace, opts or ApplyOptions(), now)
    try:
        s.provision()
        s.apply(plan)
    except PersonaError as e:
        problems = s.rollback()
        trace.outcome, trace.error = "failed", str(e)
        extra = f"; rollback problems: {'; '.join(problems)}" if problems else ""
        raise StepFailed(
            f"restore of {manifest.host.name} (version {version}, plan "
            f"{plan.policy}) failed and was rolled back: {e}{extra}",
            trace,
        ) from e
    except BaseException:
        s.rollback()
        raise
    trace.outcome = "ok"
    return trace


def cold_start(
    engine: ProvisionEngine | HostEngine,
    manifest: PersonaManifest,
    data_dir: Path | None = None,
    now: Callable[[], float] = time.perf_counter,
    version: str = "images",
) -> Trace:
    """The comparison method: the host started from its images and its disk, no process
    state. Same containers and IP (captured CPU limits); with ``data_dir`` (a fetched persona)
    each container first gets its captured filesystem diff (the files its processes wrote:
    e.g. redis's append-only file) and its config files, then every process is started fresh
    and rebuilds its memory from that disk itself (redis loads its data, the api builds its
    index). Without ``data_dir``: images only. Nothing is restored from a checkpoint."""
    if isinstance(engine, HostEngine):
        return engine.cold_start(manifest, data_dir, version)
    trace = Trace(manifest.host.name, "cold-start", version, time.time())
    data = data_dir if data_dir is not None else Path("/nonexistent")
    s = Session(engine, manifest, data, trace, ApplyOptions(), now, cold=True)
    try:
        s.provision()
        t = s.clock.rel()
        if data_dir is not None:  # the disk: filesystem diffs, configs (captured mtimes kept)
            for c in manifest.components:
                if c.kind in (ComponentKind.FILESYSTEM, ComponentKind.CONFIG):
                    s._component(c.name)
        for spec in s.rep.specs[1:]:

            def start(rec: StepRecord, cid: str = s.ids[spec.name]) -> str:
                engine.start(cid)
                return "started fresh (no checkpoint)"

            _record(trace, s.clock, spec.name, "process", "start", start)
        s._network_post()
        trace.phases["apply_s"] = s.clock.rel() - t
    except PersonaError as e:
        s.rollback()
        trace.outcome, trace.error = "failed", str(e)
        raise StepFailed(f"cold start of {manifest.host.name} failed: {e}", trace) from e
    except BaseException:
        s.rollback()
        raise
    trace.outcome = "ok"
    return trace


def remove_replacement(engine: ProvisionEngine | HostEngine, trace: Trace) -> None:
    """Remove a replacement built earlier (a restore that failed *validation*)."""
    if isinstance(engine, HostEngine):
        engine.remove_replacement(trace)
        return
    for cid in reversed(list(trace.containers.values())):
        engine.remove(cid)
    trace.rolled_back = True


def sha256_tree(root: Path) -> str:
    """Digest of every file under ``root`` (names + contents): proves a persona is untouched."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()

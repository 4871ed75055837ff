"""The consistent cut: freeze every container of a host, checkpoint each (Exit=false), unfreeze.

``plan_cut`` is pure. ``consistent_cut`` runs it against an ``Engine`` (the Docker adapter in
production, a typed fake in tests) and guarantees, in every path, that each container it paused
is unpaused again and that a failed cut leaves no checkpoint folder behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from persona.errors import CaptureError


class Engine(Protocol):
    """The few engine operations a cut needs (see ``DockerEngine`` for the real one)."""

    def pause(self, cid: str) -> None: ...
    def unpause(self, cid: str) -> None: ...
    def state(self, cid: str) -> str: ...
    def checkpoint(self, cid: str, name: str, directory: str) -> None: ...


class PendingDump(Protocol):
    """A checkpoint started before the freeze and held before it touches the tasks."""

    def ready(self) -> bool: ...  # held at the gate (CaptureError if it already failed)
    def release(self, go: bool) -> None: ...  # go: dump now; else give up untouched
    def wait(self) -> None: ...  # until done; CaptureError on failure


class GatedEngine(Engine, Protocol):
    def lock_network(self, netns_pid: int) -> Callable[[], None]: ...  # returns the unlock
    def open_gate(self, gate: Path) -> None: ...
    def start_checkpoint(self, cid: str, name: str, directory: str) -> PendingDump: ...


@dataclass(frozen=True)
class Member:
    cid: str
    name: str
    role: str


@dataclass(frozen=True)
class CutPlan:
    freeze: tuple[Member, ...]  # pause order
    dump: tuple[Member, ...]  # checkpoint order (namespace owner is not dumped: it is recreated)
    thaw: tuple[Member, ...]  # unpause order


def plan_cut(members: list[Member]) -> CutPlan:
    """Freeze clients before servers (no request is half-served by a frozen server), dump every
    non-pause member, thaw in reverse (servers first, so clients find them running)."""
    if not members:
        raise CaptureError("host has no containers to capture")
    rank = {"load": 0, "api": 1, "worker": 1, "redis": 2, "pause": 3}
    freeze = tuple(sorted(members, key=lambda m: (rank.get(m.role, 1), m.name)))
    dump = tuple(m for m in freeze if m.role != "pause")
    return CutPlan(freeze, dump, tuple(reversed(freeze)))


@dataclass
class CutResult:
    name: str
    directory: Path
    freeze_ms: float  # first pause -> last unpause
    pause_ms: float
    dump_ms: dict[str, float] = field(default_factory=dict)  # per container name
    thaw_ms: float = 0.0
    inside_ms: float = 0.0  # the ``inside`` work (files read while frozen), run beside the dumps
    prepare_ms: float = 0.0  # gated cut: dump start-up before the freeze (outside the window)
    lock_ms: float = 0.0  # gated cut: network lock + unlock of the host (outside the window)




def _freeze_all(engine: Engine, members: Sequence[Member], paused: list[Member]) -> None:
    """Freeze ``members`` in order, recording each in ``paused`` *before* its call (so a pause
    that fails half-way is still undone by the caller's unfreeze)."""
    for m in members:
        st = engine.state(m.cid)
        if st != "running":
            raise CaptureError(f"container {m.name} is {st}, not running: the host changed "
                               "under the capture; retry when it is stable")
        paused.append(m)
        try:
            engine.pause(m.cid)
        except Exception as e:
            raise CaptureError(f"cannot pause {m.name}: {e}") from e

def _timed_inside(inside: Callable[[], object] | None) -> float:
    """Run ``inside`` (work that must happen while the host is frozen); its time in ms."""
    t = time.perf_counter()
    if inside is not None:
        try:
            inside()
        except CaptureError:
            raise
        except Exception as e:
            raise CaptureError(f"reading files inside the cut failed: {e}") from e
    return (time.perf_counter() - t) * 1000

def consistent_cut(engine: Engine, plan: CutPlan, directory: Path, name: str,
                   parallel: bool = False,
                   inside: Callable[[], object] | None = None) -> CutResult:
    """Run the plan. ``directory/<container name>/<name>/`` receives each checkpoint.

    ``inside`` (e.g. reading filesystem diffs and config files) runs while every member is
    frozen, beside the dumps, so what it reads is consistent with the memory images.
    On any failure: unpause everything paused so far, delete ``directory``, raise CaptureError.
    """
    paused: list[Member] = []
    dump_ms: dict[str, float] = {}
    inside_ms = 0.0
    t0 = time.perf_counter()
    t_paused = t0
    ok = False
    error: BaseException | None = None
    try:
        _freeze_all(engine, plan.freeze, paused)
        t_paused = time.perf_counter()

        def dump(m: Member) -> float:
            t = time.perf_counter()
            target = directory / m.name
            target.mkdir(parents=True, exist_ok=True)
            try:
                engine.checkpoint(m.cid, name, str(target))
            except Exception as e:
                raise CaptureError(f"checkpoint of {m.name} failed: {e}") from e
            return (time.perf_counter() - t) * 1000

        def run_inside() -> float:
            return _timed_inside(inside)

        if parallel and len(plan.dump) > 1:
            # every member is frozen: dumping them concurrently keeps the cut consistent
            with ThreadPoolExecutor(max_workers=len(plan.dump) + 1) as ex:
                futs = {m.name: ex.submit(dump, m) for m in plan.dump}
                fin = ex.submit(run_inside)
                for n, f in futs.items():
                    dump_ms[n] = f.result()
                inside_ms = fin.result()
        else:
            inside_ms = run_inside()
            for m in plan.dump:
                dump_ms[m.name] = dump(m)
        ok = True
    except BaseException as e:
        error = e
        raise
    finally:
        t_thaw = time.perf_counter()
        thaw_errors = []
        for m in plan.thaw:
            if m in paused:
                try:
                    engine.unpause(m.cid)
                except Exception as e:  # keep thawing the others
                    try:
                        still = engine.state(m.cid)
                    except Exception:
                        still = "unknown"
                    if still == "paused":
                        thaw_errors.append(f"{m.name}: {e}")
        t_end = time.perf_counter()
        if not ok:
            shutil.rmtree(directory, ignore_errors=True)
        if thaw_errors:
            msg = ("could not unpause " + "; ".join(thaw_errors) +
                   " — run: docker unpause <container>")
            if error is None:
                raise CaptureError(msg)
            raise CaptureError(f"{error}; and {msg}") from error
    return CutResult(name, directory, (t_end - t0) * 1000, (t_paused - t0) * 1000, dump_ms,
                     (t_end - t_thaw) * 1000, inside_ms)


def gated_cut(engine: GatedEngine, plan: CutPlan, directory: Path, name: str,
              inside: Callable[[], object] | None = None,
              ready_timeout_s: float = 60.0, netns_pid: int | None = None) -> CutResult:
    """The consistent cut with the dumps' start-up moved out of the frozen window.

    Every dump is started first and held at a gate before it touches any task (for runc +
    CRIU: CRIU's pre-dump hook, after runc's and CRIU's start-up and kernel probing). When all
    wait there, the host is frozen, the gates open, the dumps (and ``inside``) run, and the host
    is thawed once every dump has ended. With ``netns_pid``, the host's network namespace is
    locked (no packet from outside gets in, so the kernel ACKs nothing a dump could miss) just
    before the freeze and unlocked just after the thaw, in every path; the dumpers then skip
    their own per-dump locks. Same guarantees as ``consistent_cut``: everything
    frozen is thawed in every path (only after every released dump has ended, since a dumper
    restores the freezer state it found), and a failed cut leaves no checkpoint folder.
    """
    directory.mkdir(parents=True, exist_ok=True)
    gate = Path(tempfile.mkdtemp(prefix=".gate-", dir=directory.parent))
    pending: dict[str, PendingDump] = {}
    paused: list[Member] = []
    dump_ms: dict[str, float] = {}
    inside_ms = prepare_ms = lock_ms = 0.0
    unlock: Callable[[], None] | None = None
    t0: float | None = None
    t_paused = 0.0
    ok = False
    error: BaseException | None = None
    try:
        engine.open_gate(gate)
        tp = time.perf_counter()
        for m in plan.freeze:
            st = engine.state(m.cid)
            if st != "running":
                raise CaptureError(f"container {m.name} is {st}, not running: the host changed "
                                   "under the capture; retry when it is stable")
        for m in plan.dump:
            (directory / m.name).mkdir(parents=True, exist_ok=True)
            pending[m.name] = engine.start_checkpoint(m.cid, name, str(directory / m.name))
        deadline = time.monotonic() + ready_timeout_s
        waiting = set(pending)
        while waiting:
            waiting = {n for n in waiting if not pending[n].ready()}
            if waiting and time.monotonic() > deadline:
                raise CaptureError(f"dump of {', '.join(sorted(waiting))} did not get ready "
                                   f"within {ready_timeout_s:.0f}s")
            if waiting:
                time.sleep(0.0005)
        prepare_ms = (time.perf_counter() - tp) * 1000
        if netns_pid is not None:
            tl = time.perf_counter()
            unlock = engine.lock_network(netns_pid)
            lock_ms = (time.perf_counter() - tl) * 1000

        t0 = time.perf_counter()
        _freeze_all(engine, plan.freeze, paused)
        t_paused = time.perf_counter()

        def run(n: str) -> float:
            t = time.perf_counter()
            pending[n].release(True)
            pending[n].wait()
            return (time.perf_counter() - t) * 1000

        def run_inside() -> float:
            return _timed_inside(inside)

        with ThreadPoolExecutor(max_workers=len(pending) + 1) as ex:
            futs = {n: ex.submit(run, n) for n in pending}
            fin = ex.submit(run_inside)
            for n, f in futs.items():
                dump_ms[n] = f.result()
            inside_ms = fin.result()
        ok = True
    except BaseException as e:
        error = e
        raise
    finally:
        for p in pending.values():  # held dumps give up untouched; released ones are awaited
            try:
                p.release(False)
                p.wait()
            except Exception:
                pass
        t_thaw = time.perf_counter()
        thaw_errors = []
        for m in plan.thaw:
            if m in paused:
                try:
                    engine.unpause(m.cid)
                except Exception as e:
                    try:
                        still = engine.state(m.cid)
                    except Exception:
                        still = "unknown"
                    if still == "paused":
                        thaw_errors.append(f"{m.name}: {e}")
        t_end = time.perf_counter()
        if unlock is not None:
            tl = time.perf_counter()
            try:
                unlock()
            except Exception as e:
                thaw_errors.append(str(e))
            lock_ms += (time.perf_counter() - tl) * 1000
        shutil.rmtree(gate, ignore_errors=True)
        if not ok:
            shutil.rmtree(directory, ignore_errors=True)
        if thaw_errors:
            msg = ("could not unpause or unlock " + "; ".join(thaw_errors) +
                   " — run: docker unpause <container>")
            if error is None:
                raise CaptureError(msg)
            raise CaptureError(f"{error}; and {msg}") from error
    start = t0 if t0 is not None else t_end
    return CutResult(name, directory, (t_end - start) * 1000, (t_paused - start) * 1000, dump_ms,
                     (t_end - t_thaw) * 1000, inside_ms, prepare_ms, lock_ms)

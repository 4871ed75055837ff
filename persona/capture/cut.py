"""The consistent cut: freeze every container of a host, checkpoint each (Exit=false), unfreeze.

``plan_cut`` is pure. ``consistent_cut`` runs it against an ``Engine`` (the Docker adapter in
production, a typed fake in tests) and guarantees, in every path, that each container it paused
is unpaused again and that a failed cut leaves no checkpoint folder behind.
"""

from __future__ import annotations

import shutil
import time
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


def consistent_cut(engine: Engine, plan: CutPlan, directory: Path, name: str,
                   parallel: bool = False) -> CutResult:
    """Run the plan. ``directory/<container name>/<name>/`` receives each checkpoint.

    On any failure: unpause everything paused so far, delete ``directory``, raise CaptureError.
    """
    paused: list[Member] = []
    dump_ms: dict[str, float] = {}
    t0 = time.perf_counter()
    t_paused = t0
    ok = False
    error: BaseException | None = None
    try:
        for m in plan.freeze:
            st = engine.state(m.cid)
            if st != "running":
                raise CaptureError(f"container {m.name} is {st}, not running: the host changed "
                                   "under the capture; retry when it is stable")
            paused.append(m)  # before the call: a pause that fails half-way is still undone
            try:
                engine.pause(m.cid)
            except Exception as e:
                raise CaptureError(f"cannot pause {m.name}: {e}") from e
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

        if parallel and len(plan.dump) > 1:
            # every member is frozen: dumping them concurrently keeps the cut consistent
            with ThreadPoolExecutor(max_workers=len(plan.dump)) as ex:
                futs = {m.name: ex.submit(dump, m) for m in plan.dump}
                for n, f in futs.items():
                    dump_ms[n] = f.result()
        else:
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
                     (t_end - t_thaw) * 1000)

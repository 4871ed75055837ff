"""The restore simulator's dynamics: pure functions over frozen params and state.

This is the one copy of the dynamics. The Gymnasium env, the baselines' look-ahead, the
oracle and the benchmark all call these functions; none keeps dynamics of its own.

Model (a fluid discrete-event simulation):

* Up to ``host.slots`` restores run at once. A restore of component *i* at level *l*
  needs CPU work and I/O work (see :class:`~envs.sim.params.KindModel`), scaled per
  attempt by a log-normal noise factor drawn up front.
* CPU: a running restore asks for ``c_i`` cores - the process's allocation
  (``alloc_levels[l] * captured peak``) or ``restore_cores[l]`` for other kinds. Restored
  processes keep using ``background_factor * min(alloc, true demand)`` cores. When the asks
  exceed what is left of ``host.cpu_cores``, all running restores are slowed by the same
  factor. A serial share of the work cannot use more than one core.
* I/O: ``host.io_mb_s`` is shared equally by running restores that move data.
* A restore's progress rate is ``1 / max(cpu time, io time)`` at the current rates; rates
  change only at events (a start, a completion, a back-off expiring), so progress is exact.
* Hard dependencies are masked: a component starts only when all its parents are done.
* Hidden soft dependencies: when *i* starts while some *j* with ``soft[i, j] > 0`` is not
  done, the attempt fails at its end with ``p = 1 - prod(1 - soft[i, j])``; the component
  goes back to pending with a back-off ``backoff_base_s * 2**(attempt-1)``. A share
  ``latent_fraction`` of such faults does not fail the restore but leaves a latent fault
  that functional validation catches.
* When every component is done, validation runs (``validation_s`` per round, at most
  ``max_validation_rounds``): functional (no latent faults), performance (each process's
  effective allocation >= its true demand; allocations above ``cpu_cores`` in total are
  scaled down), load (``min(cpu_cores, sum of allocations)`` >= captured peak load).
  Failed checks are remediated (restart the component; raise the allocation one level)
  at a time cost, then validation runs again.
* TTR is the time at which validation passes; an episode that is not validated (checks
  still failing after the last round, or time budget exceeded) has TTR = ``max_time_s``.
  The reward is ``-reward_scale * elapsed`` per step, so the return is ``-reward_scale * TTR``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.sim.params import EpisodeParams, attempt_duration

PENDING, RUNNING, DONE = 0, 1, 2
CHECKS = ("functional", "performance", "load")


@dataclass(frozen=True)
class SimState:
    """Everything that changes during an episode. Arrays are never mutated in place."""

    t: float
    status: np.ndarray  # int8 [n]: PENDING / RUNNING / DONE
    level: np.ndarray  # int8 [n]: allocation level of the current/last attempt, -1 if none
    remaining: (
        np.ndarray
    )  # float [n]: fraction of the running attempt's work left (0 if not running)
    attempts: np.ndarray  # int16 [n]: finished failed attempts
    ready_at: np.ndarray  # float [n]: earliest start (back-off)
    will_fail: np.ndarray  # bool [n]: the running attempt will fail at its end
    will_latent: np.ndarray  # bool [n]: the running attempt will leave a latent fault
    latent: np.ndarray  # bool [n]: done with a latent fault
    alloc: np.ndarray  # float [n]: CPU cores allocated to (running or done) processes
    parents_left: np.ndarray  # int16 [n]: hard parents not yet done
    running: tuple[int, ...] = ()  # components being restored
    backoff: tuple[int, ...] = ()  # pending components whose retry back-off may not be over
    background: float = 0.0  # CPU cores used by restored processes
    n_failures: int = 0
    terminal: bool = False
    truncated: bool = False
    validated: bool = False
    ttr: float = float("nan")
    checks: tuple[tuple[str, bool, bool, int], ...] = ()  # (check, passed, first_round, fixes)
    remediation_s: float = 0.0
    first_alloc: np.ndarray | None = None  # allocations the first validation round measured

    @property
    def n_running(self) -> int:
        return len(self.running)


def _replace(s: SimState, **changes: Any) -> SimState:
    """``dataclasses.replace`` without re-running ``__init__`` (hot path), dropping memos."""
    new = object.__new__(SimState)
    d = new.__dict__
    d.update(s.__dict__)
    d.pop("_startable", None)
    d.update(changes)
    return new


def initial(p: EpisodeParams) -> SimState:
    n = p.n
    return SimState(
        t=0.0,
        status=np.zeros(n, dtype=np.int8),
        level=np.full(n, -1, dtype=np.int8),
        remaining=np.zeros(n),
        attempts=np.zeros(n, dtype=np.int16),
        ready_at=np.zeros(n),
        will_fail=np.zeros(n, dtype=bool),
        will_latent=np.zeros(n, dtype=bool),
        latent=np.zeros(n, dtype=bool),
        alloc=np.zeros(n),
        parents_left=p.parents.sum(axis=1).astype(np.int16),
    )


# ---------------------------------------------------------------------------------------
# what may happen now


def startable(p: EpisodeParams, s: SimState) -> np.ndarray:
    """Components that may start now: pending, back-off over, all hard parents done, a free slot."""
    memo = s.__dict__.get("_startable")
    if memo is not None:
        return memo
    if s.terminal or s.n_running >= p.host.slots:
        out = np.zeros(p.n, dtype=bool)
    else:
        out = (s.status == PENDING) & (s.ready_at <= s.t) & (s.parents_left == 0)
    s.__dict__["_startable"] = out  # memo on the frozen state: a pure function of it
    return out


def can_wait(p: EpisodeParams, s: SimState) -> bool:
    """Waiting is meaningful only if something will happen: a restore ends or a back-off expires."""
    if s.terminal:
        return False
    return bool(s.running) or any(s.ready_at[i] > s.t for i in s.backoff)


def action_mask(p: EpisodeParams, s: SimState, n_max: int) -> np.ndarray:
    """Mask over ``n_max * levels + 1`` actions: (component, level) pairs then wait."""
    L = p.config.n_levels
    mask = np.zeros(n_max * L + 1, dtype=bool)
    mask[: p.n * L] = np.repeat(startable(p, s), L)
    mask[-1] = can_wait(p, s)
    return mask


def allocation(p: EpisodeParams, i: int, level: int) -> float:
    """CPU cores allocated to process ``i`` at ``level`` (0 for other kinds)."""
    if not p.is_process[i]:
        return 0.0
    return float(p.peak[i] * p.config.alloc_levels[level])


# ---------------------------------------------------------------------------------------
# time


def _durations(p: EpisodeParams, s: SimState, run: tuple[int, ...]) -> list[float]:
    """Current full-attempt duration (s) of each running restore, at today's shares."""
    cfg, L = p.config, p.lists
    asks = [
        max(float(s.alloc[i]) if L.is_process[i] else cfg.restore_cores[s.level[i]], 0.05)
        for i in run
    ]
    avail = max(p.host.cpu_cores - s.background, 0.1 * p.host.cpu_cores)
    scale = min(1.0, avail / sum(asks))
    n_io = sum(1 for i in run if L.io_work[i] > 0) or 1
    io_rate = p.host.io_mb_s / n_io
    R = cfg.max_attempts - 1
    out = []
    for i, ask in zip(run, asks, strict=True):
        nz = L.noise[i][min(int(s.attempts[i]), R)]
        out.append(
            attempt_duration(
                L.cpu_work[i] * nz,
                L.io_work[i] * nz,
                L.serial[i],
                ask * scale,
                io_rate,
                L.fixed[i] * nz,
            )
        )
    return out


def advance(p: EpisodeParams, s: SimState, until: float | None = None) -> SimState:
    """Advance to the next event (a restore ends or a back-off expires), or to ``until``."""
    run = s.running
    t_next = float("inf")
    full: list[float] = []
    if run:
        full = _durations(p, s, run)
        rem = s.remaining
        t_next = s.t + min(float(rem[i]) * f for i, f in zip(run, full, strict=True))
    for i in s.backoff:
        r = float(s.ready_at[i])
        if s.t < r < t_next:
            t_next = r
    if until is not None and until < t_next:
        t_next = until
    if t_next == float("inf"):
        return s
    dt = t_next - s.t
    changes: dict[str, Any] = {"t": t_next}
    if s.backoff:
        changes["backoff"] = tuple(i for i in s.backoff if s.ready_at[i] > t_next)
    if not run:
        return _replace(s, **changes)
    remaining = s.remaining.copy()
    finished = []
    for i, f in zip(run, full, strict=True):
        r = float(remaining[i]) - dt / f
        if r <= 1e-9:
            finished.append(i)
            r = 0.0
        remaining[i] = r
    changes["remaining"] = remaining
    if not finished:
        return _replace(s, **changes)
    failed = [i for i in finished if s.will_fail[i]]
    status = s.status.copy()
    changes["running"] = tuple(i for i in run if i not in finished)
    if failed:  # only a failure touches these: copy them only then
        attempts, ready_at = s.attempts.copy(), s.ready_at.copy()
        alloc, level = s.alloc.copy(), s.level.copy()
        backoff = list(changes.pop("backoff", s.backoff))
        for i in failed:
            status[i] = PENDING
            attempts[i] += 1
            ready_at[i] = t_next + p.config.backoff_base_s * 2.0 ** (attempts[i] - 1)
            backoff.append(i)
            remaining[i] = 0.0
            alloc[i] = 0.0
            level[i] = -1
        changes.update(
            attempts=attempts,
            ready_at=ready_at,
            alloc=alloc,
            level=level,
            backoff=tuple(backoff),
            n_failures=s.n_failures + len(failed),
        )
    done = [i for i in finished if not s.will_fail[i]]
    if done:
        changes.update(_mark_done(p, s, done, status))
    return _replace(s, **changes, status=status)


def _mark_done(
    p: EpisodeParams, s: SimState, done: list[int], status: np.ndarray
) -> dict[str, Any]:
    """Mark ``done`` finished in ``status`` (a copy, mutated); the other fields that change."""
    parents_left = s.parents_left.copy()
    background = s.background
    latent = s.latent
    for i in done:
        status[i] = DONE
        if s.will_latent[i]:
            if latent is s.latent:
                latent = latent.copy()
            latent[i] = True
        parents_left -= p.parents[:, i]
        if p.lists.is_process[i]:
            background += p.config.background_factor * min(float(s.alloc[i]), p.lists.demand[i])
    return {"parents_left": parents_left, "background": background, "latent": latent}


def complete(p: EpisodeParams, s: SimState, i: int, level: int, seconds: float) -> SimState:
    """Component ``i`` restored at ``level`` in ``seconds`` measured elsewhere (the live lab
    applies one step at a time): the same bookkeeping as a simulated completion."""
    lv = s.level.copy()
    lv[i] = level
    alloc = s.alloc.copy()
    alloc[i] = allocation(p, i, level)
    s2 = _replace(s, level=lv, alloc=alloc)
    status = s.status.copy()
    changes = _mark_done(p, s2, [i], status)
    return _replace(s2, t=s.t + seconds, status=status, **changes)


def fail(p: EpisodeParams, s: SimState, i: int, level: int, seconds: float) -> SimState:
    """Component ``i`` failed after ``seconds`` measured elsewhere and cannot be retried (a
    live CRIU restore leaves its container unusable): the episode ends, not validated."""
    lv = s.level.copy()
    lv[i] = level
    attempts = s.attempts.copy()
    attempts[i] += 1
    return _replace(
        s,
        t=s.t + seconds,
        level=lv,
        attempts=attempts,
        n_failures=s.n_failures + 1,
        terminal=True,
        validated=False,
        ttr=p.config.max_time_s,
    )


def fault_draw(p: EpisodeParams, s: SimState, i: int) -> tuple[bool, bool]:
    """Whether starting ``i`` now fails, or leaves a latent fault (hidden; drawn up front)."""
    att = int(s.attempts[i])
    if att >= p.config.max_attempts:
        return False, False
    ok = 1.0  # probability that no missing soft parent makes the attempt fault
    for j, pj in p.lists.soft_parents[i]:
        if s.status[j] != DONE:
            ok *= 1.0 - pj
    if ok == 1.0:
        return False, False
    p_fault = 1.0 - ok
    fails = bool(p.fail_u[i, att] < p_fault * (1.0 - p.config.latent_fraction))
    latent = (not fails) and bool(p.latent_u[i, att] < p_fault * p.config.latent_fraction)
    return fails, latent


def start(p: EpisodeParams, s: SimState, i: int, level: int) -> SimState:
    """Start restoring component ``i`` at ``level``; the caller checked it is startable."""
    fails, latent = fault_draw(p, s, i)
    status = s.status.copy()
    status[i] = RUNNING
    lv = s.level.copy()
    lv[i] = level
    alloc = s.alloc.copy()
    alloc[i] = allocation(p, i, level)
    wf = s.will_fail.copy()
    wf[i] = fails
    wl = s.will_latent.copy()
    wl[i] = latent
    rem = s.remaining.copy()
    rem[i] = 1.0
    return _replace(
        s,
        status=status,
        level=lv,
        alloc=alloc,
        will_fail=wf,
        will_latent=wl,
        remaining=rem,
        running=tuple(sorted((*s.running, i))),
    )


# ---------------------------------------------------------------------------------------
# validation


@dataclass(frozen=True)
class CheckResults:
    """Per-check failures of one validation round."""

    functional: np.ndarray  # bool [n]: latent fault
    performance: np.ndarray  # bool [n]: effective allocation below true demand
    load: bool  # allocated capacity covers the captured peak load


def effective_alloc(p: EpisodeParams, alloc: np.ndarray) -> np.ndarray:
    total = float(alloc.sum())
    return alloc * min(1.0, p.host.cpu_cores / total) if total > 0 else alloc


def check_results(p: EpisodeParams, latent: np.ndarray, alloc: np.ndarray) -> CheckResults:
    """Pure validation checks on a fully restored host."""
    eff = effective_alloc(p, alloc)
    perf_fail = p.is_process & (eff + 1e-9 < p.demand)
    load_ok = min(p.host.cpu_cores, float(alloc.sum())) + 1e-9 >= p.peak_load
    return CheckResults(functional=latent.copy(), performance=perf_fail, load=load_ok)


def validate(p: EpisodeParams, s: SimState) -> SimState:
    """Run the validation phase with remediation; returns a terminal state."""
    cfg = p.config
    L = cfg.n_levels
    t = s.t
    latent = s.latent.copy()
    alloc = s.alloc.copy()
    level = s.level.copy()
    fixes = {c: 0 for c in CHECKS}
    first: dict[str, bool] = {}
    remediation = 0.0
    ok = False
    res = check_results(p, latent, alloc)
    for rnd in range(cfg.max_validation_rounds):
        t += cfg.validation_s
        res = check_results(p, latent, alloc)
        passed = {
            "functional": not bool(res.functional.any()),
            "performance": not bool(res.performance.any()),
            "load": res.load,
        }
        if rnd == 0:
            first = dict(passed)
        if all(passed.values()):
            ok = True
            break
        if rnd == cfg.max_validation_rounds - 1:
            break
        restart: set[int] = set()
        for i in map(int, np.flatnonzero(res.functional)):
            latent[i] = False
            restart.add(i)
            fixes["functional"] += 1
        for i in map(int, np.flatnonzero(res.performance)):
            if level[i] < L - 1:
                level[i] += 1
                alloc[i] = allocation(p, i, int(level[i]))
                restart.add(i)
                fixes["performance"] += 1
        if not passed["load"]:
            procs = np.flatnonzero(p.is_process & (level < L - 1))
            if procs.size:
                i = int(procs[np.argmin(level[procs])])
                level[i] += 1
                alloc[i] = allocation(p, i, int(level[i]))
                restart.add(i)
                fixes["load"] += 1
        cost = sum(cfg.restart_base_s + 0.5 * float(p.nominal_s[i]) for i in restart)
        remediation += cost
        t += cost
    final = {
        "functional": not bool(res.functional.any()),
        "performance": not bool(res.performance.any()),
        "load": res.load,
    }
    if t > cfg.max_time_s:
        ok = False
    checks = tuple((c, final[c], first[c], fixes[c]) for c in CHECKS)
    return _replace(
        s,
        t=min(t, cfg.max_time_s),
        latent=latent,
        alloc=alloc,
        level=level,
        terminal=True,
        validated=ok,
        ttr=min(t, cfg.max_time_s) if ok else cfg.max_time_s,
        checks=checks,
        remediation_s=remediation,
        first_alloc=s.alloc,
    )


# ---------------------------------------------------------------------------------------
# one environment step


def decode(p: EpisodeParams, action: int, n_max: int) -> tuple[int, int] | None:
    """(component, level) for a start action, ``None`` for wait."""
    L = p.config.n_levels
    if action == n_max * L:
        return None
    return action // L, action % L


def settle(p: EpisodeParams, s: SimState) -> SimState:
    """Run time forward until a real decision exists (or the episode ends).

    A real decision is a start action; when none is possible the restorer can only wait,
    so the simulator waits by itself. Validation runs once everything is done.
    """
    while not s.terminal:
        if not s.running and not s.backoff and not (s.status != DONE).any():
            return validate(p, s)
        if s.t >= p.config.max_time_s:
            return _replace(
                s, terminal=True, truncated=True, validated=False, ttr=p.config.max_time_s
            )
        if startable(p, s).any():
            return s
        s = advance(p, s, until=p.config.max_time_s)
    return s


def transition(p: EpisodeParams, s: SimState, action: int, n_max: int) -> tuple[SimState, bool]:
    """Apply ``action`` then settle. Returns the new state and whether the action was valid.

    An invalid action (masked out) never crashes: the restorer idles ``invalid_action_s``.
    """
    L = p.config.n_levels
    if action == n_max * L:
        valid = can_wait(p, s)
    else:
        valid = 0 <= action < p.n * L and bool(startable(p, s)[action // L])
    if not valid:
        target = min(s.t + p.config.invalid_action_s, p.config.max_time_s)
        while s.t < target:  # advance stops at each event; idle until the time is used up
            s = advance(p, s, until=target)
    else:
        d = decode(p, action, n_max)
        s = advance(p, s) if d is None else start(p, s, d[0], d[1])
    return settle(p, s), valid


def reward(p: EpisodeParams, before: SimState, after: SimState) -> float:
    """``-reward_scale`` per simulated second; a failed episode is charged up to ``max_time_s``."""
    t_after = after.ttr if after.terminal else after.t
    return -p.config.reward_scale * (t_after - before.t)

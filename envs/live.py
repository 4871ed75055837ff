"""The live backend of ``persona/Restore-v0``: every episode restores a real lab host.

``reset`` causes a fresh failure of the host from a freshly captured persona version:

1. the host runs (the previous episode's validated replacement, or - after a failed
   episode, or on the first reset - a fresh demo host brought up from its images);
2. the validation baseline is recorded from it (it is healthy now) and a persona version is
   captured into the store (what continuous capture would have);
3. the host is killed and fenced, and an empty replacement is provisioned
   (:class:`persona.provision.apply.Session`: same images, network and IP; a new namespace
   owner; containers created, not started).

Every ``apply`` then restores ONE component at the chosen allocation level for real
(:meth:`Session.apply_step`: filesystem diff, config, CPU quota + CRIU restore under the
netns lock) and returns the measured seconds. The live restorer applies one step at a time,
so the episode's host has ``slots = 1`` and waiting is never needed. After the last step
the listening sockets are checked and the Behavioural Validation Suite runs against the
replacement; a failed performance or load check is remediated like the simulator does
(processes' CPU quota raised one level, validation again, at most
``SimConfig.max_validation_rounds`` rounds). The episode's clock is the wall clock from the
end of provisioning, so rewards are real seconds and the return is ``-reward_scale * TTR``.

A failed step (a CRIU restore cannot be retried in the same container) or a step that
exceeds ``step_timeout_s`` ends the episode, not validated, with the error in ``info``; the
replacement is rolled back. Every episode writes a trace (:data:`TRACE_FORMAT`) that
``persona calibrate`` fits the simulator to. ``fork`` is refused: a host cannot be copied.

The observation is built by :mod:`envs.layout` from the captured persona exactly as in the
simulator (:func:`live_scenario` maps the manifest; a calibrated scenario file supplies the
step-duration models the observation's ``nominal_s`` and ``critical_path_s`` columns use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from envs.backends import Applied, Episode
from envs.scenarios import hidden_from_roles, load_scenario_file
from envs.sim import core
from envs.sim.params import EpisodeParams, HostSpec, Scenario, SimConfig, compile_episode
from persona.errors import LabError, PersonaError, ScenarioError
from persona.model import PersonaManifest

TRACE_FORMAT = "persona-live-episode/v1"
# which live validation metrics decide which of the simulator's three checks
CHECK_OF_METRIC = {
    "functional": "functional",
    "state": "functional",
    "connections": "functional",
    "latency": "performance",
    "latency_p50": "performance",
    "latency_p99": "performance",
    "throughput": "performance",
    "redis_throughput": "performance",
    "ramp": "load",
}
T = TypeVar("T")


@dataclass(frozen=True)
class LiveConfig:
    """Where and how live episodes run."""

    host: str = "demo"
    ip: str | None = None  # None: the running host's IP, else the lab's demo IP
    store: str | None = None  # where resets capture to (default: a temp store, removed at close)
    scenario: str | None = None  # a calibrated scenario file (step models, host, hidden parts)
    validate_budget_s: float = 8.0
    step_timeout_s: float = 120.0
    ready_timeout_s: float = 30.0  # a restored host answering (its memory came back warm)
    start_timeout_s: float = 300.0  # a host started fresh from its images (it warms up first)
    trace_dir: str | None = None  # one JSON trace per episode
    seed: int = 0  # validation load generator seed
    create_host: bool = True  # bring the host up from the demo images when it does not run
    remove_host: bool = False  # remove the host at close() (hosts made for a test)
    policy: str = ""  # label written into traces (which policy drove the episode)

    @staticmethod
    def from_kwargs(host: str | None, live: LiveConfig | dict[str, Any] | None) -> LiveConfig:
        if isinstance(live, LiveConfig):
            cfg = live
        else:
            known = {f.name for f in dataclasses.fields(LiveConfig)}
            bad = sorted(set(live or {}) - known)
            if bad:
                raise ScenarioError(
                    f"unknown live option {bad[0]!r}; known: {', '.join(sorted(known))}"
                )
            cfg = LiveConfig(**(live or {}))
        return dataclasses.replace(cfg, host=host) if host else cfg


def sim_manifest(manifest: PersonaManifest) -> PersonaManifest:
    """The manifest as the simulator should see it: each process's ``cpu_peak_cores`` is its
    captured *need* (:func:`persona.provision.plan.cpu_need`: the larger of its configured
    limit and its sampled peak), the figure the live provisioner's allocation levels scale, so
    the simulator's allocations mirror the live ones."""
    from persona.provision.plan import MIN_CPU_CORES, cpu_need

    comps = []
    for c in manifest.components:
        r = c.resources
        if c.is_process and r is not None:
            need = cpu_need(r.cpu_peak_cores, r.cpu_limit_cores)
            peak = max(need if need is not None else r.cpu_peak_cores, MIN_CPU_CORES)
            c = dataclasses.replace(c, resources=dataclasses.replace(r, cpu_peak_cores=peak))
        comps.append(c)
    return dataclasses.replace(manifest, components=tuple(comps))


def live_scenario(
    manifest: PersonaManifest, base: Scenario | None = None, cpu_cores: float | None = None
) -> Scenario:
    """The simulator's view of a live episode's persona. ``base`` (a calibrated scenario of
    this host) gives the host spec, step models, SimConfig overrides and hidden parts; without
    it the defaults and the role rules are used. The live host has one restore slot."""
    m = sim_manifest(manifest)
    soft, mu, sd = hidden_from_roles(m)
    if base is None:
        host = HostSpec(slots=1, cpu_cores=float(cpu_cores or os.cpu_count() or 1))
        return Scenario(
            name=f"live://{m.host.name}",
            manifest=m,
            host=host,
            soft_dependencies=soft,
            demand_mu=mu,
            demand_sigma=sd,
            family="live",
        )
    names = set(m.names)
    mu0 = float(np.mean(list(base.demand_mu.values()))) if base.demand_mu else 0.0
    sd0 = float(np.mean(list(base.demand_sigma.values()))) if base.demand_sigma else 0.1
    return Scenario(
        name=f"live://{m.host.name}",
        manifest=m,
        host=dataclasses.replace(base.host, slots=1),
        soft_dependencies=tuple(
            d for d in base.soft_dependencies if d.process in names and d.needs in names
        ),
        demand_mu={n: base.demand_mu.get(n, mu0) for n in mu},
        demand_sigma={n: base.demand_sigma.get(n, sd0) for n in sd},
        family="live",
        kind_models=base.kind_models,
        sim_overrides=base.sim_overrides,
        component_models={
            n: km for n, km in (base.component_models or {}).items() if n in names
        } or None,
    )


def with_timeout(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run ``fn`` in a worker thread; raise ``LabError`` if it has not returned in time (the
    thread is left to finish on its own once the caller removes what it works on)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller's thread
            box["error"] = e

    th = threading.Thread(target=run, daemon=True, name=f"live-{what}")
    th.start()
    th.join(timeout_s)
    if th.is_alive():
        raise LabError(f"{what} did not finish within {timeout_s:g} s (step timeout)")
    if "error" in box:
        raise box["error"]
    return box["value"]


@dataclass
class _Run:
    """The episode in flight: what it created and what it measured."""

    number: int
    version: str
    manifest: PersonaManifest
    session: Any  # persona.provision.apply.Session
    hooks: Any  # persona.recovery.live.LiveHooks
    ip: str
    t0: float  # monotonic time the episode clock started (provisioning done)
    reset: dict[str, Any]
    data: Path  # the fetched persona (removed when the episode ends)
    steps: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    finished: bool = False
    finish_s: float = 0.0  # network check + readiness before the first validation round
    remediation_s: float = 0.0
    remediated: int = 0  # processes whose quota a remediation raised
    idle_s: float = 0.0  # seconds charged for invalid actions (added to the wall clock)
    completed: bool = False  # abandoned, then completed by the backend (the host lives on)
    logs: dict[str, str] = field(default_factory=dict)  # a failed replacement's container logs


class LiveBackend:
    """:class:`envs.backends.RestoreBackend` over the live lab (Docker + CRIU)."""

    def __init__(
        self, cfg: LiveConfig, config: SimConfig, n_max: int, client: Any | None = None
    ) -> None:
        self.cfg = cfg
        self.config = config
        self.n_max = n_max
        self.base = load_scenario_file(cfg.scenario) if cfg.scenario else None
        self._client = client
        self._work_dir: Path | None = None  # made at the first reset, removed by close()
        self._store = cfg.store
        self.params: EpisodeParams | None = None
        self.state: core.SimState | None = None
        self.run: _Run | None = None
        self.episodes = 0
        self.traces: list[Path] = []
        self._ip: str | None = None

    def label(self, policy: str) -> None:
        """Name the policy that drives the next episodes (written into their traces)."""
        self.cfg = dataclasses.replace(self.cfg, policy=policy)

    @property
    def _work(self) -> Path:
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="persona-live-"))
        return self._work_dir

    @property
    def store(self) -> str:
        """Where resets capture to: ``LiveConfig.store``, else a store in the work folder."""
        return self._store or str(self._work / "store")

    # ---- lab access
    @property
    def client(self) -> Any:
        if self._client is None:
            from persona.lab import engine

            self._client = engine.connect()
        return self._client

    def _host_ip(self) -> str:
        """The host's IP, bringing it up fresh from the demo images if nothing of it runs."""
        from persona.lab import demo, spec
        from persona.recovery import live
        from persona.recovery.fence import fence_host

        host = self.cfg.host
        try:
            ip = live.running_host_ip(self.client, host)
            demo.wait_ready(self.client, host, self.cfg.ready_timeout_s)
            self._ip = ip
            return ip
        except PersonaError:
            if not self.cfg.create_host:
                raise LabError(
                    f"live host {host!r} is not running and create_host is off; start it "
                    "(persona lab up) or allow the backend to create it"
                ) from None
        fence_host(self.client, host)  # leftovers of a dead host (exited containers)
        ip = self.cfg.ip or self._ip or spec.lab_host(host).ip  # the address the host had
        demo.up(self.client, host, with_load=False, wait_s=self.cfg.start_timeout_s, ip=ip)
        self._ip = ip
        return ip

    # ---- the protocol
    def reset(self, rng: np.random.Generator) -> Episode:
        from persona.cli.recover_cmd import capture_version
        from persona.model import load_manifest
        from persona.provision.apply import ApplyOptions, Session, Trace
        from persona.provision.engine import DockerProvisioner
        from persona.recovery import live
        from persona.recovery.fence import fence_host, kill_host
        from persona.recovery.source import StoreSource

        self._end("abandoned: reset() before the episode ended", complete=True)
        host = self.cfg.host
        t = time.monotonic()
        ip = self._host_ip()
        t_up = time.monotonic()
        baseline = live.record(self.client, host, ip, self.cfg.seed, self.cfg.validate_budget_s)
        t_base = time.monotonic()
        version = capture_version(self.client, host, self.store)
        data = Path(tempfile.mkdtemp(prefix="episode-", dir=self._work))
        manifest = load_manifest(
            StoreSource(self.store).fetch(host, version, data) / "manifest.json"
        )
        if len(manifest.components) > self.n_max:
            raise ScenarioError(
                f"{host}'s persona has {len(manifest.components)} components but "
                f"max_components={self.n_max}; raise max_components"
            )
        t_cap = time.monotonic()
        kill_host(self.client, host)
        fence_host(self.client, host)
        t_fence = time.monotonic()
        trace = Trace(host, self.cfg.policy or "live-env", version, time.time())
        session = Session(
            DockerProvisioner(self.client),
            manifest,
            data / version,
            trace,
            ApplyOptions(),
            time.monotonic,
        )
        try:
            session.provision()
        except PersonaError as e:
            session.rollback()
            raise LabError(
                f"live reset: provisioning a replacement for {host} failed and was rolled back: {e}"
            ) from e
        t0 = time.monotonic()
        self.episodes += 1
        reset = {
            "host_up_s": round(t_up - t, 4),
            "baseline_s": round(t_base - t_up, 4),
            "capture_s": round(t_cap - t_base, 4),
            "fence_s": round(t_fence - t_cap, 4),
            "provision_s": round(t0 - t_fence, 4),
        }
        hooks = live.LiveHooks(self.client, ip, baseline, self.cfg.seed, self.cfg.validate_budget_s)
        self.run = _Run(self.episodes, version, manifest, session, hooks, ip, t0, reset, data)
        sc = live_scenario(manifest, self.base)
        self.params = p = compile_episode(sc, self.config, rng)
        self.state = core.initial(p)
        info = {
            "scenario": sc.name,
            "family": sc.family,
            "n": p.n,
            "t": 0.0,
            "version": version,
            "reset": reset,
        }
        return Episode(p, self.state, info)

    def observe(self) -> core.SimState:
        if self.state is None:
            raise ScenarioError("LiveBackend.observe() before reset(): call reset() first")
        return self.state

    def fork(self) -> LiveBackend:
        raise ScenarioError(
            "the live backend cannot fork: a host being restored cannot be copied; use the "
            "sim backend for look-ahead"
        )

    def apply(self, action: int) -> Applied:
        p, s, run = self.params, self.state, self.run
        if p is None or s is None or run is None:
            raise ScenarioError("LiveBackend.apply() before reset(): call reset() first")
        if s.terminal:
            raise ScenarioError("the live episode has ended; call reset()")
        L = p.config.n_levels
        ok = core.startable(p, s)
        valid = 0 <= action < p.n * L and bool(ok[action // L])
        extra: dict[str, Any] = {}
        if not valid:
            # nothing restores in the background of a live episode: an invalid action (or a
            # wait) changes nothing and is charged like the simulator charges it
            run.idle_s += p.config.invalid_action_s
            after = self._truncated(dataclasses.replace(s, t=self._now()))
            return self._settle(s, after, False, extra, "time limit reached")
        i, level = divmod(action, L)
        name = p.scenario.manifest.components[i].name
        levels = p.config.alloc_levels
        n_rec = len(run.session.trace.steps)
        t_step = time.monotonic()
        try:
            with_timeout(
                lambda: run.session.apply_step(name, int(level), levels),
                self.cfg.step_timeout_s,
                f"restore step {name}",
            )
        except PersonaError as e:
            self._log_step(p, i, int(level), t_step, "failed", run.session.trace.steps[n_rec:])
            after = core.fail(p, s, i, int(level), 0.0)
            after = dataclasses.replace(after, t=min(self._now(), p.config.max_time_s))
            extra["error"] = f"step {name} failed: {e}"
            return self._settle(s, after, True, extra, extra["error"])
        self._log_step(p, i, int(level), t_step, "ok", run.session.trace.steps[n_rec:])
        after = dataclasses.replace(core.complete(p, s, i, int(level), 0.0), t=self._now())
        if not (after.status != core.DONE).any():
            after = self._validate(p, after)
        return self._settle(s, self._truncated(after), True, extra, "not validated")

    def _settle(
        self,
        before: core.SimState,
        after: core.SimState,
        valid: bool,
        extra: dict[str, Any],
        why: str,
    ) -> Applied:
        """Commit ``after``; a terminal state ends the episode (trace, rollback if needed)."""
        self.state = after
        if after.terminal:
            assert self.run is not None
            self._end(None if after.validated else why)
            if self.run.error:
                extra.setdefault("error", self.run.error)
            extra["trace"] = str(self.traces[-1]) if self.traces else None
        return Applied(after, self._charge(before, after), valid, extra)

    def close(self) -> None:
        self._end("closed before the episode ended", complete=not self.cfg.remove_host)
        if self.cfg.remove_host:
            from persona.recovery.fence import fence_host

            with contextlib.suppress(PersonaError):
                fence_host(self.client, self.cfg.host)
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        self.params = self.state = None

    # ---- helpers
    def _now(self) -> float:
        assert self.run is not None
        return time.monotonic() - self.run.t0 + self.run.idle_s

    @staticmethod
    def _charge(before: core.SimState, after: core.SimState) -> float:
        return (after.ttr if after.terminal else after.t) - before.t

    def _truncated(self, s: core.SimState) -> core.SimState:
        cfg = self.config if self.params is None else self.params.config
        if s.terminal or s.t < cfg.max_time_s:
            return s
        return dataclasses.replace(
            s, t=cfg.max_time_s, terminal=True, truncated=True, validated=False, ttr=cfg.max_time_s
        )

    def _log_step(
        self,
        p: EpisodeParams,
        i: int,
        level: int,
        t_start: float,
        outcome: str,
        recs: list[Any],
        by: str = "policy",
    ) -> None:
        assert self.run is not None
        c = p.scenario.manifest.components[i]
        cores = next((r.alloc_cores for r in recs if r.alloc_cores is not None), None)
        self.run.steps.append(
            {
                "component": c.name,
                "kind": c.kind.value,
                "role": c.role,
                "size_bytes": c.size_bytes,
                "level": level,
                "alloc_cores": cores,  # None: unlimited (or not a process)
                "sim_alloc": core.allocation(p, i, level),
                "start_s": round(t_start - self.run.t0, 4),
                "seconds": round(time.monotonic() - t_start, 4),
                "outcome": outcome,
                "by": by,  # "backend": completing an abandoned episode in captured order
                "records": [r.to_dict() for r in recs],
            }
        )

    def _validate(self, p: EpisodeParams, s: core.SimState) -> core.SimState:
        """Network check, readiness, then validation rounds with remediation."""
        run = self.run
        assert run is not None
        cfg = p.config
        L = cfg.n_levels
        level, alloc = s.level.copy(), s.alloc.copy()
        fixes = {c: 0 for c in core.CHECKS}
        first: dict[str, bool] = {}
        final = {c: False for c in core.CHECKS}
        remediation = 0.0
        ok = False
        try:
            tf = time.monotonic()
            with_timeout(run.session.finish, self.cfg.step_timeout_s, "network check")
            run.hooks.wait_ready(run.manifest.host.name, self.cfg.ready_timeout_s)
            run.finish_s = time.monotonic() - tf
            for rnd in range(cfg.max_validation_rounds):
                tv = time.monotonic()
                v = with_timeout(
                    lambda: run.hooks.validate(run.manifest),
                    self.cfg.step_timeout_s,
                    "validation",
                )
                final = {c: True for c in core.CHECKS}
                for name in v.failed_metrics:
                    final[CHECK_OF_METRIC.get(name, "functional")] = False
                if not v.passed and all(final.values()):
                    final["functional"] = False  # failed on score alone: no check to blame
                run.validation.append(
                    {
                        "round": rnd,
                        "seconds": round(time.monotonic() - tv, 4),
                        "passed": v.passed,
                        "score": v.score,
                        "checks": dict(final),
                        "failed_metrics": list(v.failed_metrics),
                        "levels": [int(x) for x in level],
                        "verdict": dict(v.verdict),
                    }
                )
                if rnd == 0:
                    first = dict(final)
                if v.passed:
                    ok = True
                    break
                if not final["functional"] or rnd == cfg.max_validation_rounds - 1:
                    break  # lost state or a broken answer: a quota cannot fix that
                tr = time.monotonic()
                raised = [i for i in range(p.n) if p.is_process[i] and 0 <= level[i] < L - 1]
                if not raised:
                    break
                for i in raised:
                    level[i] += 1
                    alloc[i] = core.allocation(p, i, int(level[i]))
                    run.session.reallocate(
                        p.scenario.manifest.components[i].name, int(level[i]), cfg.alloc_levels
                    )
                for c in ("performance", "load"):
                    fixes[c] += 0 if final[c] else len(raised)
                remediation += time.monotonic() - tr
                run.remediated += len(raised)
        except PersonaError as e:
            run.error = f"validation: {e}"
        run.remediation_s = remediation
        t = self._now()
        ok = ok and t < cfg.max_time_s
        return dataclasses.replace(
            s,
            t=min(t, cfg.max_time_s),
            level=level,
            alloc=alloc,
            terminal=True,
            validated=ok,
            ttr=min(t, cfg.max_time_s) if ok else cfg.max_time_s,
            checks=tuple((c, final[c], first.get(c, False), fixes[c]) for c in core.CHECKS),
            remediation_s=remediation,
            first_alloc=s.alloc,
        )

    def _end(self, why: str | None, complete: bool = False) -> None:
        """Finish the episode in flight: keep a validated replacement (it is the host now),
        roll anything else back; write the trace. ``complete``: an episode left unfinished
        (reset or close before its end) has its remaining steps applied in captured order at
        the middle level, so the host lives on warm instead of being started afresh (a fresh
        demo host spends tens of seconds warming up); it is rolled back if that fails."""
        run = self.run
        if run is None or run.finished:
            return
        run.finished = True
        if why is not None and run.error is None:
            run.error = why
        s = self.state
        validated = bool(s is not None and s.terminal and s.validated)
        kept = validated
        if complete and not validated and s is not None and not s.terminal:
            kept = run.completed = self._complete_unfinished(run, s)
        problems: list[str] = []
        if kept:
            try:  # the host keeps its captured configuration, not the restore's allocations
                run.session.reset_allocations()
            except PersonaError as e:
                problems.append(str(e))
        else:
            run.logs = self._logs(run)  # what the replacement said, before it is removed
            problems = run.session.rollback()
        self._write_trace(run, s, validated, problems)
        shutil.rmtree(run.data, ignore_errors=True)  # the store keeps the version

    def _logs(self, run: _Run, tail: int = 40) -> dict[str, str]:
        """The last lines each container of a replacement that is about to be rolled back
        wrote (its processes' own account of a failure; the trace keeps them)."""
        out: dict[str, str] = {}
        for name, cid in dict(run.session.ids).items():
            try:
                out[name] = self.client.logs(cid, tail=tail).decode(errors="replace")
            except Exception as e:  # diagnostics must never stop the rollback
                out[name] = f"(no logs: {e})"
        return out

    def _complete_unfinished(self, run: _Run, s: core.SimState) -> bool:
        p = self.params
        assert p is not None
        mid = p.config.n_levels // 2
        try:
            while (s.status != core.DONE).any():
                ok = np.flatnonzero(core.startable(p, s))
                if ok.size == 0:
                    return False
                i = int(ok[0])
                name = p.scenario.manifest.components[i].name
                n_rec = len(run.session.trace.steps)
                t = time.monotonic()
                with_timeout(
                    functools.partial(run.session.apply_step, name, mid, p.config.alloc_levels),
                    self.cfg.step_timeout_s,
                    f"completing step {name}",
                )
                self._log_step(p, i, mid, t, "ok", run.session.trace.steps[n_rec:], by="backend")
                s = core.complete(p, s, i, mid, 0.0)
            with_timeout(run.session.finish, self.cfg.step_timeout_s, "network check")
            run.hooks.wait_ready(run.manifest.host.name, self.cfg.ready_timeout_s)
            return True
        except PersonaError as e:
            run.error = f"{run.error}; completing it failed: {e}"
            return False

    def _write_trace(
        self, run: _Run, s: core.SimState | None, validated: bool, problems: list[str]
    ) -> None:
        if self.cfg.trace_dir is None:
            return
        from persona.model import atomic_write_text, manifest_to_dict

        p = self.params
        tr = {
            "format": TRACE_FORMAT,
            "host": run.manifest.host.name,
            "version": run.version,
            "policy": self.cfg.policy,
            "episode": run.number,
            "started_at": run.session.trace.started_at,
            "cpu_count": os.cpu_count(),
            "loadavg": list(os.getloadavg()),
            "levels": list(self.config.alloc_levels),
            "reset": run.reset,
            "steps": run.steps,
            "validation": run.validation,
            "finish_s": round(run.finish_s, 4),
            "remediation_s": round(run.remediation_s, 4),
            "remediated": run.remediated,
            "validated": validated,
            "ended": (
                "validated"
                if validated
                else "abandoned"
                if s is None or not s.terminal
                else "truncated"
                if s.truncated
                else "failed"
            ),
            "completed_by_backend": run.completed,
            "truncated": bool(s is not None and s.truncated),
            "ttr_s": float(s.ttr) if s is not None and s.terminal else None,
            "t_end_s": float(s.t) if s is not None else None,
            "error": run.error,
            "rollback_problems": problems,
            "logs": run.logs,
            "lock": run.session.trace.lock,
            "failures": int(s.n_failures) if s is not None else 0,
            "max_time_s": p.config.max_time_s if p is not None else self.config.max_time_s,
            "manifest": manifest_to_dict(run.manifest),
        }
        d = Path(self.cfg.trace_dir)
        d.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(run.session.trace.started_at))
        label = (self.cfg.policy or "live").replace("/", "_").replace(".onnx", "")
        path = d / f"{stamp}__{Path(label).name}__{run.number:03d}.json"
        atomic_write_text(path, json.dumps(tr, indent=1) + "\n")
        self.traces.append(path)

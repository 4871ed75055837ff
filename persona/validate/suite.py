"""The Behavioural Validation Suite: record a baseline from a healthy host, validate a replacement.

Shell around pure parts: :mod:`corpus` (requests + noise filter), :mod:`load` (asyncio load
generators), :mod:`conntable` (connection table), :mod:`redisprobe` (redis inside the netns),
:mod:`judge` (statistics -> per-metric outcomes -> verdict). Phases, in order (same order and
absolute rates on both sides): replay A -> throughput at fixed concurrency -> open-loop latency
-> load ramp -> connection table -> redis -> replay B (baseline only: the two replays, spaced
over the whole recording, give the noise of each response field, drift included).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from persona.errors import LabError, ValidationError
from persona.validate import conntable, corpus, judge, load, redisprobe
from persona.validate.model import Baseline, MetricResult, Target, Verdict

DEFAULT_BUDGET_S = 30.0
MAX_BUDGET_S = 90.0


@dataclass(frozen=True)
class Settings:
    """Durations and loads of one run, derived from the budget (stored in the baseline)."""

    budget_s: float
    corpus_items: int = 200  # state items sampled: enough to estimate drift of the data
    concurrency: int = 4
    tp_windows: int = 5
    tp_window_s: float = 1.0
    latency_s: float = 9.0
    ramp_fractions: tuple[float, ...] = (0.5, 0.8, 1.1)
    ramp_step_s: float = 3.0
    redis_windows: int = 4
    redis_window_s: float = 0.25
    timeout_s: float = 2.0
    max_latency_rate_hz: float = 200.0  # at most 0.4x capacity: sensitive to a lost CPU share
    min_latency_samples: int = 60

    @staticmethod
    def for_budget(budget_s: float, **overrides: Any) -> Settings:
        if not 4.0 <= budget_s <= MAX_BUDGET_S:
            raise ValidationError(f"budget_s must be within 4-{MAX_BUDGET_S:.0f} s, got {budget_s}")
        b = budget_s
        s = Settings(
            budget_s=b,
            tp_window_s=0.035 * b,
            latency_s=0.25 * b,
            ramp_step_s=0.08 * b,
            redis_window_s=max(0.5, 0.025 * b),
        )
        return Settings(**{**asdict(s), **overrides}) if overrides else s


def _replay_deadline(s: Settings) -> float:
    return max(5.0, 0.15 * s.budget_s)


def _fields(c: list[dict[str, str]], raw: list[tuple[int, bytes]]) -> list[dict[str, Any]]:
    return [
        corpus.response_fields(st, body, req.get("fields", ""))
        for req, (st, body) in zip(c, raw, strict=True)
    ]


def _conn_table(target: Target) -> dict[str, Any] | None:
    if target.sockets is not None:
        return conntable.normalise(target.sockets())
    if target.netns_pid is None:
        return None
    return conntable.normalise(conntable.read_sockets(target.netns_pid))


def _redis(target: Target, s: Settings, seed: int) -> dict[str, Any] | None:
    if target.redis is None or target.netns_pid is None:
        return None
    return redisprobe.measure(
        target.netns_pid, target.redis[1], 4, s.redis_windows, s.redis_window_s, seed
    )


def _latency_rate(s: Settings, throughput: list[float]) -> float:
    tp = float(np.mean(throughput)) if throughput else 0.0
    if tp <= 0:
        raise ValidationError("the host served no request at fixed concurrency; is it healthy?")
    return min(s.max_latency_rate_hz, 0.4 * tp)


def _throughput(target: Target, s: Settings, seed: int) -> list[float]:
    """Requests/s at fixed concurrency over ``tp_windows`` windows (closed loop)."""
    return load.closed_loop(
        target.api_url,
        s.concurrency,
        s.tp_windows,
        s.tp_window_s,
        target.corpus_items,
        seed,
        s.timeout_s,
    )


def _ramp(target: Target, rates: list[float], s: Settings, seed: int) -> list[dict[str, float]]:
    out = []
    for i, rate in enumerate(rates):
        r = load.open_loop(
            target.api_url, rate, s.ramp_step_s, target.corpus_items, seed + 100 + i, s.timeout_s
        )
        ok = r.ok_latencies()
        out.append(
            {
                "rate_hz": rate,
                "sent": float(r.sent),
                "errors": float(r.error_count),
                "p99_ms": float(np.percentile(ok, 99)) if ok else float("nan"),
            }
        )
    return out


def _drift_scale(
    replay_times: list[float] | None, t_candidate: float, state_since: float | None = None
) -> float:
    """How many baseline replay intervals of data drift separate the candidate's replay from
    the primary's: the time between them, plus the time between an older starting state (a
    capture) and the primary replay."""
    if not replay_times or len(replay_times) != 2:
        return 1.0
    t_a, t_b = replay_times
    if t_b <= t_a:
        return 1.0
    span = t_candidate - t_a
    if state_since is not None and state_since < t_a:
        span += t_a - state_since
    return max(1.0, span / (t_b - t_a))


def record_baseline(
    target: Target, *, seed: int = 0, budget_s: float = DEFAULT_BUDGET_S, **overrides: Any
) -> Baseline:
    """Record the healthy host's behaviour within about ``budget_s`` seconds (seeded).

    ``overrides``: any :class:`Settings` field (e.g. ``concurrency=8``).
    Raises ValidationError when the host does not answer like a healthy host.
    """
    s = Settings.for_budget(budget_s, **overrides)
    t_start = time.time()
    c = corpus.replayable(corpus.build_corpus(target.corpus_items, seed, s.corpus_items))
    cl = [dict(r) for r in c]
    t_a = time.time()
    raw_a = load.replay(target.api_url, cl, s.timeout_s, _replay_deadline(s))
    if all(status == 0 for status, _ in raw_a):
        raise ValidationError(f"{target.api_url} does not answer; is host {target.host} up?")
    tp = _throughput(target, s, seed)
    rate = _latency_rate(s, tp)
    duration = max(s.latency_s, s.min_latency_samples / rate)
    lat = load.open_loop(target.api_url, rate, duration, target.corpus_items, seed + 1, s.timeout_s)
    capacity = float(np.mean(tp))
    ramp = _ramp(target, [f * capacity for f in s.ramp_fractions], s, seed)
    conns = _conn_table(target)
    red = _redis(target, s, seed)
    t_b = time.time()
    raw_b = load.replay(target.api_url, cl, s.timeout_s, _replay_deadline(s))
    settings = {
        **asdict(s),
        "latency_rate_hz": rate,
        "latency_duration_s": duration,
        "capacity_rps": capacity,
    }
    return Baseline(
        host=target.host,
        recorded_at=t_start,
        seed=seed,
        settings=settings,
        corpus=cl,
        responses_a=_fields(cl, raw_a),
        responses_b=_fields(cl, raw_b),
        latency_ms=[float(x) for x in lat.ok_latencies()],
        throughput_rps=tp,
        ramp=ramp,
        connections=conns,
        redis_ops=({"ops_per_s": red["ops_per_s"], "dbsize": [red["dbsize"]]} if red else None),
        replay_times=[t_a, t_b],
    )


def validate_target(
    target: Target,
    baseline: Baseline,
    *,
    seed: int = 0,
    budget_s: float | None = None,
    tolerances: judge.Tolerances | None = None,
    state_since: float | None = None,
) -> Verdict:
    """Replay the baseline's load (same corpus, rates and durations) against ``target`` and
    judge every metric. ``budget_s`` only bounds it: the baseline's settings are replayed.
    ``tolerances.critical`` chooses which metrics fail the run (e.g. drop ``state`` for a
    cold start that is expected to lose in-memory data).
    ``state_since``: wall-clock time of the state the target's data started from when it is
    older than the baseline (a restore from a capture taken before the baseline was recorded);
    the data's drift is then expected over that longer span.
    """
    tol = tolerances or judge.Tolerances()
    known = {f for f in Settings.__dataclass_fields__}
    kw: dict[str, Any] = {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in baseline.settings.items()
        if k in known
    }
    s = Settings(**kw)
    if budget_s is not None and budget_s < s.budget_s:
        raise ValidationError(
            f"baseline was recorded with budget {s.budget_s} s; validation "
            f"replays the same load and needs at least that, not {budget_s}"
        )
    t0 = time.monotonic()
    cl = baseline.corpus
    t_c = time.time()
    raw_c = load.replay(target.api_url, cl, s.timeout_s, _replay_deadline(s))
    tp = _throughput(target, s, seed)
    rate = float(baseline.settings["latency_rate_hz"])
    lat = load.open_loop(
        target.api_url,
        rate,
        float(baseline.settings["latency_duration_s"]),
        target.corpus_items,
        seed + 1,
        s.timeout_s,
    )
    ramp = _ramp(target, [float(r["rate_hz"]) for r in baseline.ramp], s, seed)
    try:
        conns = _conn_table(target)
    except ValidationError:
        conns = None
    red = None
    if baseline.redis_ops is not None:
        try:
            red = _redis(target, s, seed)
        except (ValidationError, LabError):
            red = {"ops_per_s": [0.0] * s.redis_windows, "dbsize": -1}

    diffs = corpus.diff_fields(
        cl,
        baseline.responses_a,
        baseline.responses_b,
        _fields(cl, raw_c),
        tol.noise_relative,
        tol.noise_absolute,
        drift_scale=_drift_scale(baseline.replay_times, t_c, state_since),
    )
    cand_lat = lat.ok_latencies()
    # requests that failed count against latency at the timeout (they were not fast)
    cand_lat += [s.timeout_s * 1000.0] * lat.error_count
    metrics: list[MetricResult] = [
        judge.judge_functional("functional", diffs, "api", tol),
        judge.judge_functional("state", diffs, "state", tol),
        *judge.judge_latency(baseline.latency_ms, cand_lat, tol, seed),
        judge.judge_ratio("throughput", baseline.throughput_rps, tp, tol.throughput, tol, seed),
        judge.judge_ramp(baseline.ramp, ramp, tol),
        judge.judge_connections(baseline.connections, conns, tol),
    ]
    if baseline.redis_ops is not None:
        m = judge.judge_ratio(
            "redis_throughput",
            baseline.redis_ops["ops_per_s"],
            red["ops_per_s"] if red else [],
            tol.redis_throughput,
            tol,
            seed,
            unit="GET/s",
        )
        ev = {
            **m.evidence,
            "dbsize_base": baseline.redis_ops["dbsize"][0],
            "dbsize_cand": red["dbsize"] if red else None,
        }
        metrics.append(
            MetricResult(m.name, m.outcome, m.critical, m.weight, m.summary, ev, m.direction)
        )
    passed, sc = judge.score(metrics, tol)
    return Verdict(
        host=target.host,
        passed=passed,
        score=sc,
        pass_score=tol.pass_score,
        metrics=metrics,
        duration_s=time.monotonic() - t0,
        seed=seed,
        samples={"baseline": list(baseline.latency_ms), "candidate": cand_lat},
    )


def target_for_host(
    host: str, client: Any | None = None, api_port: int = 8080, redis_port: int | None = 6379
) -> Target:
    """The :class:`Target` of a lab host: its pause container's IP on the lab network, the API
    on ``api_port``, redis on loopback inside the namespace, the pause pid for the netns."""
    from persona.lab import demo, engine, spec

    c = client if client is not None else engine.connect()
    for ct in demo.host_containers(c, host):
        if ct["Labels"].get(spec.ROLE_LABEL) != "pause":
            continue
        info = c.inspect_container(ct["Id"])
        if not info["State"]["Running"]:
            raise LabError(f"host {host!r} is not running (pause container stopped)")
        net = info["NetworkSettings"]["Networks"].get(spec.NETWORK)
        if not net or not net.get("IPAddress"):
            raise LabError(f"host {host!r} has no address on network {spec.NETWORK}")
        return Target(
            host=host,
            api_url=f"http://{net['IPAddress']}:{api_port}",
            redis=("127.0.0.1", redis_port) if redis_port else None,
            netns_pid=int(info["State"]["Pid"]),
        )
    raise LabError(
        f"host {host!r} not found (no pause container labelled persona.host={host}); "
        "see: persona lab status"
    )

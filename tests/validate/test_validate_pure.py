"""Pure tests of the validation suite: noise filter, statistics, judgement, verdict (no daemon)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from persona.capture.parse import TcpSocket
from persona.errors import ValidationError
from persona.stats import hodges_lehmann, iqr_filter, ratio_ci
from persona.validate import Baseline, Outcome, Verdict, conntable, corpus, judge
from persona.validate.suite import Settings

TOL = judge.Tolerances()


# --- corpus and noise filter ------------------------------------------------------------


def _replay(c: list[dict[str, str]], sha: dict[str, str], started: float = 1.0) -> list[dict]:
    out = []
    for r in c:
        if r["path"].startswith("/item/") and not r["path"].startswith("/item/missing"):
            k = r["path"].split("/")[2]
            body = {"key": k, "len": 192, "sha": sha.get(k, "s" + k)}
            out.append(corpus.response_fields(200, json.dumps(body).encode()))
        elif r["path"] == "/introspect":
            body = {
                "version": "v1",
                "config": {"pool_size": 4},
                "pid": 1,
                "started": started,
                "requests": int(started * 7),
                "pool": {"size": 4, "in_use": 0},
            }
            out.append(corpus.response_fields(200, json.dumps(body).encode(), r["fields"]))
        else:
            out.append(corpus.response_fields(404, b'{"error": "x"}'))
    return out


def test_corpus_is_seeded_and_excludes_side_effects() -> None:
    a, b = corpus.build_corpus(2000, 3), corpus.build_corpus(2000, 3)
    assert a == b and a != corpus.build_corpus(2000, 4)
    mixed = [*a, {"method": "POST", "path": "/item/1", "group": "api", "fields": ""}]
    assert len(corpus.replayable(mixed)) == len(a)
    assert len(corpus.replayable(mixed, allow_side_effects=True)) == len(a) + 1


def test_introspect_compares_config_not_instance_fields() -> None:
    f = corpus.response_fields(
        200,
        json.dumps(
            {"config": {"pool_size": 4}, "started": 5.0, "pool": {"size": 4, "in_use": 2}}
        ).encode(),
        ",".join(corpus.INTROSPECT_FIELDS),
    )
    assert f == {"status": 200, "body.config.pool_size": 4, "body.pool.size": 4}


def test_noise_filter_ignores_noisy_fields_and_flags_real_ones() -> None:
    c = corpus.build_corpus(2000, 0, 40)
    keys = [r["path"].split("/")[2] for r in c if r["group"] == "state"]
    # the secondary differs on 10 % of shas (worker rewrites): that is noise
    noisy = {k: "other" for k in keys[:4]}
    a, b = _replay(c, {}), _replay(c, noisy)
    same = _replay(c, {k: "third" for k in keys[:3]})
    diffs = corpus.diff_fields(c, a, b, same)
    assert not [d for d in diffs if d.significant]
    assert any(d.noise for d in diffs)
    # the candidate lost the data: every sha differs -> significant, only that field
    lost = _replay(c, {k: "new" for k in keys})
    sig = [d for d in corpus.diff_fields(c, a, b, lost) if d.significant]
    assert [d.field for d in sig] == ["GET /item/* body.sha"] and sig[0].group == "state"
    assert (
        judge.judge_functional("state", corpus.diff_fields(c, a, b, lost), "state", TOL).outcome
        is Outcome.HIGH
    )


def test_noise_filter_thresholds_relative_and_absolute() -> None:
    c = [{"method": "GET", "path": f"/x/{i}", "group": "api", "fields": ""} for i in range(100)]
    base = [{"status": 200, "v": 0} for _ in c]
    sec = [{"status": 200, "v": 1 if i < 10 else 0} for i in range(100)]  # 10 % noise
    for raw_n, expect in ((11, False), (12, False), (13, True)):  # > 20 % above 10 %: 12.0 %
        cand = [{"status": 200, "v": 1 if i < raw_n else 0} for i in range(100)]
        d = {x.field: x for x in corpus.diff_fields(c, base, sec, cand)}["GET /x/* v"]
        assert d.significant is expect, raw_n


def test_wrong_config_shows_in_functional_group() -> None:
    c = corpus.build_corpus(2000, 0, 10)
    a, b = _replay(c, {}, 1.0), _replay(c, {}, 2.0)  # started/requests differ: not compared
    cand = _replay(c, {}, 3.0)
    for r in cand:
        if "body.config.pool_size" in r:
            r["body.config.pool_size"] = 1
    m = judge.judge_functional("functional", corpus.diff_fields(c, a, b, cand), "api", TOL)
    assert m.outcome is Outcome.HIGH and "pool_size" in m.summary
    ok = judge.judge_functional(
        "functional", corpus.diff_fields(c, a, b, _replay(c, {}, 9.0)), "api", TOL
    )
    assert ok.outcome is Outcome.PASS


# --- statistics ----------------------------------------------------------------------------


def test_stats_helpers() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10, 1, 400)
    assert hodges_lehmann(x + 3, x) == pytest.approx(3.0, abs=1e-9)
    assert iqr_filter(np.r_[x, 1e6]).max() < 1e3
    r, lo, hi = ratio_ci(2 * x, x, "p50", seed=1)
    assert r == pytest.approx(2.0) and lo < 2.0 < hi
    with pytest.raises(ValueError):
        ratio_ci([], x)


def _lat(rng: np.random.Generator, n: int, median: float, sigma: float = 0.3) -> list[float]:
    return list(rng.lognormal(np.log(median), sigma, n))


def test_latency_same_distribution_passes_across_seeds() -> None:
    fails = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ms = judge.judge_latency(_lat(rng, 150, 40), _lat(rng, 150, 40), TOL, seed)
        fails += sum(not m.passed for m in ms)
    assert fails <= 1  # alpha 0.02 and a 50 % tolerance: false alarms are rare


def test_latency_slow_candidate_is_high_and_faster_is_not_a_failure() -> None:
    rng = np.random.default_rng(1)
    base = _lat(rng, 150, 40)
    slow = {m.name: m for m in judge.judge_latency(base, _lat(rng, 150, 120), TOL, 0)}
    assert slow["latency"].outcome is Outcome.HIGH and not slow["latency"].passed
    assert slow["latency_p50"].outcome is Outcome.HIGH
    assert slow["latency"].evidence["hl_shift_ms"] > 60
    fast = {m.name: m for m in judge.judge_latency(base, _lat(rng, 150, 10), TOL, 0)}
    assert fast["latency"].outcome is Outcome.LOW and fast["latency"].passed


def test_latency_tail_change_caught_by_p99_not_by_median() -> None:
    rng = np.random.default_rng(2)
    base = _lat(rng, 300, 40, 0.1)
    cand = _lat(rng, 300, 40, 0.1)
    cand[::20] = [400.0] * len(cand[::20])  # 5 % of requests 10x slower
    ms = {m.name: m for m in judge.judge_latency(base, cand, TOL, 0)}
    assert ms["latency"].passed
    assert ms["latency_p99"].outcome is Outcome.HIGH
    assert ms["latency_p99"].evidence["cand_ms"] > 2 * ms["latency_p99"].evidence["base_ms"]


def test_latency_too_few_samples_is_nodata() -> None:
    ms = judge.judge_latency([1.0] * 10, [1.0] * 100, TOL, 0)
    assert {m.outcome for m in ms} == {Outcome.NODATA} and not any(m.passed for m in ms)


def test_throughput_ratio() -> None:
    base = [88.0, 90, 91, 87, 89]
    assert judge.judge_ratio("throughput", base, [86.0, 92, 88, 90, 87], 0.3, TOL, 0).passed
    low = judge.judge_ratio("throughput", base, [20.0, 22, 19, 21, 20], 0.3, TOL, 0)
    assert low.outcome is Outcome.LOW and not low.passed and low.critical
    assert judge.judge_ratio("throughput", base, [0.0] * 5, 0.3, TOL, 0).outcome is Outcome.LOW
    assert judge.judge_ratio("throughput", base, [], 0.3, TOL, 0).outcome is Outcome.NODATA


def test_ramp_errors() -> None:
    base = [{"rate_hz": r, "sent": 100.0, "errors": 0.0, "p99_ms": 5.0} for r in (40, 70, 100)]
    same = [{**s, "errors": 1.0} for s in base]
    assert judge.judge_ramp(base, same, TOL).passed
    bad = [*same[:2], {**base[2], "errors": 30.0}]
    m = judge.judge_ramp(base, bad, TOL)
    assert m.outcome is Outcome.HIGH and "100 req/s" in m.summary
    assert judge.judge_ramp(base, [], TOL).outcome is Outcome.NODATA


def _sock(la: str, lp: int, ra: str, rp: int, st: str) -> TcpSocket:
    return TcpSocket(la, lp, ra, rp, st, 0)


def test_connection_table_ignores_ephemeral_ports_and_outside_clients() -> None:
    def table(pool: int, eph: int, with_client: bool) -> list[TcpSocket]:
        s = [
            _sock("0.0.0.0", 8080, "0.0.0.0", 0, "LISTEN"),
            _sock("127.0.0.1", 6379, "0.0.0.0", 0, "LISTEN"),
        ]
        for i in range(pool):
            s += [
                _sock("127.0.0.1", eph + i, "127.0.0.1", 6379, "ESTABLISHED"),
                _sock("127.0.0.1", 6379, "127.0.0.1", eph + i, "ESTABLISHED"),
            ]
        if with_client:
            s.append(_sock("10.77.0.10", 8080, "10.77.0.1", 51000, "ESTABLISHED"))
        return s

    a = conntable.normalise(table(4, 40000, False))
    b = conntable.normalise(table(4, 50000, True))
    assert conntable.compare(a, b) == []
    assert judge.judge_connections(a, b, TOL).passed
    c = conntable.normalise(table(1, 40000, False))
    m = judge.judge_connections(a, c, TOL)
    assert m.outcome is Outcome.LOW and "client:6379: 1 connections, baseline 4" in m.summary
    assert judge.judge_connections(None, c, TOL).outcome is Outcome.NODATA


# --- verdict ------------------------------------------------------------------------------


def _metric(name: str, ok: bool, critical: bool) -> judge.MetricResult:
    return judge.MetricResult(name, Outcome.PASS if ok else Outcome.HIGH, critical, 1.0, "", {})


def test_score_and_critical_metrics() -> None:
    ok = [_metric(f"m{i}", True, i == 0) for i in range(10)]
    assert judge.score(ok, TOL) == (True, 100.0)
    one_bad = [*ok[1:], _metric("m0", False, True)]  # a critical failure fails at 90 points
    assert judge.score(one_bad, TOL) == (False, 90.0)
    noncrit = [*ok[:-1], _metric("m9", False, False)]
    assert judge.score(noncrit, TOL) == (True, 90.0)
    many = [_metric(f"n{i}", i < 6, False) for i in range(10)]  # 60 < pass score 70
    assert judge.score(many, TOL) == (False, 60.0)
    assert judge.score([], TOL)[0] is False


def test_verdict_write_and_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ms = judge.judge_latency(_lat(rng, 100, 40), _lat(rng, 100, 41), TOL, 0)
    passed, sc = judge.score(ms, TOL)
    v = Verdict(
        "h",
        passed,
        sc,
        TOL.pass_score,
        ms,
        1.5,
        0,
        {"baseline": _lat(rng, 100, 40), "candidate": _lat(rng, 100, 41)},
    )
    paths = v.write(tmp_path / "out")
    d = json.loads(paths["json"].read_text())
    assert d["passed"] == passed and len(d["metrics"]) == 3
    assert Verdict.from_dict(d).metric("latency").outcome is v.metric("latency").outcome
    assert "| latency |" in paths["report"].read_text()
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"


def test_baseline_roundtrip_and_errors(tmp_path: Path) -> None:
    b = Baseline("h", 1.0, 0, {"budget_s": 10.0}, [], [], [], [1.0], [2.0], [], None)
    p = b.save(tmp_path / "b.json")
    assert Baseline.load(p) == b
    with pytest.raises(ValidationError, match="record one"):
        Baseline.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text('{"format": "other"}')
    with pytest.raises(ValidationError, match="not a baseline"):
        Baseline.load(tmp_path / "x.json")


def test_settings_budget_bounds() -> None:
    with pytest.raises(ValidationError):
        Settings.for_budget(200)
    s = Settings.for_budget(90)
    phases = (
        s.tp_windows * s.tp_window_s
        + s.latency_s
        + 3 * s.ramp_step_s
        + s.redis_windows * s.redis_window_s
    )
    assert phases < 0.8 * 90


def test_time_driven_drift_scales_with_elapsed_time() -> None:
    """A worker rewriting items: the drift seen between the two baseline replays, scaled to
    the candidate's later replay, is noise; losing the data is not."""
    c = [
        {"method": "GET", "path": f"/item/{i}", "group": "state", "fields": ""} for i in range(200)
    ]
    base = [{"status": 200, "sha": f"v0-{i}"} for i in range(200)]
    sec = [
        {"status": 200, "sha": "w" if i < 10 else f"v0-{i}"} for i in range(200)
    ]  # 5 % in 1 interval
    # four intervals later about 1 - 0.95**4 = 18.5 % have been rewritten
    later = [{"status": 200, "sha": "w" if i < 36 else f"v0-{i}"} for i in range(200)]

    def sig(cand: list[dict[str, object]], scale: float) -> bool:
        (d,) = [
            x for x in corpus.diff_fields(c, base, sec, cand, drift_scale=scale) if "sha" in x.field
        ]
        return d.significant

    assert sig(later, 1.0)  # without the time model this drift looks like a broken restore
    assert not sig(later, 4.0)
    lost = [{"status": 200, "sha": f"new-{i}"} for i in range(200)]
    assert sig(lost, 4.0)  # a cold start that lost the data is still caught
    assert sig(lost, 1.0)


def test_engine_dns_listener_is_not_part_of_the_table() -> None:
    def dns(port: int) -> list[TcpSocket]:
        return [
            _sock("127.0.0.11", port, "0.0.0.0", 0, "LISTEN"),
            _sock("127.0.0.1", 6379, "0.0.0.0", 0, "LISTEN"),
        ]

    a, b = conntable.normalise(dns(40001)), conntable.normalise(dns(35555))
    assert conntable.compare(a, b) == []
    assert a["listen"] == [["127.0.0.1", 6379]]


def test_drift_extrapolation_leaves_stable_fields_exact() -> None:
    """A field compared once that never changed must still flag a change however late."""
    c = [{"method": "GET", "path": "/introspect", "group": "api", "fields": ""}]
    a = b = [{"status": 200, "pool": 4}]
    cand = [{"status": 200, "pool": 1}]
    (d,) = [
        x for x in corpus.diff_fields(c, a, b, cand, drift_scale=10.0) if x.field.endswith("pool")
    ]
    assert d.significant

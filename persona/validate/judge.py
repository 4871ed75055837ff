"""Statistics -> per-metric outcomes -> verdict (pure; unit-tested on synthetic samples).

Kayenta-like: IQR outlier removal, Mann-Whitney U at 98 % confidence with a tolerance on the
Hodges-Lehmann shift; KS for distribution changes that MWU misses (variance, tails); bootstrap
CIs on p50/p99 ratios; throughput ratio CI; Fisher exact tests on error counts along the ramp;
Diffy-filtered functional diffs; connection-table equivalence. Weighted score; any failed
critical metric fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as st

from persona.stats import hodges_lehmann, iqr_filter, ratio_ci
from persona.validate import conntable
from persona.validate.corpus import FieldDiff
from persona.validate.model import MetricResult, Outcome

DEFAULT_CRITICAL = frozenset(
    {
        "functional",
        "state",
        "latency",
        "throughput",
        "errors_ramp",
        "connections",
        "redis_throughput",
    }
)


@dataclass(frozen=True)
class Tolerances:
    """Thresholds of every judgement (defaults tuned for a noisy 2-core shared machine).

    ``alpha``: significance (0.02 = Kayenta's 98 %). ``latency_shift``: allowed HL shift relative
    to the baseline median (plus ``latency_floor_ms``). ``p50_ratio``/``p99_ratio``: the CI's
    lower bound must exceed ``1 + tol`` to call High. ``throughput``: Low when the ratio CI's
    upper bound is below ``1 - tol``. ``ramp_errors``: absolute error-rate increase allowed.
    ``min_samples``: fewer gives NoData (Kayenta users report ~50 needed).
    """

    alpha: float = 0.02
    latency_shift: float = 0.5
    latency_floor_ms: float = 2.0
    p50_ratio: float = 0.5
    p99_ratio: float = 1.0
    throughput: float = 0.3
    redis_throughput: float = 0.5  # client-bound in-netns probe: noisier than the API
    ramp_errors: float = 0.02
    min_samples: int = 50
    noise_relative: float = 0.20
    noise_absolute: float = 0.0003
    pass_score: float = 70.0
    critical: frozenset[str] = field(default_factory=lambda: DEFAULT_CRITICAL)
    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "functional": 3.0,
            "state": 2.0,
            "latency": 3.0,
            "latency_p50": 1.0,
            "latency_p99": 1.0,
            "throughput": 3.0,
            "errors_ramp": 2.0,
            "connections": 2.0,
            "redis_throughput": 2.0,
        }
    )


def _m(
    name: str,
    tol: Tolerances,
    outcome: Outcome,
    summary: str,
    evidence: dict[str, Any],
    direction: str = "either",
) -> MetricResult:
    return MetricResult(
        name,
        outcome,
        name in tol.critical,
        float(tol.weights.get(name, 1.0)),
        summary,
        evidence,
        direction,
    )


def judge_functional(
    name: str, diffs: Sequence[FieldDiff], group: str, tol: Tolerances
) -> MetricResult:
    rows = [d for d in diffs if d.group == group]
    if not rows:
        return _m(name, tol, Outcome.NODATA, f"no {group} responses compared", {})
    sig = [d for d in rows if d.significant]
    noisy = [d.field for d in rows if d.noise and not d.significant]
    ev = {
        "fields_compared": len(rows),
        "noise_fields": noisy,
        "differing": [
            {
                "field": d.field,
                "raw": d.raw,
                "noise": d.noise,
                "compared": d.compared,
                "example": [repr(d.example[0])[:80], repr(d.example[1])[:80]]
                if d.example
                else None,
            }
            for d in sig
        ],
    }
    if sig:
        return _m(
            name,
            tol,
            Outcome.HIGH,
            f"{len(sig)} of {len(rows)} fields differ beyond noise: "
            + ", ".join(d.field for d in sig[:5]),
            ev,
        )
    return _m(
        name,
        tol,
        Outcome.PASS,
        f"{len(rows)} fields equal ({len(noisy)} noisy fields filtered)",
        ev,
    )


def judge_latency(
    base: Sequence[float], cand: Sequence[float], tol: Tolerances, seed: int
) -> list[MetricResult]:
    """``latency`` (MWU + HL tolerance), ``latency_p50`` and ``latency_p99`` (ratio CIs + KS)."""
    b, c = np.asarray(base, float), np.asarray(cand, float)
    if b.size < tol.min_samples or c.size < tol.min_samples:
        nd = {"n_base": int(b.size), "n_cand": int(c.size), "min_samples": tol.min_samples}
        s = f"too few latency samples ({b.size} baseline, {c.size} candidate)"
        return [
            _m(n, tol, Outcome.NODATA, s, nd, "increase")
            for n in ("latency", "latency_p50", "latency_p99")
        ]
    bf, cf = iqr_filter(b), iqr_filter(c)
    mwu = st.mannwhitneyu(cf, bf, alternative="two-sided")
    ks = st.ks_2samp(c, b)
    hl = hodges_lehmann(cf, bf, seed=seed)
    med = float(np.median(bf))
    allowed = max(tol.latency_shift * med, tol.latency_floor_ms)
    ev: dict[str, Any] = {
        "n_base": int(b.size),
        "n_cand": int(c.size),
        "outliers_removed": [int(b.size - bf.size), int(c.size - cf.size)],
        "mwu_p": float(mwu.pvalue),
        "ks_stat": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "hl_shift_ms": hl,
        "allowed_shift_ms": allowed,
        "base_median_ms": med,
        "cand_median_ms": float(np.median(cf)),
    }
    if mwu.pvalue < tol.alpha and abs(hl) > allowed:
        out = Outcome.HIGH if hl > 0 else Outcome.LOW
        s = f"median shifted {hl:+.1f} ms (allowed ±{allowed:.1f}), MWU p={mwu.pvalue:.2g}"
    else:
        out = Outcome.PASS
        s = f"shift {hl:+.1f} ms within ±{allowed:.1f} ms (MWU p={mwu.pvalue:.2g})"
    res = [_m("latency", tol, out, s, ev, "increase")]
    for q, t in (("p50", tol.p50_ratio), ("p99", tol.p99_ratio)):
        r, lo, hi = ratio_ci(c, b, q, confidence=1 - tol.alpha, seed=seed)
        qev = {
            "ratio": r,
            "ci": [lo, hi],
            "tolerance": t,
            "ks_p": float(ks.pvalue),
            "base_ms": float(np.percentile(b, float(q[1:]))),
            "cand_ms": float(np.percentile(c, float(q[1:]))),
        }
        if lo > 1 + t:
            o, s = Outcome.HIGH, f"{q} x{r:.2f} (CI {lo:.2f}-{hi:.2f}) above x{1 + t:.2f}"
        elif hi < 1 / (1 + t):
            o, s = Outcome.LOW, f"{q} x{r:.2f} (CI {lo:.2f}-{hi:.2f}) faster than baseline"
        elif r > 1 + t and ks.pvalue < tol.alpha:
            o, s = (
                Outcome.INCONCLUSIVE,
                f"{q} x{r:.2f} but CI {lo:.2f}-{hi:.2f} straddles x{1 + t:.2f}; KS p={ks.pvalue:.2g}",
            )
        else:
            o, s = Outcome.PASS, f"{q} x{r:.2f} (CI {lo:.2f}-{hi:.2f})"
        res.append(_m(f"latency_{q}", tol, o, s, qev, "increase"))
    return res


def judge_ratio(
    name: str,
    base: Sequence[float],
    cand: Sequence[float],
    tolerance: float,
    tol: Tolerances,
    seed: int,
    unit: str = "req/s",
    min_n: int = 3,
) -> MetricResult:
    """Throughput-like metric: Low when the ratio's CI upper bound is below ``1 - tolerance``."""
    b, c = np.asarray(base, float), np.asarray(cand, float)
    if b.size < min_n or c.size < min_n or float(b.mean()) <= 0:
        return _m(
            name,
            tol,
            Outcome.NODATA,
            f"too few {name} windows",
            {"n_base": int(b.size), "n_cand": int(c.size)},
            "decrease",
        )
    r, lo, hi = ratio_ci(c, b, "mean", confidence=1 - tol.alpha, seed=seed)
    ev = {
        "ratio": r,
        "ci": [lo, hi],
        "tolerance": tolerance,
        "base_mean": float(b.mean()),
        "cand_mean": float(c.mean()),
        "unit": unit,
    }
    desc = f"x{r:.2f} (CI {lo:.2f}-{hi:.2f}; {c.mean():.0f} vs {b.mean():.0f} {unit})"
    if float(c.mean()) == 0.0:
        return _m(name, tol, Outcome.LOW, "no successful requests: " + desc, ev, "decrease")
    if hi < 1 - tolerance:
        return _m(name, tol, Outcome.LOW, desc + f" below x{1 - tolerance:.2f}", ev, "decrease")
    if lo > 1 + tolerance:
        return _m(name, tol, Outcome.HIGH, desc, ev, "decrease")
    return _m(name, tol, Outcome.PASS, desc, ev, "decrease")


def judge_ramp(
    base: Sequence[Mapping[str, float]], cand: Sequence[Mapping[str, float]], tol: Tolerances
) -> MetricResult:
    if not base or len(base) != len(cand) or any(s["sent"] == 0 for s in cand):
        return _m(
            "errors_ramp",
            tol,
            Outcome.NODATA,
            "ramp steps missing",
            {"steps_base": len(base), "steps_cand": len(cand)},
            "increase",
        )
    steps: list[dict[str, Any]] = []
    worst: dict[str, Any] | None = None
    for bs, cs in zip(base, cand, strict=True):
        be, bn, ce, cn = int(bs["errors"]), int(bs["sent"]), int(cs["errors"]), int(cs["sent"])
        p = float(st.fisher_exact([[ce, cn - ce], [be, bn - be]], alternative="greater")[1])
        d = ce / cn - be / max(bn, 1)
        bad = p < tol.alpha and d > tol.ramp_errors
        steps.append(
            {
                "rate_hz": cs["rate_hz"],
                "base": [be, bn],
                "cand": [ce, cn],
                "p": p,
                "increase": d,
                "bad": bad,
            }
        )
        if bad and worst is None:
            worst = steps[-1]
    ev = {"steps": steps, "tolerance": tol.ramp_errors}
    if worst is not None:
        return _m(
            "errors_ramp",
            tol,
            Outcome.HIGH,
            f"errors {worst['cand'][0]}/{worst['cand'][1]} at {worst['rate_hz']:.0f} req/s "
            f"(baseline {worst['base'][0]}/{worst['base'][1]}, p={worst['p']:.2g})",
            ev,
            "increase",
        )
    tot = sum(int(s["errors"]) for s in cand)
    return _m(
        "errors_ramp",
        tol,
        Outcome.PASS,
        f"{tot} errors over {len(cand)} steps, none significantly above baseline",
        ev,
        "increase",
    )


def judge_connections(
    base: Mapping[str, Any] | None, cand: Mapping[str, Any] | None, tol: Tolerances
) -> MetricResult:
    if base is None or cand is None:
        return _m(
            "connections", tol, Outcome.NODATA, "connection table not recorded (no netns pid)", {}
        )
    diffs = conntable.compare(dict(base), dict(cand))
    ev = {"base": base, "cand": cand, "differences": diffs}
    if not diffs:
        return _m(
            "connections",
            tol,
            Outcome.PASS,
            f"{len(base['listen'])} listeners and internal connections equivalent",
            ev,
        )
    more = sum(cand["internal"].values()) + len(cand["listen"]) > sum(
        base["internal"].values()
    ) + len(base["listen"])
    return _m("connections", tol, Outcome.HIGH if more else Outcome.LOW, "; ".join(diffs), ev)


def score(metrics: Sequence[MetricResult], tol: Tolerances) -> tuple[bool, float]:
    """(passed, score): weighted share of passing metrics; any failed critical metric fails."""
    total = sum(m.weight for m in metrics)
    got = sum(m.weight for m in metrics if m.passed)
    sc = 100.0 * got / total if total else 0.0
    crit_ok = all(m.passed for m in metrics if m.critical)
    return crit_ok and sc >= tol.pass_score and bool(metrics), sc

"""How well a calibrated simulator predicts the live lab (``persona sim-gap``).

For every policy that drove held-out live episodes (their traces name it), the simulator
of the calibrated scenario is run with the same policy; reported per policy: live mean TTR
with its 95 % CI, simulated mean TTR, relative error, and both success rates; overall: mean
absolute relative error and Spearman's rank correlation between the policies' simulated and
live means, plus whether the policies rank the same (strictly, and for every pair whose live
CIs are apart).

TTRs are those of validated episodes; episodes that were not validated are compared through
the success rates instead. (Both modes charge an unvalidated episode its whole time budget,
which would let one rare live failure - e.g. CRIU's intermittent restore error, which ends a
live episode where the simulator retries - dominate a mean of a few seconds.)
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from agents.evaluate import evaluate
from persona.errors import ScenarioError
from persona.stats import mean_ci

TARGET_ERROR = 0.20


def live_ttrs(traces: list[dict[str, Any]]) -> dict[str, list[tuple[float, bool]]]:
    """Per policy label: each episode's (TTR, validated); an episode that was not validated
    counts its time budget, as in the simulator."""
    out: dict[str, list[tuple[float, bool]]] = {}
    for t in traces:
        if t.get("ended") == "abandoned":  # reset/closed mid-episode: no outcome of a policy
            continue
        if not t.get("policy"):
            raise ScenarioError(f"{t.get('_path')}: the trace names no policy; cannot compare")
        ok = bool(t.get("validated")) and t.get("ttr_s") is not None
        ttr = float(t["ttr_s"] if ok else t["max_time_s"])
        out.setdefault(str(t["policy"]), []).append((ttr, ok))
    return out


def ranks_agree(
    sim: dict[str, float], live: dict[str, tuple[float, float, float]]
) -> dict[str, Any]:
    """Strict ranking agreement, and agreement on every pair whose live CIs do not overlap."""
    names = sorted(live)
    strict = sorted(names, key=lambda n: sim[n]) == sorted(names, key=lambda n: live[n][0])
    pairs = []
    for a, b in itertools.combinations(names, 2):
        (ma, la, ha), (mb, lb, hb) = live[a], live[b]
        if ha < lb or hb < la:  # live CIs apart: the order is known
            pairs.append((a, b, (ma < mb) == (sim[a] < sim[b])))
    return {
        "same_ranking": strict,
        "separated_pairs": len(pairs),
        "separated_pairs_agree": all(ok for _, _, ok in pairs),
        "disagreeing_pairs": [[a, b] for a, b, ok in pairs if not ok],
    }


def _order(a: tuple[float, float, float], b: tuple[float, float, float]) -> int:
    """-1: a faster (CIs apart), 1: b faster, 0: not told apart (CIs overlap)."""
    (_, la, ha), (_, lb, hb) = a, b
    if ha < lb:
        return -1
    if hb < la:
        return 1
    return 0


def weak_ranks_agree(
    sim: dict[str, tuple[float, float, float]], live: dict[str, tuple[float, float, float]]
) -> dict[str, Any]:
    """Rankings with ties: every pair of policies is ordered (95 % CIs apart) or tied (CIs
    overlap), in the simulator and live alike; the rankings agree when every pair gets the
    same verdict in both. Policies that choose the same actions tie in both, which a strict
    ranking (and Spearman's rho) would order by noise. ``sim_gap`` passes the simulator's
    CIs widened to the live episode count, so both sides are judged with the same power."""
    pairs = []
    for a, b in itertools.combinations(sorted(live), 2):
        v_sim, v_live = _order(sim[a], sim[b]), _order(live[a], live[b])
        pairs.append({"pair": [a, b], "sim": v_sim, "live": v_live, "agree": v_sim == v_live})
    return {
        "weak_ranking_agrees": all(p["agree"] for p in pairs),
        "pairs_ordered_in_both": sum(1 for p in pairs if p["sim"] != 0 and p["agree"]),
        "pair_verdicts": pairs,
    }


def spearman(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if rho is None or math.isnan(float(rho)) else float(rho)


def sim_gap(
    scenario: str,
    traces: list[dict[str, Any]],
    episodes: int = 200,
    seed: int = 0,
    max_components: int = 24,
) -> dict[str, Any]:
    live = live_ttrs(traces)
    rows: list[dict[str, Any]] = []
    live_stats: dict[str, tuple[float, float, float]] = {}
    sim_means: dict[str, float] = {}
    sim_stats: dict[str, tuple[float, float, float]] = {}
    for pol in sorted(live):
        r = evaluate(pol, scenario, episodes, seed, max_components)
        sim_ok = np.array([e.ttr for e in r.per_episode if e.validated])
        live_ok = np.array([x for x, ok in live[pol] if ok])
        if sim_ok.size == 0 or live_ok.size == 0:
            raise ScenarioError(
                f"policy {pol}: no validated {'simulated' if sim_ok.size == 0 else 'live'} "
                "episode to compare TTRs with"
            )
        m_sim, lo_sim, hi_sim = mean_ci(sim_ok)
        m, lo, hi = mean_ci(live_ok)
        live_stats[pol], sim_means[pol] = (m, lo, hi), m_sim
        # for the ranking with ties, the simulator's CI as it would be with as many episodes
        # as live: both sides tell pairs apart with the same power
        hw = (hi_sim - lo_sim) / 2 * math.sqrt(sim_ok.size / live_ok.size)
        sim_stats[pol] = (m_sim, m_sim - hw, m_sim + hw)
        rows.append(
            {
                "policy": pol,
                "live_episodes": len(live[pol]),
                "live_ttr_mean": m,
                "live_ttr_ci95": [lo, hi],
                "live_success": float(np.mean([ok for _, ok in live[pol]])),
                "sim_episodes": episodes,
                "sim_ttr_mean": m_sim,
                "sim_ttr_ci95": [lo_sim, hi_sim],
                "sim_success": r.success_rate,
                "rel_error": (m_sim - m) / m,
            }
        )
    errs = [abs(float(r["rel_error"])) for r in rows]
    names = [str(r["policy"]) for r in rows]
    rho = spearman([sim_means[n] for n in names], [live_stats[n][0] for n in names])
    agree = ranks_agree(sim_means, live_stats)
    weak = weak_ranks_agree(sim_stats, live_stats)
    mean_err = float(np.mean(errs))
    return {
        "scenario": scenario,
        "traces": len(traces),
        "policies": rows,
        "mean_abs_rel_error": mean_err,
        "spearman_rho": rho,
        **agree,
        **weak,
        "targets": {
            "error_le_20pct": mean_err <= TARGET_ERROR,
            "same_ranking": agree["same_ranking"],
            "same_ranking_with_ties": weak["weak_ranking_agrees"],
        },
    }


def format_table(res: dict[str, Any]) -> str:
    rows = [
        "| policy | live eps | live TTR (s) [95 % CI] | sim TTR (s) [95 % CI] | error "
        "| live success | sim success |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["policies"]:
        lo, hi = r["live_ttr_ci95"]
        slo, shi = r["sim_ttr_ci95"]
        rows.append(
            f"| {r['policy']} | {r['live_episodes']} | {r['live_ttr_mean']:.2f} "
            f"[{lo:.2f}, {hi:.2f}] | {r['sim_ttr_mean']:.2f} [{slo:.2f}, {shi:.2f}] "
            f"| {r['rel_error']:+.1%} | {r['live_success']:.0%} | {r['sim_success']:.0%} |"
        )
    rho = res["spearman_rho"]
    rows.append("")
    rows.append(
        f"mean |error| {res['mean_abs_rel_error']:.1%} (target <= {TARGET_ERROR:.0%}); "
        f"Spearman rho {'n/a' if rho is None else f'{rho:+.2f}'}; same ranking: "
        f"{res['same_ranking']}; pairs with separated live CIs: {res['separated_pairs']} "
        f"(agree: {res['separated_pairs_agree']})"
    )
    if "weak_ranking_agrees" in res:
        rows.append(
            f"ranking with ties (a pair is ordered when its 95 % CIs are apart, else tied): "
            f"same in sim and live: {res['weak_ranking_agrees']}; pairs ordered in both: "
            f"{res['pairs_ordered_in_both']} of {len(res['pair_verdicts'])}"
        )
        off = [p for p in res["pair_verdicts"] if not p["agree"]]
        for p in off:
            word = {-1: "faster", 0: "tied with", 1: "slower"}
            a, b = (Path(x).stem for x in p["pair"])
            rows.append(f"  differs: {a} {word[p['sim']]} {b} in sim, {word[p['live']]} live")
    return "\n".join(rows)


def plot(res: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in res["policies"]:
        lo, hi = r["live_ttr_ci95"]
        slo, shi = r["sim_ttr_ci95"]
        ax.errorbar(
            r["sim_ttr_mean"],
            r["live_ttr_mean"],
            xerr=[[r["sim_ttr_mean"] - slo], [shi - r["sim_ttr_mean"]]],
            yerr=[[r["live_ttr_mean"] - lo], [hi - r["live_ttr_mean"]]],
            fmt="o",
            capsize=3,
            label=Path(r["policy"]).stem,
        )
    vals = [v for r in res["policies"] for v in (r["sim_ttr_mean"], r["live_ttr_mean"])]
    a, b = min(vals) * 0.8, max(vals) * 1.2
    ax.plot([a, b], [a, b], "k--", lw=0.8, label="sim = live")
    ax.fill_between([a, b], [a * 0.8, b * 0.8], [a * 1.2, b * 1.2], color="grey", alpha=0.15)
    ax.set_xlabel("simulated mean TTR (s)")
    ax.set_ylabel("live mean TTR (s)")
    ax.set_title("sim-to-real gap (band: ±20 %)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

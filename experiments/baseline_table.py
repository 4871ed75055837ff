"""Baselines on every scenario family, with 95 % CIs: the README's results table.

    python -m experiments.baseline_table [--episodes 200] [--seed 1000] [--out runs]

Writes ``<out>/baselines__<time>/`` with one results folder per family (results.json,
per_episode.csv, table.md, ttr.png) and ``summary.md`` (all families in one table; the
oracle bound on <= 7-component scenarios of the mixed family).
"""

from __future__ import annotations

import argparse

from agents.baselines import POLICIES
from agents.evaluate import EvalResult, evaluate
from agents.report import new_run_dir, write_results
from persona.model import atomic_write_text
from persona.stats import mean_ci

FAMILIES = ("web-tier", "db-heavy", "microservices", "random-dag", "mixed")
SMALL = "generator://mixed-v0?components=5-7"


def summary_rows(results: list[EvalResult], label: str) -> list[str]:
    rows = []
    for r in results:
        m, lo, hi = mean_ci(r.ttrs)
        rows.append(
            f"| {label} | {r.policy} | {m:.1f} | [{lo:.1f}, {hi:.1f}] | {r.success_rate:.0%} |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Baselines on every scenario family.")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1000)
    ap.add_argument("--out", default="runs")
    args = ap.parse_args(argv)
    run = new_run_dir(args.out, "baselines")
    lines = [
        f"Baselines, {args.episodes} episodes per family, seeds {args.seed}.., common random numbers.",
        "",
        "| family | policy | TTR mean (s) | 95 % CI | success |",
        "|---|---|---|---|---|",
    ]
    for fam in FAMILIES:
        uri = f"generator://{fam}-v0"
        results = [evaluate(p, uri, args.episodes, args.seed) for p in POLICIES]
        write_results(results, run / fam, f"{uri}, {args.episodes} episodes")
        lines += summary_rows(results, fam)
    small = [evaluate(p, SMALL, args.episodes // 2, args.seed) for p in [*POLICIES, "oracle"]]
    write_results(small, run / "small", f"{SMALL}, {args.episodes // 2} episodes")
    lines += summary_rows(small, "mixed, 5-7 components")
    text = "\n".join(lines) + "\n"
    atomic_write_text(run / "summary.md", text)
    print(text)
    print(f"results in {run}")


if __name__ == "__main__":
    main()

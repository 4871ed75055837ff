"""Result files of evaluations: per-episode CSV, markdown table, JSON and plots."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from agents.evaluate import EvalResult, format_table
from persona.model import atomic_write_text


def new_run_dir(root: str | Path, name: str) -> Path:
    """``<root>/<name>__<YYYYmmdd-HHMMSS>/`` (a numeric suffix if it exists already)."""
    base = Path(root) / f"{name}__{time.strftime('%Y%m%d-%H%M%S')}"
    d, k = base, 1
    while d.exists():
        k += 1
        d = Path(f"{base}-{k}")
    d.mkdir(parents=True)
    return d


# Columns of every per-episode CSV (experiments add a leading "suite" column).
EPISODE_CSV_FIELDS = (
    "policy",
    "scenarios",
    "seed",
    "scenario",
    "family",
    "n",
    "ttr",
    "validated",
    "failures",
    "steps",
)


def write_per_episode_csv(results: list[EvalResult], path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EPISODE_CSV_FIELDS)
        for r in results:
            for e in r.per_episode:
                w.writerow(
                    [
                        r.policy,
                        r.scenarios,
                        e.seed,
                        e.scenario,
                        e.family,
                        e.n,
                        f"{e.ttr:.4f}",
                        int(e.validated),
                        e.failures,
                        e.steps,
                    ]
                )


def plot_ttr(results: list[EvalResult], path: Path, title: str) -> None:
    """Box plot of TTR per policy (one box per result)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(results), 4.0))
    ax.boxplot([r.ttrs for r in results], showmeans=True)
    ax.set_xticks(range(1, len(results) + 1), [r.policy for r in results], rotation=20)
    ax.set_ylabel("time to recovery (simulated s)")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(results: list[EvalResult], out: Path, title: str) -> None:
    """``results.json``, ``per_episode.csv``, ``table.md`` and ``ttr.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "results.json", json.dumps([r.to_dict() for r in results], indent=2) + "\n"
    )
    write_per_episode_csv(results, out / "per_episode.csv")
    atomic_write_text(out / "table.md", format_table(results) + "\n")
    plot_ttr(results, out / "ttr.png", title)

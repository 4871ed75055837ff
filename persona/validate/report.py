"""Writing a verdict: ``verdict.json``, ``report.md`` and ``latency.png`` (CDFs of both sides)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from persona.validate.model import Verdict


def render_markdown(v: Verdict) -> str:
    lines = [
        f"# Validation of `{v.host}`: {'PASSED' if v.passed else 'FAILED'}",
        "",
        f"Score {v.score:.1f} (pass at >= {v.pass_score:.0f} with every critical metric "
        f"passing); seed {v.seed}; {v.duration_s:.1f} s.",
        "",
        "| metric | outcome | passed | critical | weight | summary |",
        "|---|---|---|---|---|---|",
    ]
    for m in v.metrics:
        lines.append(
            f"| {m.name} | {m.outcome.value} | {'yes' if m.passed else 'NO'} | "
            f"{'yes' if m.critical else ''} | {m.weight:g} | "
            f"{m.summary.replace('|', '/')} |"
        )
    lines += [
        "",
        "Evidence for every metric is in `verdict.json`; latency CDFs in `latency.png`.",
        "",
    ]
    return "\n".join(lines)


def plot_latency(v: Verdict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, xs in v.samples.items():
        if not xs:
            continue
        a = np.sort(np.asarray(xs, float))
        ax.plot(a, np.arange(1, a.size + 1) / a.size, label=f"{label} (n={a.size})")
    ax.set_xscale("log")
    ax.set_xlabel("latency from intended send time (ms)")
    ax.set_ylabel("CDF")
    ax.set_title(f"{v.host}: {'PASSED' if v.passed else 'FAILED'} (score {v.score:.0f})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_verdict(v: Verdict, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "verdict.json",
        "report": out_dir / "report.md",
        "plot": out_dir / "latency.png",
    }
    paths["json"].write_text(json.dumps(v.to_dict(), indent=1, sort_keys=True))
    paths["report"].write_text(render_markdown(v))
    plot_latency(v, paths["plot"])
    return paths

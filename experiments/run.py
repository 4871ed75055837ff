"""Run an experiment grid (policies x scenario suites x seeds) and write a results folder.

    python -m experiments.run configs/experiments/<name>.yaml [--out results]
        [--address auto|HOST:PORT] [--num-cpus N] [--no-ray]

Ray runs one task per (suite, policy), locally by default (``--num-cpus`` caps it);
``--address`` joins an existing Ray cluster instead. The folder gets ``per_episode.csv``,
``summary.md`` / ``summary.json`` (mean TTR, 95 % CIs, success, paired ratios to the best
heuristic and to the oracle, quality-bar verdicts) and PNG plots; see
:mod:`agents.experiment` for the logic and ``notebooks/analysis.ipynb`` to re-read it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from agents.experiment import load_config, run_experiment
from persona.errors import PersonaError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m experiments.run", description=__doc__.split("\n")[0]
    )
    ap.add_argument("config", help="experiment YAML (configs/experiments/<name>.yaml)")
    ap.add_argument("--out", default="results", help="folder for the results folder")
    ap.add_argument("--address", default=None, help="join this Ray cluster (auto or HOST:PORT)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray instance")
    ap.add_argument("--no-ray", action="store_true", help="run the grid in this process")
    args = ap.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.address is not None:
            cfg = replace(cfg, ray_address=args.address)
        if args.num_cpus is not None:
            cfg = replace(cfg, num_cpus=args.num_cpus)
        out = run_experiment(cfg, args.out, use_ray=not args.no_ray)
    except PersonaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"results: {out}")
    print((out / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())

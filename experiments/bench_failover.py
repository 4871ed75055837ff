"""Failover benchmark: cold start vs captured order vs critical-path vs the exported policy.

    python -m experiments.bench_failover --repeat 3 --json runs/bench_failover.json
    (same as: persona bench failover --repeat 3 --json runs/bench_failover.json)

Reads top to bottom; every piece of logic lives in persona.recovery.bench (tested there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from persona.recovery.bench import BenchConfig, run_bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("runs/bench_failover.json"))
    ap.add_argument("--policy-file", default=None)
    ap.add_argument("--ip", default="10.77.0.70")
    ap.add_argument("--validate-budget", type=float, default=8.0)
    a = ap.parse_args()
    res = run_bench(BenchConfig(repeat=a.repeat, ip=a.ip, policy_file=a.policy_file,
                                validate_budget_s=a.validate_budget, out=a.json))
    print(json.dumps({"targets": res["targets"],
                      "ttr_median_s": {m: r["ttr_median_s"] for m, r in res["methods"].items()},
                      "ready_median_s": {m: r["ready_median_s"] for m, r in res["methods"].items()}},
                     indent=1))


if __name__ == "__main__":
    main()

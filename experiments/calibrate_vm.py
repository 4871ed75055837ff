"""Calibrate the simulator's VM-host flavour from measured VM round trips.

    persona vm roundtrip --json w1.json   # (several times)
    python -m experiments.calibrate_vm w1.json w2.json w3.json --out configs/sim/vm-host.yaml

Fits per-kind step durations (see ``envs.calibration``) to every ``apply_steps`` entry of the
given round-trip JSONs and writes the kind models that ``generator://<family>-v0?host=vm`` uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from envs.calibration import dump_kind_models, fit_kind_models
from persona.model import atomic_write_text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Fit the VM-host flavour's step durations.")
    ap.add_argument("roundtrips", nargs="+", type=Path, help="persona vm roundtrip --json outputs")
    ap.add_argument("--out", type=Path, default=Path("configs/sim/vm-host.yaml"))
    args = ap.parse_args(argv)
    steps = []
    for p in args.roundtrips:
        steps += json.loads(p.read_text())["apply_steps"]
    models = fit_kind_models(steps)
    source = f"{len(steps)} apply steps of {len(args.roundtrips)} `persona vm roundtrip` runs"
    atomic_write_text(args.out, dump_kind_models(models, source))
    print(f"wrote {args.out} ({source})")


if __name__ == "__main__":
    main()

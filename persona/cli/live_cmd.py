"""``persona calibrate`` and ``persona sim-gap``: the simulator measured against live traces."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("calibrate")
@click.option(
    "--traces",
    "trace_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder of live episode traces (persona eval --backend live --trace-dir DIR).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Calibrated scenario to write, e.g. configs/scenarios/lab-demo-live.yaml.",
)
@click.option("--name", default=None, help="Scenario name (default: the file's stem).")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the fit report (JSON) here.",
)
def calibrate(trace_dir: Path, out: Path, name: str | None, report: Path | None) -> None:
    """Fit the simulator's parameters for the traced host (step durations per kind as a
    function of size and allocation, the processes' CPU demand, the validation time) and
    write a scenario file usable as scenario://NAME, by persona eval/train/sim-gap."""
    import yaml

    from envs.calibration import calibrate_live, load_traces
    from envs.scenarios import load_scenario_file
    from persona.model import atomic_write_text

    traces = load_traces(trace_dir)
    scenario, rep = calibrate_live(traces, name or out.stem)
    header = (
        f"# written by: persona calibrate --traces {trace_dir} --out {out}\n"
        f"# at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} from {len(traces)} "
        "live episode traces. Regenerate rather than edit.\n"
    )
    atomic_write_text(out, header + yaml.safe_dump(scenario, sort_keys=False))
    load_scenario_file(out)  # what was written must load
    if report is not None:
        atomic_write_text(report, json.dumps(rep, indent=1) + "\n")
    click.echo(f"calibrated {rep['host']} from {rep['episodes']} episodes, {rep['steps']} steps")
    for kind, st in rep["step_fit"].items():
        m = scenario["kind_models"][kind]
        click.echo(
            f"  {kind:14s} {st['steps']:4d} steps  mean {st['mean_s']:.3f} s  fixed "
            f"{m['fixed_s']:.3f} s + {m['fixed_s_per_mb']:.4f} s/MB, cpu base "
            f"{m['cpu_base_s']:.3f} s  sigma {m['sigma']:.2f}  "
            f"median |rel err| {st['median_abs_rel_error']:.0%}"
        )
    for name, st in rep.get("component_fit", {}).items():
        m = scenario["component_models"][name]
        click.echo(
            f"  {name:14s} {st['steps']:4d} steps  mean {st['mean_s']:.3f} s  fixed "
            f"{m['fixed_s']:.3f} s + cpu {m['cpu_base_s']:.3f} s / min(c, 1)  sigma "
            f"{m['sigma']:.2f}  median |rel err| {st['median_abs_rel_error']:.0%}"
        )
    d = rep["demand"]
    click.echo(
        f"  demand log(true/need) ~ N({d['mu']:.2f}, {d['sigma']:.2f}) from "
        f"{d['episodes_used']} validations; sim overrides {rep['sim']}"
    )
    click.echo(f"wrote {out}")


@click.command("sim-gap")
@click.option("--scenario", required=True, help="Calibrated scenario (file or scenario://NAME).")
@click.option(
    "--traces",
    "trace_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Held-out live episode traces (not the ones calibration used).",
)
@click.option(
    "--episodes",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Simulated episodes per policy.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write sim_gap.json and sim_gap.png into this folder.",
)
def sim_gap(scenario: str, trace_dir: Path, episodes: int, seed: int, out: Path | None) -> None:
    """Compare the calibrated simulator's TTR predictions with held-out live episodes: error
    per policy, mean error (target <= 20 %), rank correlation (target: same ranking)."""
    from agents import simgap
    from envs.calibration import load_traces

    res = simgap.sim_gap(scenario, load_traces(trace_dir), episodes, seed)
    click.echo(simgap.format_table(res))
    if out is not None:
        from persona.model import atomic_write_text

        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "sim_gap.json", json.dumps(res, indent=1) + "\n")
        simgap.plot(res, out / "sim_gap.png")
        click.echo(f"wrote {out / 'sim_gap.json'} and {out / 'sim_gap.png'}")

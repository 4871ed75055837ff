"""``persona validate``: record a baseline from a healthy host, or validate a host against one."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from persona.errors import ConfigError


@click.command("validate")
@click.option("--host", required=True, help="Host name (label persona.host), e.g. demo.")
@click.option(
    "--baseline",
    "baseline_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Baseline JSON to validate the host against.",
)
@click.option(
    "--record",
    "record_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Record a baseline from this (healthy) host into FILE instead.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write verdict.json, report.md and latency.png here.",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the verdict as JSON ('-' for stdout).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--budget",
    "budget_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds the recording may take (4-90); validation replays the same load.",
)
def validate(
    host: str,
    baseline_path: Path | None,
    record_path: Path | None,
    out_dir: Path | None,
    json_out: Path | None,
    seed: int,
    budget_s: float,
) -> None:
    """Behavioural validation: functional diff (noise-filtered), latency, throughput, load ramp,
    connection table and redis, each Pass/High/Low/NoData/Inconclusive. Exit status 1 when the
    host fails its verdict."""
    from persona.validate import Baseline, record_baseline, target_for_host, validate_target

    if (baseline_path is None) == (record_path is None):
        raise ConfigError("give exactly one of --baseline FILE (validate) or --record FILE")
    target = target_for_host(host)
    if record_path is not None:
        b = record_baseline(target, seed=seed, budget_s=budget_s)
        b.save(record_path)
        click.echo(
            f"baseline of {host} -> {record_path}: capacity "
            f"{b.settings['capacity_rps']:.0f} req/s, {len(b.latency_ms)} latency samples "
            f"at {b.settings['latency_rate_hz']:.0f} req/s, {len(b.corpus)} requests"
        )
        return
    assert baseline_path is not None
    v = validate_target(target, Baseline.load(baseline_path), seed=seed)
    for m in v.metrics:
        flag = "ok " if m.passed else "BAD"
        crit = "*" if m.critical else " "
        click.echo(f"  {flag} {crit}{m.name:17s} {m.outcome.value:12s} {m.summary}")
    click.echo(
        f"{host}: {'PASSED' if v.passed else 'FAILED'}  score {v.score:.1f}  "
        f"({v.duration_s:.1f} s; * = critical)"
    )
    if out_dir is not None:
        paths = v.write(out_dir)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
    if json_out is not None:
        text = json.dumps(v.to_dict(), indent=1, sort_keys=True)
        if str(json_out) == "-":
            sys.stdout.write(text + "\n")
        else:
            json_out.write_text(text)
    if not v.passed:
        sys.exit(1)

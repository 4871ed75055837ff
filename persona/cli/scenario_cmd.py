"""``persona scenario``: list, show and validate scenarios."""

from __future__ import annotations

import click


@click.group("scenario")
def scenario() -> None:
    """Inspect and validate scenarios (generator URIs, scenario://names, files)."""


@scenario.command("list")
def list_cmd() -> None:
    """List the scenario families and the hand-written scenarios."""
    from envs.scenarios import FAMILIES, list_scenarios

    for fam, spec in FAMILIES.items():
        lo, hi = spec.default_components
        click.echo(f"generator://{fam}-v0?components=N   (default N in {lo}-{hi})")
    click.echo(
        "generator://mixed-v0?components=N   (samples one family per episode; default N in 5-16)"
    )
    for s in list_scenarios():
        click.echo(s)


@scenario.command("show")
@click.argument("uri")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Which instance of a generator to show."
)
def show_cmd(uri: str, seed: int) -> None:
    """Show one instance of a scenario: host, components, hard dependencies."""
    import numpy as np

    from envs.scenarios import resolve

    sc = resolve(uri).sample(np.random.default_rng(seed))
    h = sc.host
    click.echo(
        f"{sc.name}  family={sc.family}  slots={h.slots} cpu_cores={h.cpu_cores} io_mb_s={h.io_mb_s}"
    )
    click.echo(f"captured peak load: {sc.manifest.load.peak_cpu_cores} cores")
    for c in sc.manifest.components:
        res = ""
        if c.resources:
            res = f" cpu={c.resources.cpu_usage_cores:.2f}/{c.resources.cpu_peak_cores:.2f}"
        deps = f" <- {', '.join(c.depends_on)}" if c.depends_on else ""
        click.echo(
            f"  {c.name:26s} {c.kind.value:13s} {c.role:8s} {c.size_bytes / 2**20:9.1f} MB{res}{deps}"
        )


@scenario.command("validate")
@click.argument("path", type=click.Path(dir_okay=False))
def validate_cmd(path: str) -> None:
    """Check a scenario YAML (or persona manifest JSON) file; exit 2 with the reason if bad."""
    from envs.scenarios import load_scenario_file

    sc = load_scenario_file(path)
    click.echo(f"ok: {sc.name} ({sc.n} components)")

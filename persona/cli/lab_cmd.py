"""``persona doctor`` and ``persona lab up|down|status``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click

from persona.errors import LabError

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@click.command("doctor")
def doctor() -> None:
    """Check every live-lab prerequisite; print what is wrong and the command that fixes it."""
    from persona.lab.doctor import probe_all, render
    checks = probe_all()
    click.echo(render(checks))
    if not all(c.ok for c in checks):
        sys.exit(1)


@click.group("lab")
def lab() -> None:
    """The live lab: Docker engine + CRIU, local images, network and the demo host."""


@lab.command("up")
@click.option("--no-demo", is_flag=True, help="Install, start the engine and build images only.")
@click.option("--no-install", is_flag=True, help="Do not install missing packages.")
@click.option("--no-load", is_flag=True, help="Start the demo host without its load client.")
@click.option("--host", default="demo", show_default=True,
              help="Which lab host: demo, or demo-check (its api self-checks after a restore, "
                   "so the restore's CPU allocation matters; see docs/live.md).")
def up(no_demo: bool, no_install: bool, no_load: bool, host: str) -> None:
    """Install what is missing, start the engine, build images, start a lab host."""
    from persona.lab import demo, engine, images
    t0 = time.monotonic()
    if not no_install:
        script = SCRIPTS / "lab-install.sh"
        if not script.exists():
            raise LabError(f"{script} missing: run from a persona checkout")
        r = subprocess.run(["bash", str(script), "--venv", sys.prefix])
        if r.returncode != 0:
            raise LabError(f"{script} failed (exit {r.returncode}); see its messages above, "
                           "then run: persona doctor")
    client = engine.connect()
    if not engine.experimental(client):
        raise LabError("engine runs without --experimental: kill $(pidof dockerd); "
                       "dockerd --experimental >/var/log/dockerd.log 2>&1 &")
    built = images.build_all(client)
    click.echo(f"images: {', '.join(built)}")
    if not no_demo:
        demo.up(client, host, with_load=not no_load)
        click.echo(f"{host} host up: " + ", ".join(
            c["Names"][0].lstrip("/") for c in demo.host_containers(client, host)))
    click.echo(f"lab up in {time.monotonic() - t0:.1f}s")


@lab.command("down")
def down() -> None:
    """Remove every container and network the lab created (images stay cached)."""
    from persona.lab import demo, engine
    removed = demo.down(engine.connect())
    click.echo("removed: " + (", ".join(removed) if removed else "nothing"))


@lab.command("status")
def status() -> None:
    """Show the engine, the lab network and the lab's containers."""
    from persona.lab import demo, engine
    s = demo.status(engine.connect())
    click.echo(f"engine: {s.engine}")
    click.echo(f"network persona-lab: {'present' if s.network else 'absent'}")
    for name, role, state in s.containers:
        click.echo(f"  {name:28s} {role:8s} {state}")
    if not s.containers:
        click.echo("  no lab containers (run: persona lab up)")

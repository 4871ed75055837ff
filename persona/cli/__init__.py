"""The ``persona`` command line: one click group, one module per subcommand family.

Subcommand modules are imported lazily so ``persona --help`` never pays for torch or docker.
To add a command family, add an entry to ``_COMMANDS``: name -> "module:attribute".
"""

from __future__ import annotations

import importlib
import sys

import click

from persona.errors import PersonaError

_COMMANDS: dict[str, tuple[str, str]] = {
    # name: (module:attribute, one-line help shown by `persona --help`)
    "eval": ("persona.cli.eval_cmd:eval_cmd", "Evaluate policies on scenarios (table + JSON)."),
    "demo": ("persona.cli.demo_cmd:demo", "Run the main job on the embedded default."),
    "train": ("persona.cli.train_cmd:train_cmd", "Train a restore policy (MaskablePPO)."),
    "export": ("persona.cli.export_cmd:export_cmd", "Export a trained policy to ONNX + sidecar."),
    "scenario": ("persona.cli.scenario_cmd:scenario", "Inspect and validate scenarios."),
    "store": ("persona.cli.store_cmd:store", "Versioned, deduplicated persona storage."),
    "doctor": ("persona.cli.lab_cmd:doctor", "Check live-lab prerequisites (Docker, CRIU, ...)."),
    "lab": ("persona.cli.lab_cmd:lab", "Live lab: set up, start, stop the demo host."),
    "capture": ("persona.cli.capture_cmd:capture", "Capture a live host's persona."),
    "watch": ("persona.cli.capture_cmd:watch", "Capture continuously (interval + events)."),
    "validate": ("persona.cli.validate_cmd:validate", "Validate a host against a baseline."),
    "failover": ("persona.cli.recover_cmd:failover", "Detect a host's failure, fence, recover, validate."),
    "restore": ("persona.cli.recover_cmd:restore", "Restore a persona version onto a replacement host."),
    "bench": ("persona.cli.recover_cmd:bench", "Live benchmarks (bench failover)."),
    "vm": ("persona.cli.vm_cmd:vm", "VM mode: cloud-kernel guests whose modules really load."),
    "calibrate": ("persona.cli.live_cmd:calibrate", "Fit the simulator to live episode traces."),
    "sim-gap": ("persona.cli.live_cmd:sim_gap", "How well a calibrated sim predicts live TTRs."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = _COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr = spec[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="persona")
def cli() -> None:
    """persona: capture, store, restore and validate host personas; learn how to restore."""


def main(argv: list[str] | None = None) -> None:
    """Console entry point: PersonaError becomes a one-line message and exit status 2."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except PersonaError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)

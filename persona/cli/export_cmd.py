"""``persona export``: a trained run to ONNX + JSON sidecar for the production restorer."""

from __future__ import annotations

import click


@click.command("export")
@click.option(
    "--run",
    "run",
    required=True,
    type=click.Path(exists=True),
    help="Run folder (uses final_model.zip) or a model .zip.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output FILE.onnx; the sidecar is written next to it as FILE.json.",
)
def export_cmd(run: str, out: str) -> None:
    """Export a trained policy: observation arrays + action mask in, masked action + logits out."""
    from agents.export import export_run

    onnx_path, side = export_run(run, out)
    click.echo(f"wrote {onnx_path} and {side}")

"""The `persona` command line: help everywhere, contracts of eval/demo, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from persona.cli import _COMMANDS, cli

PERSONA = [sys.executable, "-c", "from persona.cli import main; main()"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PERSONA, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def _walk(group: click.Group, ctx: click.Context, prefix: list[str]):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        yield [*prefix, name], cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, click.Context(cmd, parent=ctx), [*prefix, name])


def test_every_command_has_help():
    runner = CliRunner()
    ctx = click.Context(cli)
    paths = list(_walk(cli, ctx, []))
    assert {p[0] for p, _ in paths} == set(_COMMANDS)
    for path, cmd in paths:
        res = runner.invoke(cli, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Usage:" in res.output
        assert (cmd.help or "").split("\n")[0][:20] in res.output


def test_eval_json_contract(tmp_path):
    out = tmp_path / "r.json"
    res = run(
        "eval",
        "--policy",
        "critical-path",
        "--scenarios",
        "generator://web-tier-v0?components=6",
        "--episodes",
        "5",
        "--seed",
        "3",
        "--json",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "critical-path" in res.stdout and "TTR mean" in res.stdout
    obj = json.loads(out.read_text())
    for key in (
        "policy",
        "scenarios",
        "episodes",
        "seed",
        "ttr_mean",
        "ttr_ci95",
        "success_rate",
        "per_episode",
    ):
        assert key in obj
    assert obj["policy"] == "critical-path" and obj["episodes"] == 5 and obj["seed"] == 3
    assert len(obj["ttr_ci95"]) == 2 and obj["ttr_ci95"][0] <= obj["ttr_mean"] <= obj["ttr_ci95"][1]
    assert [e["seed"] for e in obj["per_episode"]] == [3, 4, 5, 6, 7]
    for e in obj["per_episode"]:
        assert {"seed", "ttr", "validated"} <= set(e)


def test_eval_several_policies_side_by_side(tmp_path):
    out = tmp_path / "r.json"
    res = run(
        "eval",
        "--policy",
        "capture-order,random",
        "--policy",
        "oracle",
        "--scenarios",
        "generator://mixed-v0?components=5",
        "--episodes",
        "3",
        "--seed",
        "0",
        "--json",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    objs = json.loads(out.read_text())
    assert [o["policy"] for o in objs] == ["capture-order", "random", "oracle"]
    oracle = objs[2]["ttr_mean"]
    assert all(o["ttr_mean"] >= oracle - 1e-9 for o in objs)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["eval", "--policy", "nope", "--episodes", "1"], "unknown policy 'nope'"),
        (["eval", "--policy", "random", "--scenarios", "generator://x-v0"], "unknown generator"),
        (
            [
                "eval",
                "--policy",
                "oracle",
                "--scenarios",
                "generator://web-tier-v0?components=9",
                "--episodes",
                "1",
            ],
            "<= 7 components",
        ),
        (["scenario", "show", "scenario://nope"], "unknown scenario"),
    ],
)
def test_errors_are_one_clear_line(args, words):
    res = run(*args)
    assert res.returncode == 2
    assert words in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_option_values_exit_with_usage():
    res = run("eval", "--policy", "random", "--episodes", "0")
    assert res.returncode == 2 and "Invalid value" in res.stderr


def test_scenario_validate(tmp_path):
    good = run(
        "scenario", "validate", "configs/scenarios/lab-demo.yaml", cwd=Path(__file__).parents[1]
    )
    assert good.returncode == 0 and "ok: lab-demo" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: x\npersona: {schema_version: 1, host: {name: h, captured_at: t}, load: {peak_cpu_cores: 1},"
        " components: [{name: a, kind: blob, size_bytes: 1}]}\n"
    )
    res = run("scenario", "validate", str(bad))
    assert res.returncode == 2 and "persona.components[0].kind: unknown kind 'blob'" in res.stderr


def test_scenario_list_and_show():
    res = run("scenario", "list")
    assert "generator://web-tier-v0" in res.stdout and "scenario://postgres-primary" in res.stdout
    res = run("scenario", "show", "generator://db-heavy-v0?components=7", "--seed", "1")
    assert res.returncode == 0 and "db-heavy-v0#n7" in res.stdout


def test_demo_writes_report(tmp_path):
    res = run("demo", "--out", str(tmp_path), "--episodes", "8", "--seed", "5")
    assert res.returncode == 0, res.stderr
    (run_dir,) = list(tmp_path.iterdir())
    assert run_dir.name.startswith("demo__")
    report = (run_dir / "report.md").read_text()
    for name in ("capture-order", "random", "critical-path", "seed-adaptive", "oracle"):
        assert name in report
    for sub in ("default", "small"):
        assert (run_dir / sub / "ttr.png").stat().st_size > 1000
        assert len(json.loads((run_dir / sub / "results.json").read_text())) >= 4
        assert (run_dir / sub / "per_episode.csv").read_text().count("\n") > 8

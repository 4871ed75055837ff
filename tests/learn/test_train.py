"""Training: run folder contents, exact reproducibility for a seed, resume, config errors, CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml

from agents.train import (
    TRAIN_SEED_BASE,
    TrainResult,
    latest_checkpoint,
    load_config,
    load_run_config,
    train,
)
from persona.errors import ConfigError

pytestmark = pytest.mark.slow


def _params(run_dir: Path, name: str = "final_model.zip") -> dict[str, np.ndarray]:
    from sb3_contrib import MaskablePPO

    m = MaskablePPO.load(run_dir / name, device="cpu")
    return {k: v.detach().numpy().copy() for k, v in m.policy.state_dict().items()}


def test_run_folder_contents(tiny_run: TrainResult) -> None:
    d = tiny_run.run_dir
    assert d.name.startswith("tiny__3__")
    for f in ("config.yaml", "eval.csv", "final_model.zip", "best_model.zip", "summary.json"):
        assert (d / f).is_file(), f
    assert list((d / "logs").glob("events.out.tfevents.*")), "no TensorBoard log"
    rows = list(csv.DictReader((d / "logs" / "progress.csv").open()))
    assert rows and float(rows[-1]["time/total_timesteps"]) == 1024
    assert float(rows[-1]["time/env_steps_per_s"]) > 0
    assert sorted(p.name for p in (d / "checkpoints").glob("*.zip")) == [
        "model_1024_steps.zip",
        "model_512_steps.zip",
    ]
    ev = list(csv.DictReader((d / "eval.csv").open()))
    assert [int(r["timesteps"]) for r in ev] == [512, 1024]
    assert all(float(r["ttr_mean"]) > 0 for r in ev)
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["timesteps"] == 1024 and "git_commit" in cfg["provenance"]
    assert load_run_config(d).net.dim == 16
    summary = json.loads((d / "summary.json").read_text())
    assert summary["timesteps"] == 1024 and summary["steps_per_s"] > 0
    assert tiny_run.timesteps == 1024


def test_same_seed_same_model_other_seed_differs(
    tiny_run: TrainResult, make_tiny_config, tmp_path: Path
) -> None:
    again = train(make_tiny_config(), out=tmp_path / "a", progress=False)
    a, b = _params(tiny_run.run_dir), _params(again.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (tiny_run.run_dir / "eval.csv").read_text().split("\n")[1].split(",")[2] == (
        again.run_dir / "eval.csv"
    ).read_text().split("\n")[1].split(",")[2]
    other = train(make_tiny_config(seed=4), out=tmp_path / "b", progress=False)
    c = _params(other.run_dir)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_resume_from_checkpoint(make_tiny_config, tmp_path: Path) -> None:
    first = train(make_tiny_config(timesteps=512), out=tmp_path, progress=False)
    ck = latest_checkpoint(first.run_dir)
    assert ck.name == "model_512_steps.zip"
    before = _params(first.run_dir)
    resumed = train(make_tiny_config(timesteps=1024), resume=first.run_dir, progress=False)
    assert resumed.run_dir == first.run_dir and resumed.timesteps == 1024
    after = _params(first.run_dir)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert latest_checkpoint(first.run_dir).name == "model_1024_steps.zip"
    ev = [int(r["timesteps"]) for r in csv.DictReader((first.run_dir / "eval.csv").open())]
    assert ev == [512, 1024]
    with pytest.raises(ConfigError, match="already has"):
        train(make_tiny_config(timesteps=1024), resume=ck.parent.parent, progress=False)


def test_training_seeds_are_held_out_from_evaluation(tiny_run: TrainResult) -> None:
    cfg = load_run_config(tiny_run.run_dir)
    assert cfg.eval.seed + cfg.eval.episodes < TRAIN_SEED_BASE


def test_config_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\nppo: {learning_rat: 1}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(p)
    p.write_text("n_envs: 3\nppo: {n_steps: 10, batch_size: 64}\n")
    with pytest.raises(ConfigError, match="multiple of"):
        load_config(p)
    p.write_text("vec_env: threads\n")
    with pytest.raises(ConfigError, match="vec_env"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_default_config_loads() -> None:
    cfg = load_config(Path(__file__).parents[2] / "configs" / "train" / "sim-default.yaml")
    assert cfg.name == "sim-default" and cfg.scenarios.startswith("generator://mixed-v0")


def test_cli_train_and_export(make_tiny_config, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from persona.cli import cli

    cfg = tmp_path / "tiny.yaml"
    d = make_tiny_config().to_dict()
    cfg.write_text(yaml.safe_dump(d))
    r = CliRunner().invoke(
        cli,
        [
            "train",
            "--config",
            str(cfg),
            "--timesteps",
            "256",
            "--seed",
            "9",
            "--out",
            str(tmp_path / "runs"),
            "--no-progress",
            "--export",
            str(tmp_path / "direct.onnx"),
            "--export-max-components",
            "12",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "env steps/s" in r.output
    direct = json.loads((tmp_path / "direct.json").read_text())
    assert direct["observation"]["max_components"] == 12
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("tiny__9__")
    r = CliRunner().invoke(cli, ["export", "--run", str(run), "--out", str(tmp_path / "p.onnx")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.onnx").stat().st_size > 0 and (tmp_path / "p.json").exists()
    assert th.get_num_threads() >= 1


def test_init_warm_starts_from_another_model(tiny_run: TrainResult, make_tiny_config, tmp_path):
    frozen = {"n_steps": 64, "batch_size": 128, "n_epochs": 1, "learning_rate": 0.0}
    cfg = make_tiny_config(init=str(tiny_run.run_dir), timesteps=256, ppo=frozen, seed=9)
    res = train(cfg, out=tmp_path, progress=False)
    got, want = _params(res.run_dir), _params(tiny_run.run_dir)
    assert all(np.array_equal(got[k], want[k]) for k in want)  # lr 0: still the init's weights
    fresh = train(make_tiny_config(timesteps=256, ppo=frozen, seed=9), tmp_path, progress=False)
    other = _params(fresh.run_dir)
    assert any(not np.array_equal(other[k], want[k]) for k in want)
    with pytest.raises(ConfigError, match="init"):
        train(make_tiny_config(init=str(tmp_path / "nope.zip")), out=tmp_path, progress=False)

"""Experiment grids: config errors, a tiny grid (in-process and through Ray), the notebook."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import yaml

from agents import experiment as ex
from persona.errors import ConfigError

ROOT = Path(__file__).parents[2]


def _cfg(tmp_path: Path, learned: str | None = None, **extra: object) -> ex.ExperimentConfig:
    pols = ["critical-path", "seed-adaptive", "capture-order"]
    if learned:
        pols.append(learned)
    obj = {
        "name": "tiny",
        "suites": [
            {
                "name": "mixed",
                "scenarios": "generator://mixed-v0?components=4-8",
                "policies": pols,
                "episodes": 6,
                "seed": 11,
            },
            {
                "name": "small",
                "scenarios": "generator://web-tier-v0?components=4-5",
                "policies": [*pols, "oracle"],
                "episodes": 3,
                "seed": 11,
            },
        ],
        "max_components": 10,
        "learned": learned,
        **extra,
    }
    return ex.config_from_dict(obj)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least one suite"):
        ex.config_from_dict({"name": "x", "suites": []})
    with pytest.raises(ConfigError, match="unknown key"):
        ex.config_from_dict({"name": "x", "suites": [], "sweets": 1})
    s = {"name": "a", "scenarios": "generator://mixed-v0", "policies": ["random"]}
    with pytest.raises(ConfigError, match="unique"):
        ex.config_from_dict({"name": "x", "suites": [s, s]})
    with pytest.raises(ConfigError, match="needs name"):
        ex.config_from_dict({"name": "x", "suites": [{"name": "a"}]})


def test_verdicts() -> None:
    stats = {
        "learned": {"ttr_mean": 30.0, "ttr_ci95": [28.0, 32.0], "success_rate": 1.0},
        "seed-adaptive": {"ttr_mean": 40.0, "ttr_ci95": [36.0, 44.0], "success_rate": 1.0},
        "oracle": {"ttr_mean": 28.0, "ttr_ci95": [26.0, 30.0], "success_rate": 1.0},
    }
    v = ex.verdicts(stats, "learned", "seed-adaptive")
    assert all(v.values()) and len(v) == 4
    stats["learned"]["ttr_ci95"] = [28.0, 37.0]
    stats["learned"]["success_rate"] = 0.99
    stats["learned"]["ttr_mean"] = 34.1
    v = ex.verdicts(stats, "learned", "seed-adaptive")
    assert not v["95% CIs do not overlap"] and not v["success rate no lower"]
    assert not v["mean <= 0.85x best heuristic"] and not v["within 10% of oracle"]


@pytest.mark.slow
def test_grid_in_process_and_with_ray_agree(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, num_cpus=2)
    a = ex.run_experiment(cfg, tmp_path / "a", use_ray=False)
    b = ex.run_experiment(cfg, tmp_path / "b", use_ray=True)
    ra, rb = ex.load_rows(a), ex.load_rows(b)
    assert len(ra) == 3 * 6 + 4 * 3
    key = lambda r: (r["suite"], r["policy"], r["seed"])  # noqa: E731
    assert sorted(ra, key=key) == sorted(rb, key=key)
    for f in (
        "summary.md",
        "summary.json",
        "config.yaml",
        "ttr_mixed.png",
        "ttr_small.png",
        "ttr_by_suite.png",
    ):
        assert (b / f).is_file(), f
    s = json.loads((b / "summary.json").read_text())
    assert s["suites"]["small"]["policies"]["critical-path"]["ratio_to_oracle"][0] >= 1.0 - 1e-9
    assert s["suites"]["mixed"]["best_heuristic"] in ("critical-path", "seed-adaptive")
    with (b / "per_episode.csv").open() as f:
        assert next(csv.reader(f)) == list(ex.CSV_FIELDS)


@pytest.mark.slow
def test_cli_script_with_learned_policy(tmp_path: Path, tiny_onnx: Path, tiny_run) -> None:
    from experiments.run import main

    cfg = _cfg(tmp_path, learned=str(tiny_onnx), training_runs=[str(tiny_run.run_dir)])
    p = tmp_path / "exp.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main([str(p), "--out", str(tmp_path / "res"), "--no-ray"]) == 0
    (res,) = (tmp_path / "res").iterdir()
    md = (res / "summary.md").read_text()
    assert "Quality bar:" in md and "within 10% of oracle" in md and "| tiny |" in md
    assert (res / "learning_curves.png").is_file()
    assert main([str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.slow
def test_notebook_reproduces_a_results_folder(tmp_path: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    res = ex.run_experiment(_cfg(tmp_path), tmp_path / "res", use_ray=False)
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    env = {
        "PERSONA_RESULTS": str(res),
        "PERSONA_ROOT": str(ROOT),
        "PERSONA_NOTEBOOK_OUT": str(tmp_path / "nb"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
        ).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = "".join(
        o.get("text", "") + json.dumps(o.get("data", {}))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
    )
    assert "summary.json reproduced" in text
    assert "| critical-path | 6 |" in text
    for suite in ("mixed", "small"):
        assert (tmp_path / "nb" / f"ttr_{suite}.png").is_file()

"""persona demo: the shipped policy against every baseline; or a short training run first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.demo import SHIPPED, run_demo

pytestmark = pytest.mark.slow


def test_demo_with_the_shipped_policy(tmp_path: Path) -> None:
    assert SHIPPED.exists() and SHIPPED.with_suffix(".json").exists()
    run = run_demo(tmp_path, episodes=8, seed=3)
    report = (run / "report.md").read_text()
    assert "learned (sim-default)" in report
    for name in ("capture-order", "random", "critical-path", "seed-adaptive", "oracle"):
        assert f"| {name} |" in report
    assert "learned / oracle:" in report and "learned / seed-adaptive:" in report
    assert "| search (sim-default) |" in report and "search / oracle:" in report
    res = json.loads((run / "default" / "results.json").read_text())
    assert res[0]["policy"] == "learned (sim-default)" and len(res) == 5
    assert (run / "small" / "ttr.png").stat().st_size > 1000


def test_demo_trains_a_short_run_when_asked(tmp_path: Path) -> None:
    run = run_demo(tmp_path, episodes=4, seed=3, train_timesteps=4096)
    (train_dir,) = (run / "train").iterdir()
    assert (train_dir / "final_model.zip").exists()
    assert (run / "policy" / "learned.onnx").exists()
    assert "learned (learned)" in (run / "report.md").read_text()

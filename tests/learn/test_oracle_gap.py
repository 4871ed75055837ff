"""experiments/oracle_gap.py writes its run folder and a consistent summary (tiny run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import oracle_gap
from persona.errors import PolicyError


def test_tiny_oracle_gap_run(tmp_path: Path, capsys):
    out = oracle_gap.main(
        ["--episodes", "3", "--seed", "7", "--samples", "2", "--out", str(tmp_path)]
    )
    run = Path(out["run"])
    for f in ("summary.json", "summary.md", "results.json", "per_episode.csv", "ttr.png"):
        assert (run / f).stat().st_size > 0, f
    summary = json.loads((run / "summary.json").read_text())
    pols = summary["policies"]
    assert list(pols) == ["oracle", "planner", "sim-default", "critical-path", "seed-adaptive"]
    assert pols["oracle"]["ratio_to_oracle"] is None
    for name, s in pols.items():
        assert s["episodes"] == 3
        if name != "oracle":
            assert s["ratio_to_oracle"][0] >= 1.0 - 1e-9  # the oracle bounds every policy
            assert s["episodes_below_oracle"] == 0
    assert "Planner / oracle" in capsys.readouterr().out


def test_several_learned_policies(tmp_path: Path) -> None:
    import shutil

    for ext in (".onnx", ".json"):
        shutil.copy(f"policies/sim-default{ext}", tmp_path / f"other{ext}")
    learned = f"policies/sim-default.onnx,{tmp_path / 'other.onnx'}"
    args = ["--episodes", "2", "--seed", "7", "--samples", "1", "--learned", learned]
    out = oracle_gap.main([*args, "--out", str(tmp_path)])
    pols = out["policies"]
    assert list(pols)[:4] == ["oracle", "planner", "sim-default", "other"]
    assert pols["other"]["ttr_mean"] == pols["sim-default"]["ttr_mean"]  # the same network


def test_planner_rows_with_a_rolled_out_policy_and_with_hindsight(tmp_path: Path) -> None:
    args = ["--episodes", "2", "--seed", "7", "--samples", "2", "--learned", ""]
    extra = ["--planner-policy", "policies/sim-default.onnx", "--reveal", "faults,draws"]
    out = oracle_gap.main([*args, *extra, "--out", str(tmp_path)])
    pols = out["policies"]
    assert list(pols)[:5] == [
        "oracle",
        "planner",
        "planner+sim-default",
        "planner+faults",
        "planner+draws",
    ]
    assert out["reveal"] == ["faults", "draws"]
    md = (Path(out["run"]) / "summary.md").read_text()
    assert "also rolls out sim-default" in md and "the episode's faults (hindsight)" in md
    with pytest.raises(PolicyError, match="--reveal"):
        oracle_gap.main([*args, "--reveal", "luck", "--out", str(tmp_path)])


def test_search_restorer_and_learned_model_rows(tmp_path: Path) -> None:
    from agents.model_learning import main as learn_main

    model = tmp_path / "m.json"
    learn_main(
        [
            "--episodes",
            "30",
            "--scenarios",
            "generator://mixed-v0?components=5-7",
            "--out",
            str(model),
        ]
    )
    search = f"search:policies/sim-default.onnx@{model}@2"
    args = ["--episodes", "2", "--seed", "7", "--samples", "2", "--learned", search]
    out = oracle_gap.main([*args, "--learned-model", str(model), "--out", str(tmp_path)])
    pols = out["policies"]
    assert list(pols)[:4] == ["oracle", "planner", "planner@learned", "search(sim-default)"]
    md = (Path(out["run"]) / "summary.md").read_text()
    assert "learned from episodes (search)" in md

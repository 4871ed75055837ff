"""ONNX export: parity with SB3 predict on >= 1000 observations, sidecar, eval by file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agents.train import TrainResult
from envs import layout
from envs.restore_env import RestoreEnv
from persona.errors import PolicyError

pytestmark = pytest.mark.slow

FAMILIES = ("mixed", "web-tier", "db-heavy", "microservices", "random-dag")


def _observations(n_max: int, count: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Observations + masks from random valid rollouts over every family."""
    rng = np.random.default_rng(0)
    obs_l: list[dict[str, np.ndarray]] = []
    masks: list[np.ndarray] = []
    k = 0
    while len(masks) < count:
        fam = FAMILIES[k % len(FAMILIES)]
        env = RestoreEnv(f"generator://{fam}-v0?components=3-{n_max}", max_components=n_max)
        obs, _ = env.reset(seed=k)
        k += 1
        while True:
            m = env.action_masks()
            obs_l.append(obs)
            masks.append(m)
            obs, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(m))))
            if term or trunc:
                break
    batch = {key: np.stack([o[key] for o in obs_l]) for key in obs_l[0]}
    return batch, np.stack(masks)


def test_onnx_matches_sb3_predict(tiny_run: TrainResult, tiny_onnx: Path) -> None:
    from sb3_contrib import MaskablePPO

    from agents.masks import safe_mask
    from persona.restorer import OnnxRestorePolicy

    model = MaskablePPO.load(tiny_run.run_dir / "final_model.zip", device="cpu")
    obs, masks = _observations(10, 1000)
    assert len(masks) >= 1000
    # the ONNX graph refines the env's mask itself (safe allocation), as training did
    safe = safe_mask(obs, masks, (0.8, 1.2, 1.8))
    assert safe.sum() < masks.sum(), "no over-committing allocation among the samples"
    sb3, _ = model.predict(obs, deterministic=True, action_masks=safe)
    pol = OnnxRestorePolicy(tiny_onnx)
    onnx_actions, logits = pol.run(obs, masks)
    assert logits.shape == masks.shape
    assert safe[np.arange(len(masks)), onnx_actions].all(), "ONNX picked a masked action"
    agree = float(np.mean(onnx_actions == sb3))
    assert agree == 1.0, f"only {agree:.1%} of actions agree"
    # and one by one through the Policy protocol
    for i in range(0, 1000, 97):
        single = {k: v[i] for k, v in obs.items()}
        assert pol.act(single, masks[i]) == int(sb3[i])


def test_sidecar(tiny_onnx: Path, tiny_run: TrainResult) -> None:
    meta = json.loads(tiny_onnx.with_suffix(".json").read_text())
    assert meta["format"] == "persona-restore-policy/v1"
    assert meta["observation"]["node_features"] == list(layout.NODE_FEATURES)
    assert meta["observation"]["global_features"] == list(layout.GLOBAL_FEATURES)
    assert meta["observation"]["max_components"] == 10
    assert meta["actions"]["levels"] == 3 and meta["actions"]["wait_action"] == 30
    assert meta["actions"]["alloc_levels"] == [0.8, 1.2, 1.8]
    assert meta["limits"]["trained_max_components"] == 8
    assert meta["provenance"]["run"] == tiny_run.run_dir.name
    assert meta["provenance"]["timesteps"] == 1024
    assert meta["inputs"]["action_mask"] == [None, 31]


def test_sidecar_layout_mismatch_rejected(tiny_onnx: Path, tmp_path: Path) -> None:
    from persona.restorer import OnnxRestorePolicy

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(tiny_onnx.read_bytes())
    meta = json.loads(tiny_onnx.with_suffix(".json").read_text())
    meta["observation"]["node_features"] = meta["observation"]["node_features"][::-1]
    bad.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(PolicyError, match="observation layout"):
        OnnxRestorePolicy(bad)
    with pytest.raises(PolicyError, match="does not exist"):
        OnnxRestorePolicy(tmp_path / "none.onnx")


def test_eval_by_file_has_the_baseline_json_shape(tiny_onnx: Path, tmp_path: Path) -> None:
    out_b, out_l = tmp_path / "b.json", tmp_path / "l.json"
    base = [sys.executable, "-c", "from persona.cli import main; main()", "eval"]
    common = [
        "--scenarios",
        "generator://mixed-v0?components=4-8",
        "--episodes",
        "4",
        "--seed",
        "7",
        "--max-components",
        "10",
    ]
    for pol, out in (("critical-path", out_b), (str(tiny_onnx), out_l)):
        r = subprocess.run(
            [*base, "--policy", pol, *common, "--json", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
    b, lr = json.loads(out_b.read_text()), json.loads(out_l.read_text())
    assert b.keys() == lr.keys()
    assert lr["policy"] == str(tiny_onnx)
    assert b["per_episode"][0].keys() == lr["per_episode"][0].keys()
    # common random numbers: same scenarios, same order
    assert [e["scenario"] for e in b["per_episode"]] == [e["scenario"] for e in lr["per_episode"]]


def test_eval_rejects_wrong_padding(tiny_onnx: Path) -> None:
    from agents.evaluate import evaluate

    with pytest.raises(PolicyError, match="max_components=10"):
        evaluate(str(tiny_onnx), "generator://mixed-v0?components=4-8", 1, 0, max_components=24)


def test_repadded_export_acts_as_trained(tiny_run: TrainResult, tmp_path: Path) -> None:
    """Trained padded to 10, exported padded to 14: same decisions on the same episodes."""
    from sb3_contrib import MaskablePPO

    from agents.export import export_run
    from persona.restorer import OnnxRestorePolicy

    out, side = export_run(tiny_run.run_dir, tmp_path / "wide.onnx", max_components=14)
    meta = json.loads(side.read_text())
    assert meta["observation"]["max_components"] == 14
    assert meta["limits"]["trained_padding"] == 10
    from agents.masks import safe_mask

    model = MaskablePPO.load(tiny_run.run_dir / "final_model.zip", device="cpu")
    pol = OnnxRestorePolicy(out)
    L, checked, lv = 3, 0, (0.8, 1.2, 1.8)
    for seed in range(40):
        narrow = RestoreEnv("generator://mixed-v0?components=4-8", max_components=10)
        wide = RestoreEnv("generator://mixed-v0?components=4-8", max_components=14)
        o10, _ = narrow.reset(seed=seed)
        o14, _ = wide.reset(seed=seed)
        while True:
            a10, _ = model.predict(
                o10, deterministic=True, action_masks=safe_mask(o10, narrow.action_masks(), lv)
            )
            a14 = pol.act(o14, wide.action_masks())
            expect = 14 * L if int(a10) == 10 * L else int(a10)
            assert a14 == expect, (seed, int(a10), a14)
            checked += 1
            o10, _, t10, tr10, _ = narrow.step(int(a10))
            o14, _, t14, tr14, _ = wide.step(a14)
            assert (t10 or tr10) == (t14 or tr14)
            if t10 or tr10:
                break
    assert checked > 200
    with pytest.raises(PolicyError, match="trained padded to 10"):
        export_run(tiny_run.run_dir, tmp_path / "narrow.onnx", max_components=8)


def test_alloc_head_policy_exports_with_parity(tmp_path: Path, make_tiny_config) -> None:
    """A policy with the allocation-arithmetic head (``net.alloc_head``) trains, exports and
    acts under onnxruntime exactly as SB3's predict does."""
    from sb3_contrib import MaskablePPO

    from agents.export import export_run
    from agents.masks import safe_mask
    from agents.train import train
    from persona.restorer import OnnxRestorePolicy

    cfg = make_tiny_config(net={"dim": 16, "heads": 2, "layers": 1, "alloc_head": True})
    run = train(cfg, out=tmp_path, progress=False)
    onnx, _ = export_run(run.run_dir, tmp_path / "alloc.onnx")
    model = MaskablePPO.load(run.run_dir / "final_model.zip", device="cpu")
    assert model.policy.features_extractor.n_alloc > 0
    obs, masks = _observations(10, 1000)
    sb3, _ = model.predict(
        obs, deterministic=True, action_masks=safe_mask(obs, masks, (0.8, 1.2, 1.8))
    )
    actions, _ = OnnxRestorePolicy(onnx).run(obs, masks)
    assert float(np.mean(actions == sb3)) == 1.0

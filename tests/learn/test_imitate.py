"""Imitating the planner (agents/imitate.py): labels are the planner's, cloning learns them,
a run is reproducible, and its export runs in the ONNX restorer like the torch policy."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch as th
import yaml
from sb3_contrib import MaskablePPO

from agents.evaluate import run_episode
from agents.extractor import GraphExtractor, GraphPolicy
from agents.imitate import (
    Dataset,
    ImitateConfig,
    agreement,
    argmax_regret,
    collect,
    export_imitation,
    fit,
    imitate,
    imitate_config_from_dict,
    load_imitate_config,
    regret_from_target,
    soft_target,
)
from agents.masks import safe_mask
from agents.planner import Planner
from agents.train import TrainResult
from envs.restore_env import RestoreEnv
from persona.errors import ConfigError, PolicyError

pytestmark = pytest.mark.slow

SMALL = "generator://mixed-v0?components=4-5"


def _policy(run: TrainResult) -> GraphPolicy:
    th.set_num_threads(1)
    pol = MaskablePPO.load(run.run_dir / "final_model.zip", device="cpu").policy
    assert isinstance(pol, GraphPolicy)
    pol.set_training_mode(False)
    return pol


def _tiny(**changes: object) -> ImitateConfig:
    base = {
        "name": "tiny-imitate",
        "scenarios": SMALL,
        "anchor_scenarios": "generator://mixed-v0?components=6-8",
        "seed": 2,
        "iterations": 2,
        "episodes": 2,
        "anchor_episodes": 1,
        "samples": 2,
        "epochs": 1,
        "batch_size": 16,
        "eval_episodes": 2,
    }
    return imitate_config_from_dict({**base, **changes})


class SafePlanner(Planner):
    """The planner choosing among the safe actions only (what the labels are)."""

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        return super().act(obs, safe_mask(obs, mask, self.ctx.config.alloc_levels))


def _assert_same_run(a_dir: Path, b_dir: Path) -> list[str]:
    """Two imitation runs ended with the same model and the same labelled states; returns
    the stored arrays' names."""
    pa = MaskablePPO.load(a_dir / "final_model.zip", device="cpu").policy.state_dict()
    pb = MaskablePPO.load(b_dir / "final_model.zip", device="cpu").policy.state_dict()
    assert all(th.equal(pa[k], pb[k]) for k in pa)
    a, b = np.load(a_dir / "data.npz"), np.load(b_dir / "data.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)
    return list(a.files)


def test_soft_target() -> None:
    actions, q = np.array([1, 4, 6]), np.array([10.0, 9.0, 9.1])
    hard = soft_target(actions, q, 8, 0.0)
    assert hard.tolist() == [0, 0, 0, 0, 1, 0, 0, 0]
    soft = soft_target(actions, q, 8, 0.25)
    assert soft.sum() == pytest.approx(1.0)
    assert np.flatnonzero(soft).tolist() == [1, 4, 6]
    assert soft[4] > soft[6] > soft[1]
    assert soft[4] / soft[6] == pytest.approx(np.exp(0.1 / 0.25))


def test_rolling_out_the_planner_is_the_planner(tiny_run: TrainResult) -> None:
    """beta = 1 executes the planner's choice at every labelled state: the episodes (and so
    the planner's bookkeeping through ``record``) must be exactly ``run_episode`` of the
    planner, and every label's mode is the action it took."""
    env = RestoreEnv(scenario=SMALL, max_components=10)
    seeds = [7, 8, 9]
    data = Dataset()
    ttrs = collect(
        env, _policy(tiny_run), seeds, data, planner=Planner(samples=3), temperature=0.0, beta=1.0
    )
    ref = [run_episode(env, SafePlanner(samples=3), s).ttr for s in seeds]
    assert ttrs == ref
    arr = data.arrays()
    assert len(data) > 0 and arr["planner"].all()
    assert np.all(arr["target"].sum(-1) == 1.0)
    assert np.all(arr["target"][~arr["mask"]] == 0.0)  # labels only ever on safe actions
    assert np.all(arr["mask"].sum(-1) > 1)  # forced moves are not labelled
    assert np.all(arr["ret"] < 0)


def test_student_rollout_labels(tiny_run: TrainResult) -> None:
    """beta = 0: the student acts; states carry the safe mask and the planner's soft target;
    anchor states carry the teacher's distribution."""
    env = RestoreEnv(scenario=SMALL, max_components=10)
    pol = _policy(tiny_run)
    data = Dataset()
    collect(env, pol, [11, 12], data, planner=Planner(samples=2), temperature=0.25)
    collect(env, pol, [13], data, teacher=pol)
    arr = data.arrays()
    assert arr["planner"].any() and not arr["planner"].all()
    assert np.allclose(arr["target"].sum(-1), 1.0, atol=1e-5)
    assert np.all(arr["target"][~arr["mask"]] == 0.0)
    levels = env.config.alloc_levels
    for i in range(len(data)):
        obs = {k: arr[k][i] for k in ("nodes", "adjacency", "node_mask", "globals")}
        assert np.all(safe_mask(obs, arr["mask"][i], levels) == arr["mask"][i])


def test_cloning_learns_the_labels(tiny_run: TrainResult) -> None:
    env = RestoreEnv(scenario=SMALL, max_components=10)
    pol = _policy(tiny_run)
    data = Dataset()
    collect(env, pol, list(range(20, 32)), data, planner=Planner(samples=2), temperature=0.0)
    arr = data.arrays()
    before = agreement(pol, arr)
    rng = np.random.default_rng(0)
    st = fit(pol, arr, 60, 32, 3e-3, 0.5, 1.0, rng)
    assert st["agreement"] > max(before, 0.9), (before, st)
    assert st["agreement"] == agreement(pol, arr)


def test_run_reproducible_and_exported(tiny_run: TrainResult, tmp_path: Path) -> None:
    from persona.restorer import OnnxRestorePolicy

    cfg = _tiny()
    a = imitate(cfg, tiny_run.run_dir, out=tmp_path / "a", log=lambda m: None)
    b = imitate(cfg, tiny_run.run_dir, out=tmp_path / "b", log=lambda m: None)
    for f in ("config.yaml", "imitate.yaml", "eval.csv", "data.npz", "final_model.zip"):
        assert (a.run_dir / f).is_file(), f
    rows = (a.run_dir / "eval.csv").read_text().splitlines()
    assert len(rows) == 1 + 1 + cfg.iterations
    pa = MaskablePPO.load(a.run_dir / "final_model.zip", device="cpu").policy.state_dict()
    pb = MaskablePPO.load(b.run_dir / "final_model.zip", device="cpu").policy.state_dict()
    p0 = _policy(tiny_run).state_dict()
    assert all(th.equal(pa[k], pb[k]) for k in pa)
    assert any(not th.equal(pa[k], p0[k]) for k in pa), "imitation changed nothing"

    onnx = export_imitation(a.run_dir, tmp_path / "imit.onnx", max_components=12)
    meta = json.loads(onnx.with_suffix(".json").read_text())
    assert meta["imitation"]["samples"] == 2 and meta["limits"]["max_components"] == 12
    restorer = OnnxRestorePolicy(onnx)
    env = RestoreEnv(scenario=SMALL, max_components=12)
    torch_pol = MaskablePPO.load(a.run_dir / "final_model.zip", device="cpu")
    from agents.train import Sb3Policy

    for seed in (40, 41):
        r1 = run_episode(env, restorer, seed)
        env10 = RestoreEnv(scenario=SMALL, max_components=10)
        r2 = run_episode(env10, Sb3Policy(torch_pol), seed)
        assert r1.ttr == pytest.approx(r2.ttr) and r1.steps == r2.steps


def test_config() -> None:
    cfg = load_imitate_config("configs/train/sim-imitate.yaml")
    assert cfg.scenarios.endswith("components=5-7") and cfg.samples >= 1
    with pytest.raises(ConfigError, match="unknown key"):
        imitate_config_from_dict({"episodez": 3})
    with pytest.raises(ConfigError):
        replace(cfg, beta=1.5)
    with pytest.raises(ConfigError):
        imitate_config_from_dict({"iterations": 0})


def test_resume_equals_one_run(tiny_run: TrainResult, tmp_path: Path) -> None:
    cfg = _tiny(anchor_episodes=0, eval_episodes=0)
    whole = imitate(cfg, tiny_run.run_dir, out=tmp_path / "w", log=lambda m: None)
    part = imitate(replace(cfg, iterations=1), tiny_run.run_dir, tmp_path / "p", lambda m: None)
    with pytest.raises(ConfigError, match="samples"):
        imitate(replace(cfg, samples=3), tiny_run.run_dir, tmp_path, lambda m: None, part.run_dir)
    res = imitate(cfg, tiny_run.run_dir, tmp_path, lambda m: None, part.run_dir)
    assert res.run_dir == part.run_dir and res.states == whole.states
    _assert_same_run(whole.run_dir, part.run_dir)
    rows = (part.run_dir / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]


def test_regret_from_target_inverts_soft_target() -> None:
    actions, q = np.array([1, 4, 6]), np.array([10.0, 9.0, 9.6])
    t = soft_target(actions, q, 8, 0.25).astype(np.float32)
    mask = np.zeros(8, dtype=bool)
    mask[actions] = True
    r = regret_from_target(t[None], mask[None], 0.25, 30.0)[0]
    assert r[actions] == pytest.approx(q - q.min(), abs=1e-4)
    assert np.all(r[~mask] == 0.0)
    far = soft_target(actions, np.array([100.0, 9.0, 9.6]), 8, 0.25).astype(np.float32)
    assert regret_from_target(far[None], mask[None], 0.25, 30.0)[0, 1] == 30.0  # underflow: cap
    with pytest.raises(ConfigError):
        regret_from_target(t[None], mask[None], 0.0, 30.0)
    old: dict[str, np.ndarray] = {
        k: np.zeros((1, 2, 2), np.float32) for k in ("nodes", "adjacency")
    }
    old |= {"node_mask": np.ones((1, 2), np.float32), "globals": np.zeros((1, 3), np.float32)}
    old |= {"mask": mask[None], "target": t[None], "ret": np.zeros(1), "planner": np.ones(1)}
    d = Dataset.from_arrays(old, 0.25, 30.0)  # data saved before regrets were stored
    assert d.arrays()["regret"][0] == pytest.approx(r)


def test_regret_loss_lowers_the_argmax_regret(tiny_run: TrainResult) -> None:
    """The stored regrets are the planner's values minus the best; the cost-sensitive fit
    drives the policy's deterministic action to (near-)zero regret on its training states."""
    env = RestoreEnv(scenario=SMALL, max_components=10)
    pol = _policy(tiny_run)
    data = Dataset()
    collect(env, pol, list(range(20, 32)), data, planner=Planner(samples=2), temperature=0.25)
    arr = data.arrays()
    pl = arr["planner"]
    assert np.all(arr["regret"][~arr["mask"]] == 0.0) and np.all(arr["regret"] >= 0)
    assert np.allclose(arr["regret"][pl].min(-1, where=arr["mask"][pl], initial=1e9), 0.0)
    before = argmax_regret(pol, arr)
    st = fit(pol, arr, 60, 32, 3e-3, 0.5, 1.0, np.random.default_rng(0), "regret", 30.0, 0.1)
    assert st["regret"] == argmax_regret(pol, arr)
    assert st["regret"] < 0.5 * before or st["regret"] < 0.05, (before, st)
    with pytest.raises(ConfigError, match="loss"):
        fit(pol, arr, 1, 32, 1e-3, 0.5, 1.0, np.random.default_rng(0), "mse")


def test_fork_continues_with_a_new_fit(tiny_run: TrainResult, tmp_path: Path) -> None:
    """A fork starts from the run's model and data, in a new folder; only fit keys may change;
    resuming a fork equals one uninterrupted fork."""
    cfg = _tiny(anchor_episodes=1, eval_episodes=0, iterations=1)
    parent = imitate(cfg, tiny_run.run_dir, out=tmp_path / "p", log=lambda m: None)
    with pytest.raises(ConfigError, match="samples"):
        imitate(
            replace(cfg, samples=3),
            tiny_run.run_dir,
            tmp_path,
            lambda m: None,
            None,
            parent.run_dir,
        )
    new = replace(cfg, iterations=3, loss="regret", learning_rate=1e-4, name="tiny-fork")
    whole = imitate(new, tiny_run.run_dir, tmp_path / "w", lambda m: None, fork=parent.run_dir)
    assert whole.run_dir != parent.run_dir and whole.states > parent.states
    meta = yaml.safe_load((whole.run_dir / "imitate.yaml").read_text())
    assert meta["loss"] == "regret" and meta["provenance"]["forked_at_round"] == 1
    rows = (whole.run_dir / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]
    assert len({r.count(",") for r in rows}) == 1
    part = imitate(
        replace(new, iterations=2),
        tiny_run.run_dir,
        tmp_path / "f",
        lambda m: None,
        fork=parent.run_dir,
    )
    res = imitate(new, tiny_run.run_dir, tmp_path, lambda m: None, part.run_dir)
    assert res.run_dir == part.run_dir and res.states == whole.states
    assert "regret" in _assert_same_run(whole.run_dir, part.run_dir)


def test_diagnose(tiny_run: TrainResult, tmp_path: Path) -> None:
    from agents.imitate import diagnose

    run = imitate(_tiny(iterations=1, eval_episodes=0), tiny_run.run_dir, tmp_path, lambda m: None)
    out = diagnose(run.run_dir, episodes=2, seed=5, log=lambda m: None)
    assert json.loads((run.run_dir / "diagnose.json").read_text()) == out
    for part in ("heldout", "train"):
        d = out[part]
        assert d["states"] > 0 and d["regret_per_decision"] >= 0 and 0 <= d["agreement"] <= 1
        total = d["regret_per_decision"] * d["states"]
        assert sum(d["by_kind_s"].values()) == pytest.approx(total, rel=1e-4, abs=1e-6)
    assert out["train"]["states"] == int(np.load(run.run_dir / "data.npz")["planner"].sum())


def test_distill_fits_a_fresh_larger_student(tiny_run: TrainResult, tmp_path: Path) -> None:
    """--distill: a fresh student of another size on a run's labelled states, episodes held
    out for early stopping (the best epoch is the model), reproducible, exportable."""
    from agents.imitate import distill, episode_ids
    from persona.restorer import OnnxRestorePolicy

    cfg = _tiny(iterations=1, episodes=4, eval_episodes=0)
    run = imitate(cfg, tiny_run.run_dir, tmp_path / "p", lambda m: None)
    arr = dict(np.load(run.run_dir / "data.npz"))
    ep = episode_ids(arr)
    assert ep[0] == 0 and np.all(np.diff(ep) >= 0) and ep.max() >= 4  # 4 labelled + 1 anchor
    big = replace(
        cfg, name="tiny-big", net={"dim": 32, "heads": 4, "layers": 3}, epochs=3, holdout=0.5
    )
    with pytest.raises(ConfigError, match="samples"):
        distill(replace(big, samples=3), run.run_dir, tmp_path, lambda m: None)
    a = distill(big, run.run_dir, tmp_path / "a", lambda m: None)
    b = distill(big, run.run_dir, tmp_path / "b", lambda m: None)
    pa = MaskablePPO.load(a.run_dir / "final_model.zip", device="cpu").policy
    pb = MaskablePPO.load(b.run_dir / "final_model.zip", device="cpu").policy
    fe = pa.features_extractor
    assert isinstance(fe, GraphExtractor) and fe.dim == 32 and len(fe.blocks) == 3
    sa, sb = pa.state_dict(), pb.state_dict()
    assert all(th.equal(sa[k], sb[k]) for k in sa)
    rows = [r.split(",") for r in (a.run_dir / "distill.csv").read_text().splitlines()[1:]]
    assert len(rows) == 3 and rows[0][-1] == "1"
    best = min(float(r[5]) for r in rows)
    assert json.loads((a.run_dir / "summary.json").read_text())["val_regret"] == pytest.approx(
        best, abs=1e-5
    )
    meta = yaml.safe_load((a.run_dir / "imitate.yaml").read_text())["provenance"]
    assert meta["states"]["train"] + meta["states"]["validation"] == len(ep)
    assert yaml.safe_load((a.run_dir / "config.yaml").read_text())["net"]["dim"] == 32
    from agents.imitate import diagnose

    out = diagnose(a.run_dir, episodes=1, seed=5, log=lambda m: None)  # the parent's states
    assert out["train"]["states"] == int(arr["planner"].sum())
    onnx = export_imitation(a.run_dir, tmp_path / "big.onnx", max_components=10)
    env = RestoreEnv(scenario=SMALL, max_components=10)
    from agents.train import Sb3Policy

    torch_pol = MaskablePPO.load(a.run_dir / "final_model.zip", device="cpu")
    r1 = run_episode(env, OnnxRestorePolicy(onnx), 40)
    r2 = run_episode(env, Sb3Policy(torch_pol), 40)
    assert r1.ttr == pytest.approx(r2.ttr) and r1.steps == r2.steps


def test_expert_iteration_in_workers_equals_one_process(
    tiny_run: TrainResult, tmp_path: Path
) -> None:
    """With the planner base ``policy`` every round exports the student and the planner rolls
    it out; labelling in two worker processes gives the same run as in one, and a fork may
    switch the bases on."""
    cfg = _tiny(anchor_episodes=1, eval_episodes=0, episodes=3, planner_bases=["policy"])
    one = imitate(cfg, tiny_run.run_dir, tmp_path / "one", lambda m: None)
    two = imitate(replace(cfg, workers=2), tiny_run.run_dir, tmp_path / "two", lambda m: None)
    assert (one.run_dir / "student.onnx").exists() and one.states > 0
    _assert_same_run(one.run_dir, two.run_dir)
    # the teacher differs from the default planner's (it rolls out the student)
    plain = imitate(
        replace(cfg, planner_bases=["critical-path"]),
        tiny_run.run_dir,
        tmp_path / "p",
        lambda m: None,
    )
    a, b = np.load(one.run_dir / "data.npz"), np.load(plain.run_dir / "data.npz")
    assert a["regret"].shape != b["regret"].shape or not np.array_equal(a["regret"], b["regret"])
    fork = imitate(
        replace(cfg, iterations=3, planner_bases=["informed", "policy"], workers=2),
        tiny_run.run_dir,
        tmp_path / "f",
        lambda m: None,
        fork=plain.run_dir,
    )
    assert fork.states > plain.states
    with pytest.raises(ConfigError, match="planner_bases"):
        _tiny(planner_bases=["oracle"])


def test_planner_policy_base_needs_a_policy() -> None:
    with pytest.raises(PolicyError, match="policy"):
        Planner(bases=("informed", "policy"))
    with pytest.raises(PolicyError, match="policy"):
        Planner(bases=("informed",), policy=object())


def test_fork_of_a_distilled_run_continues_its_source_rounds(
    tiny_run: TrainResult, tmp_path: Path
) -> None:
    """A distilled student (here with the allocation head) goes on with DAgger rounds: the
    fork starts from its model and its source run's states and rounds, keeps its net."""
    from agents.imitate import distill

    cfg = _tiny(iterations=1, episodes=3, eval_episodes=0)
    src = imitate(cfg, tiny_run.run_dir, tmp_path / "s", lambda m: None)
    net = {"dim": 16, "heads": 2, "layers": 1, "alloc_head": True}
    dcfg = replace(cfg, name="tiny-alloc", net=net, epochs=2, holdout=0.5)
    student = distill(dcfg, src.run_dir, tmp_path / "d", lambda m: None)
    fork = imitate(
        replace(dcfg, iterations=2, planner_bases=["informed", "policy"]),
        tiny_run.run_dir,
        tmp_path / "f",
        lambda m: None,
        fork=student.run_dir,
    )
    assert fork.states > src.states
    rows = (fork.run_dir / "eval.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]
    pol = MaskablePPO.load(fork.run_dir / "final_model.zip", device="cpu").policy
    assert pol.features_extractor.n_alloc > 0
    assert yaml.safe_load((fork.run_dir / "config.yaml").read_text())["net"]["alloc_head"]
    with pytest.raises(ConfigError, match="net"):
        imitate(
            replace(dcfg, net=None, iterations=2),
            tiny_run.run_dir,
            tmp_path,
            print,
            fork=student.run_dir,
        )

"""The graph policy: shapes, padding invariance, equivariance under component reordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from agents.extractor import GraphExtractor, PointerHead
from envs.restore_env import RestoreEnv


def _net(
    n_max: int, seed: int = 0, alloc_head: bool = False
) -> tuple[GraphExtractor, PointerHead, RestoreEnv]:
    th.manual_seed(seed)
    env = RestoreEnv("generator://mixed-v0?components=5-8", max_components=n_max)
    fe = GraphExtractor(
        env.observation_space, dim=16, heads=2, layers=2, alloc_head=alloc_head
    ).eval()
    head = PointerHead(n_max, 16, env.config.n_levels, fe.n_alloc).eval()
    # the head starts near zero (orthogonal gain 0.01): give it real weights for the checks
    for p in head.parameters():
        th.nn.init.normal_(p, std=0.5)
    return fe, head, env


def _logits(fe: GraphExtractor, head: PointerHead, obs: dict[str, np.ndarray]) -> np.ndarray:
    t = {k: th.as_tensor(v)[None] for k, v in obs.items()}
    with th.no_grad():
        return head(fe(t))[0].numpy()


def test_output_shape_and_finite() -> None:
    fe, head, env = _net(12)
    obs, _ = env.reset(seed=1)
    lg = _logits(fe, head, obs)
    assert fe.features_dim == 12 * 16 + 2 * 16
    assert lg.shape == (env.action_space.n,)
    assert np.isfinite(lg).all()


@pytest.mark.parametrize("alloc_head", [False, True])
def test_padding_does_not_change_real_components(alloc_head: bool) -> None:
    """Padded slots carry garbage-free zeros; the real nodes' logits ignore them entirely."""
    fe, head, env = _net(12, alloc_head=alloc_head)
    obs, _ = env.reset(seed=2)
    n = int(obs["node_mask"].sum())
    noisy = {k: v.copy() for k, v in obs.items()}
    noisy["nodes"][n:] = 7.0  # garbage in padded rows must not leak into real ones
    a, b = _logits(fe, head, obs), _logits(fe, head, noisy)
    L = env.config.n_levels
    np.testing.assert_allclose(a[: n * L], b[: n * L], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a[-1], b[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("alloc_head", [False, True])
def test_permuting_components_permutes_their_logits(alloc_head: bool) -> None:
    fe, head, env = _net(10, alloc_head=alloc_head)
    obs, _ = env.reset(seed=3)
    n = int(obs["node_mask"].sum())
    rng = np.random.default_rng(0)
    perm = np.arange(10)
    perm[:n] = rng.permutation(n)
    p_obs = {
        "nodes": obs["nodes"][perm],
        "adjacency": obs["adjacency"][np.ix_(perm, perm)],
        "node_mask": obs["node_mask"][perm],
        "globals": obs["globals"],
    }
    L = env.config.n_levels
    a = _logits(fe, head, obs)[:-1].reshape(10, L)
    b = _logits(fe, head, p_obs)[:-1].reshape(10, L)
    np.testing.assert_allclose(b[:n], a[perm[:n]], rtol=1e-4, atol=1e-5)


def test_bad_heads_rejected() -> None:
    env = RestoreEnv(max_components=24)
    with pytest.raises(ValueError, match="multiple of heads"):
        GraphExtractor(env.observation_space, dim=10, heads=4)


def test_safe_mask_numpy_and_torch_agree_and_never_overcommit() -> None:
    from agents.masks import SafeAllocation, safe_mask, safe_mask_torch
    from envs import layout

    levels = (0.8, 1.2, 1.8)
    env = SafeAllocation(RestoreEnv("generator://mixed-v0?components=5-16", max_components=16))
    rng = np.random.default_rng(1)
    removed = 0
    for seed in range(30):
        obs, _ = env.reset(seed=seed)
        while True:
            raw = env.unwrapped.action_masks()
            m = env.action_masks()
            assert not (m & ~raw).any()  # only ever removes actions
            removed += int(raw.sum() - m.sum())
            t = {k: th.as_tensor(v)[None] for k, v in obs.items()}
            mt = safe_mask_torch(t["nodes"], t["globals"], th.as_tensor(raw)[None], levels)
            np.testing.assert_array_equal(mt[0].numpy(), m)
            np.testing.assert_array_equal(safe_mask(obs, raw, levels), m)
            a = int(rng.choice(np.flatnonzero(m)))
            i, lv = divmod(a, 3)
            proc = i < 16 and obs["nodes"][i, layout.COL["kind_process"]] > 0.5
            before = float(obs["globals"][layout.GCOL["alloc_frac"]])
            obs, _, term, trunc, _ = env.step(a)
            if proc and lv > 0:  # started above level 0: it fitted in the free cores
                assert float(obs["globals"][layout.GCOL["alloc_frac"]]) <= 1.0 + 1e-5
                assert before <= 1.0 + 1e-5
            if term or trunc:
                break
    assert removed > 0


def test_alloc_features_are_the_allocation_arithmetic() -> None:
    """A hand-made host: 1 core free of 4 (alloc_frac 0.75); two pending processes with peaks
    of 0.25 and 0.5 host cores, one done process, one pending non-process."""
    from agents.extractor import alloc_features
    from envs import layout

    C, G = layout.COL, layout.GCOL
    nodes = th.zeros(1, 5, len(layout.NODE_FEATURES))
    g = th.zeros(1, len(layout.GLOBAL_FEATURES))
    g[0, G["alloc_frac"]] = 0.75
    for i, (peak, proc, status) in enumerate(
        [(0.25, 1, "pending"), (0.5, 1, "pending"), (0.3, 1, "done"), (0.0, 0, "pending")]
    ):
        nodes[0, i, C["peak_frac"]] = peak
        nodes[0, i, C["kind_process"]] = proc
        nodes[0, i, C[status]] = 1.0
    mask = th.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    mult = th.tensor([0.8, 1.2, 1.8])
    a = alloc_features(nodes, g, mask, mult)
    assert a.shape == (1, 5, 3, 7)
    # component 0 at level 1: takes 0.3, leaves 0.25 - 0.3 = -0.05; the other pending
    # process (0.5) at levels 0..2 takes 0.4, 0.6, 0.9 more
    np.testing.assert_allclose(
        a[0, 0, 1].numpy(), [0.3, -0.05, -0.45, -0.65, -0.95, 0.0, 0.0], atol=1e-6
    )
    # component 1 at level 0: 0.4 of 0.25 free; the other pending one takes 0.2, 0.3, 0.45
    np.testing.assert_allclose(
        a[0, 1, 0].numpy(), [0.4, -0.15, -0.35, -0.45, -0.6, 0.0, 0.0], atol=1e-6
    )
    # a non-process takes nothing: everything left for the two pending processes
    np.testing.assert_allclose(
        a[0, 3, 0].numpy(), [0.0, 0.25, -0.35, -0.65, -1.1, 1.0, 0.0], atol=1e-6
    )
    assert float(a[0, 4, :, 0].abs().sum()) == 0.0  # padding takes nothing (and is masked)

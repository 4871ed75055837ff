"""Safe allocation: never promise a restored process more CPU than the host has left.

The simulator lets a policy over-commit the host's cores; validation then scales every
allocation down (``envs.sim.core.effective_alloc``) and processes whose true demand needs
their full allocation fail the performance check, which raising their level cannot fix.
Over-commitment is rare in the training family, so a learner sees it too seldom to learn
to avoid it, and each occurrence costs a whole failed restore (TTR = ``max_time_s``).

:func:`safe_mask` removes, from the env's action mask, the levels > 0 of a process whose
allocation (``alloc_levels[l] x captured peak``) exceeds the share of cores not yet
allocated; level 0 always stays (as in the heuristics' ``peak_level``). It is a pure
function of the observation, applied the same way in training (:class:`SafeAllocation`,
an env wrapper whose ``action_masks()`` MaskablePPO uses), in evaluation, and inside the
exported ONNX graph (:func:`safe_mask_torch`), so the restorer needs nothing extra.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs import layout

EPS = 1e-6
_PEAK = layout.COL["peak_frac"]
_PROC = layout.COL["kind_process"]
_ALLOC = layout.GCOL["alloc_frac"]


def safe_mask(
    obs: dict[str, np.ndarray], mask: np.ndarray, alloc_levels: tuple[float, ...]
) -> np.ndarray:
    """``mask`` without process allocations that would over-commit the host (float32 math)."""
    nodes, g = obs["nodes"], obs["globals"]
    levels = np.asarray(alloc_levels, dtype=np.float32)
    free = np.float32(1.0) - g[..., _ALLOC].astype(np.float32)
    need = nodes[..., _PEAK, None].astype(np.float32) * levels  # (..., N, L)
    ok = need <= free[..., None, None] + np.float32(EPS)
    ok |= nodes[..., _PROC, None] < 0.5
    ok[..., 0] = True
    flat = ok.reshape(*ok.shape[:-2], -1)
    full = np.concatenate([flat, np.ones((*flat.shape[:-1], 1), dtype=bool)], axis=-1)
    return np.asarray(mask, dtype=bool) & full


def safe_mask_torch(nodes: Any, globals_: Any, mask: Any, alloc_levels: tuple[float, ...]) -> Any:
    """The same as :func:`safe_mask` on batched torch tensors (ONNX-exportable)."""
    import torch as th

    b = nodes.shape[0]
    levels = th.tensor(alloc_levels, dtype=th.float32)
    free = 1.0 - globals_[:, _ALLOC]
    need = nodes[:, :, _PEAK].unsqueeze(-1) * levels  # (B, N, L)
    ok = need <= free.reshape(b, 1, 1) + EPS
    ok = ok | (nodes[:, :, _PROC] < 0.5).unsqueeze(-1)
    first = th.zeros_like(ok)
    first[:, :, 0] = True
    ok = ok | first
    full = th.cat([ok.reshape(b, -1), th.ones_like(mask[:, :1])], dim=-1)
    return mask & full


class SafeAllocation(gym.Wrapper[dict[str, np.ndarray], np.int64, dict[str, np.ndarray], np.int64]):
    """``action_masks()`` of the wrapped RestoreEnv, refined by :func:`safe_mask`."""

    def __init__(self, env: gym.Env[dict[str, np.ndarray], np.int64]) -> None:
        super().__init__(env)
        self._obs: dict[str, np.ndarray] | None = None

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, r, term, trunc, info = self.env.step(action)
        self._obs = obs
        return obs, float(r), term, trunc, info

    def action_masks(self) -> np.ndarray:
        assert self._obs is not None, "call reset() first"
        base = self.env.unwrapped.action_masks()  # type: ignore[attr-defined]
        levels = self.env.unwrapped.config.alloc_levels  # type: ignore[attr-defined]
        return safe_mask(self._obs, base, levels)

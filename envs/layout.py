"""Observation layout of ``persona/Restore-v0``: one named column per feature.

Shared by the env (which fills it), the heuristics (which read columns by name) and the
policy export sidecar (which records it), so the meaning of every number is defined once.
All features are finite and >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.sim.core import DONE, PENDING, RUNNING, SimState, startable
from envs.sim.params import EpisodeParams
from persona.model import KINDS, ROLES

OBS_HIGH = 1000.0

STATIC_NODE = (
    *(f"kind_{k.value}" for k in KINDS),
    *(f"role_{r}" for r in ROLES),
    "log_size",  # log1p(size MB) / 10
    "nominal_s",  # expected uncontended duration at the middle level / 60 s
    "critical_path_s",  # nominal duration of the longest path from here to a sink / 120 s
    "usage_frac",  # captured mean CPU / host cores
    "peak_frac",  # captured peak CPU / host cores
    "peak_ratio",  # captured peak / mean (processes), / 4
    "n_parents",  # hard parents / 8
    "n_children",  # hard children / 8
)
DYNAMIC_NODE = (
    "pending",
    "running",
    "done",
    "backoff",  # pending but waiting for a retry back-off
    "ready",  # may start now
    "remaining",  # fraction of the running attempt left
    "level",  # (allocation level + 1) / levels; 0 when never started
    "attempts",  # failed attempts / max_attempts
    "alloc_frac",  # allocated cores / host cores
)
NODE_FEATURES = STATIC_NODE + DYNAMIC_NODE
GLOBAL_FEATURES = (
    "time_frac",  # t / max_time
    "running_frac",  # running / slots
    "free_slots_frac",
    "alloc_frac",  # sum of allocations / host cores
    "peak_load_frac",  # captured aggregate peak / host cores
    "done_frac",
    "pending_frac",
    "failures",  # failed attempts so far / n
    "n_frac",  # n / n_max
    "slots",  # slots / 8
    "cpu_cores",  # host cores / 32
    "io_mb_s",  # host I/O MB/s / 1000
)
COL = {name: i for i, name in enumerate(NODE_FEATURES)}
assert [COL[c] - len(STATIC_NODE) for c in DYNAMIC_NODE] == list(range(9))  # observe() relies on it
assert (COL["running"], COL["done"]) == (COL["pending"] + RUNNING, COL["pending"] + DONE)
_STATUS = slice(COL["pending"], COL["pending"] + 3)
_ONE_HOT = np.eye(3, dtype=np.float32)
GCOL = {name: i for i, name in enumerate(GLOBAL_FEATURES)}
N_STATIC = len(STATIC_NODE)


def critical_path(p: EpisodeParams) -> np.ndarray:
    """Nominal duration of the longest hard-dependency path from each node to a sink."""
    nominal = p.nominal_s.tolist()
    cp = list(nominal)
    children: list[list[int]] = [[] for _ in range(p.n)]
    for i, j in zip(*np.nonzero(p.parents), strict=True):
        children[int(j)].append(int(i))
    for i in reversed(p.scenario.manifest.topological_indices()):
        if children[i]:
            cp[i] = nominal[i] + max(cp[c] for c in children[i])
    return np.array(cp)


@dataclass(frozen=True)
class StaticObs:
    """The parts of an observation that do not change within an episode."""

    nodes: np.ndarray  # float32 [n_max, F], static columns filled
    adjacency: np.ndarray  # float32 [n_max, n_max]
    node_mask: np.ndarray  # float32 [n_max]
    dyn_scale: np.ndarray  # float [4]: remaining, level, attempts, alloc -> feature
    dyn_offset: np.ndarray  # float [4]


def static_obs(p: EpisodeParams, n_max: int) -> StaticObs:
    n = p.n
    c = p.host.cpu_cores
    nodes = np.zeros((n_max, len(NODE_FEATURES)), dtype=np.float32)
    nodes[np.arange(n), p.kind] = 1.0
    nodes[np.arange(n), len(KINDS) + p.role] = 1.0
    nodes[:n, COL["log_size"]] = np.log1p(p.size_mb) / 10.0
    nodes[:n, COL["nominal_s"]] = p.nominal_s / 60.0
    nodes[:n, COL["critical_path_s"]] = critical_path(p) / 120.0
    nodes[:n, COL["usage_frac"]] = p.usage / c
    nodes[:n, COL["peak_frac"]] = p.peak / c
    nodes[:n, COL["peak_ratio"]] = (
        np.where(p.is_process, p.peak / np.maximum(p.usage, 1e-6), 0.0) / 4.0
    )
    nodes[:n, COL["n_parents"]] = p.parents.sum(axis=1) / 8.0
    nodes[:n, COL["n_children"]] = p.parents.sum(axis=0) / 8.0
    np.minimum(nodes, OBS_HIGH, out=nodes)
    adj = np.zeros((n_max, n_max), dtype=np.float32)
    adj[:n, :n] = p.parents
    mask = np.zeros(n_max, dtype=np.float32)
    mask[:n] = 1.0
    cfg = p.config
    scale = np.array([1.0, 1.0 / cfg.n_levels, 1.0 / cfg.max_attempts, 1.0 / c])
    offset = np.array([0.0, 1.0 / cfg.n_levels, 0.0, 0.0])
    return StaticObs(nodes, adj, mask, scale, offset)


def observe(p: EpisodeParams, s: SimState, st: StaticObs) -> dict[str, np.ndarray]:
    """The observation dict for state ``s`` (pure; copies the static part)."""
    n = p.n
    cfg = p.config
    nodes = st.nodes.copy()
    dyn = nodes[:n, N_STATIC:]  # a view: the dynamic columns, in DYNAMIC_NODE order
    dyn[:, :3] = _ONE_HOT[s.status]  # pending, running, done
    if s.backoff:
        dyn[:, 3] = (s.status == PENDING) & (s.ready_at > s.t)
    dyn[:, 4] = startable(p, s)
    # remaining (0 unless running), (level + 1) / L, attempts / R, alloc / cores: one affine map
    dyn[:, 5:9] = (
        np.array((s.remaining, s.level, s.attempts, s.alloc)).T * st.dyn_scale + st.dyn_offset
    )
    c = p.host.cpu_cores
    n_run = float(s.n_running)
    counts = np.bincount(s.status, minlength=3)
    g = np.array(
        [
            s.t / cfg.max_time_s,
            n_run / p.host.slots,
            (p.host.slots - n_run) / p.host.slots,
            float(s.alloc.sum()) / c,
            p.peak_load / c,
            counts[DONE] / n,
            counts[PENDING] / n,
            s.n_failures / n,
            n / st.node_mask.shape[0],
            p.host.slots / 8.0,
            c / 32.0,
            p.host.io_mb_s / 1000.0,
        ],
        dtype=np.float32,
    )
    np.minimum(g, OBS_HIGH, out=g)
    return {
        "nodes": nodes,
        "adjacency": st.adjacency.copy(),
        "node_mask": st.node_mask.copy(),
        "globals": g,
    }

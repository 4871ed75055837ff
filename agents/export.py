"""Export a trained run to ONNX + a JSON sidecar for :mod:`persona.restorer`.

The ONNX graph takes the observation arrays and the action mask (batch first)::

    nodes (B, N, F) float32, adjacency (B, N, N) float32, node_mask (B, N) float32,
    globals (B, G) float32, action_mask (B, N*L+1) bool

and returns ``action`` (B,) int64 - the argmax of the masked logits, i.e. what SB3's
``predict(obs, deterministic=True, action_masks=mask)`` picks - and the raw ``logits``
(B, N*L+1) float32. The sidecar records the observation layout (``envs.layout``), the
allocation levels, the scenario limits the policy was trained for, and provenance.
"""

from __future__ import annotations

import copy
import hashlib
import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch as th
import yaml
from sb3_contrib import MaskablePPO
from torch import nn

from agents.extractor import GraphExtractor, GraphPolicy, PointerHead
from agents.masks import safe_mask_torch
from agents.train import load_run_config
from envs import layout
from envs.scenarios import resolve
from envs.sim.params import SimConfig
from persona.errors import PolicyError
from persona.model import atomic_write_text

SIDECAR_FORMAT = "persona-restore-policy/v1"
INPUTS = ("nodes", "adjacency", "node_mask", "globals", "action_mask")
OUTPUTS = ("action", "logits")
MASKED_LOGIT = -1e8  # what sb3-contrib's MaskableCategorical puts on invalid actions
OPSET = 17


class OnnxablePolicy(nn.Module):
    """The deterministic masked policy of a :class:`GraphPolicy` as one traceable module.

    ``max_components`` re-pads the policy: the graph network's weights do not depend on the
    padding size, padded slots never reach real components (masked attention, masked
    pooling, zero adjacency), and the one global that does (``n_frac = n / N``) is rescaled
    to the training padding - so a policy trained at N=16 runs exactly as trained on
    personas of up to 16 components padded to 24, and can be tried on larger ones.
    """

    globals_scale: th.Tensor

    def __init__(
        self, policy: GraphPolicy, max_components: int | None = None, safe_allocation: bool = True
    ) -> None:
        super().__init__()
        fe = policy.features_extractor
        assert isinstance(fe, GraphExtractor)
        head = policy.action_net
        assert isinstance(head, PointerHead)
        self.extractor = fe
        self.mlp = policy.mlp_extractor
        n_train = fe.n
        n = max_components or n_train
        self.head = copy.deepcopy(head)
        self.head.n = n
        scale = th.ones(len(layout.GLOBAL_FEATURES))
        scale[layout.GCOL["n_frac"]] = n / n_train
        self.register_buffer("globals_scale", scale)
        self.safe = safe_allocation
        self.alloc_levels = SimConfig().alloc_levels

    def forward(
        self,
        nodes: th.Tensor,
        adjacency: th.Tensor,
        node_mask: th.Tensor,
        globals_: th.Tensor,
        action_mask: th.Tensor,
    ) -> tuple[th.Tensor, th.Tensor]:
        g = globals_ * self.globals_scale
        obs = {"nodes": nodes, "adjacency": adjacency, "node_mask": node_mask, "globals": g}
        latent = self.mlp.forward_actor(self.extractor(obs))
        logits = self.head(latent)
        if self.safe:
            action_mask = safe_mask_torch(nodes, globals_, action_mask, self.alloc_levels)
        masked = th.where(action_mask, logits, th.full_like(logits, MASKED_LOGIT))
        return th.argmax(masked, dim=-1), logits


def find_model(run: Path) -> Path:
    """``final_model.zip`` of a run folder (or the given .zip)."""
    if run.is_file():
        return run
    for name in ("final_model.zip", "best_model.zip"):
        if (run / name).exists():
            return run / name
    raise PolicyError(f"{run} has no final_model.zip; train it first (persona train)")


def load_model(path: Path) -> MaskablePPO:
    try:
        return MaskablePPO.load(path, device="cpu")
    except (OSError, ValueError, KeyError) as e:
        raise PolicyError(f"cannot load a MaskablePPO model from {path}: {e}") from e


def export_onnx(
    model: MaskablePPO, out: Path, max_components: int | None = None, safe_allocation: bool = True
) -> int:
    """Write the ONNX graph; returns the padding size N it takes."""
    policy = model.policy
    if not isinstance(policy, GraphPolicy):
        raise PolicyError(f"only GraphPolicy models can be exported, got {type(policy).__name__}")
    fe = policy.features_extractor
    assert isinstance(fe, GraphExtractor)
    policy.set_training_mode(False)
    n = max_components or fe.n
    if n < fe.n:
        raise PolicyError(
            f"cannot export for {n} components: the policy was trained padded to {fe.n}"
        )
    levels = (int(model.action_space.n) - 1) // fe.n  # type: ignore[attr-defined]
    F, G = len(layout.NODE_FEATURES), len(layout.GLOBAL_FEATURES)
    dummy = (th.zeros(1, n, F), th.zeros(1, n, n), th.zeros(1, n), th.zeros(1, G))
    mask = th.ones((1, n * levels + 1), dtype=th.bool)
    module = OnnxablePolicy(policy, n, safe_allocation).eval()
    batch = {name: {0: "batch"} for name in (*INPUTS, *OUTPUTS)}
    out.parent.mkdir(parents=True, exist_ok=True)
    with th.no_grad(), warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # the TorchScript exporter: pinned torch
        th.onnx.export(
            module,
            (*dummy, mask),
            str(out),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=batch,
            opset_version=OPSET,
            dynamo=False,
        )
    return n


def sidecar(
    run: Path | None, model: MaskablePPO, onnx_path: Path, n: int, safe_allocation: bool
) -> dict[str, Any]:
    space = model.observation_space
    sim = SimConfig()
    levels = sim.n_levels
    train_cfg: dict[str, Any] = {}
    provenance: dict[str, Any] = {}
    limits: dict[str, Any] = {
        "max_components": n,
        "trained_padding": int(space["nodes"].shape[0]),  # type: ignore[index]
    }
    if run is not None and run.is_dir() and (run / "config.yaml").exists():
        full = yaml.safe_load((run / "config.yaml").read_text())
        provenance = dict(full.pop("provenance", {}))
        cfg = load_run_config(run)
        train_cfg = cfg.to_dict()
        src = resolve(cfg.scenarios)
        limits["trained_scenarios"] = cfg.scenarios
        limits["trained_max_components"] = src.max_components
        provenance["run"] = run.name
        provenance["timesteps"] = int(model.num_timesteps)
        if (run / "summary.json").exists():
            provenance["summary"] = json.loads((run / "summary.json").read_text())
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    return {
        "format": SIDECAR_FORMAT,
        "onnx_sha256": digest,
        "inputs": {
            "nodes": [None, n, len(layout.NODE_FEATURES)],
            "adjacency": [None, n, n],
            "node_mask": [None, n],
            "globals": [None, len(layout.GLOBAL_FEATURES)],
            "action_mask": [None, n * levels + 1],
        },
        "outputs": list(OUTPUTS),
        "observation": {
            "max_components": n,
            "node_features": list(layout.NODE_FEATURES),
            "global_features": list(layout.GLOBAL_FEATURES),
            "obs_high": layout.OBS_HIGH,
        },
        "actions": {
            "encoding": "component * levels + level; the last action waits for the next event",
            "levels": levels,
            "wait_action": n * levels,
            "alloc_levels": list(sim.alloc_levels),
            "restore_cores": list(sim.restore_cores),
            # the graph removes allocations that over-commit the host (agents.masks.safe_mask)
            "safe_allocation": safe_allocation,
        },
        "sim_config": {k: v for k, v in asdict(sim).items() if k not in ("kind_models",)},
        "limits": limits,
        "training": train_cfg,
        "provenance": provenance,
    }


def export_run(
    run: str | Path, out: str | Path, max_components: int | None = None
) -> tuple[Path, Path]:
    """Write ``out`` (.onnx) and ``out`` with suffix ``.json`` (the sidecar).

    ``max_components``: the padding size the exported policy takes (default: as trained).
    """
    run_p, out_p = Path(run), Path(out)
    if out_p.suffix != ".onnx":
        raise PolicyError(f"--out must end in .onnx, got {out_p}")
    model = load_model(find_model(run_p))
    run_dir = run_p if run_p.is_dir() else None
    safe = load_run_config(run_p).safe_allocation if run_dir is not None else True
    n = export_onnx(model, out_p, max_components, safe)
    meta = sidecar(run_dir, model, out_p, n, safe)
    side = out_p.with_suffix(".json")
    atomic_write_text(side, json.dumps(meta, indent=2) + "\n")
    return out_p, side

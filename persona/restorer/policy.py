"""An exported restore policy (ONNX + JSON sidecar), run with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from envs import layout
from persona.errors import PolicyError

SIDECAR_FORMAT = "persona-restore-policy/v1"
OBS_KEYS = ("nodes", "adjacency", "node_mask", "globals")


def load_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The JSON sidecar next to ``onnx_path``, checked against this build's layout."""
    side = Path(onnx_path).with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
    except OSError as e:
        raise PolicyError(f"cannot read the policy sidecar {side}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise PolicyError(f"{side}: not valid JSON ({e.msg})") from e
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise PolicyError(f"{side}: not a {SIDECAR_FORMAT} sidecar; re-export with persona export")
    obs = meta.get("observation", {})
    if list(obs.get("node_features", [])) != list(layout.NODE_FEATURES) or list(
        obs.get("global_features", [])
    ) != list(layout.GLOBAL_FEATURES):
        raise PolicyError(
            f"{side}: the policy was trained on another observation layout than this build's "
            "envs.layout; retrain or use a matching persona version"
        )
    return meta


class OnnxRestorePolicy:
    """A learned restore policy behind the :class:`agents.baselines.Policy` protocol."""

    def __init__(self, path: str | Path, name: str | None = None, threads: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.exists():
            raise PolicyError(f"policy file {self.path} does not exist")
        self.meta = load_sidecar(self.path)
        self.name = name or str(path)
        self.max_components = int(self.meta["observation"]["max_components"])
        self.levels = int(self.meta["actions"]["levels"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own non-exported exception types
            raise PolicyError(f"onnxruntime cannot load {self.path}: {e}") from e

    # batch API -----------------------------------------------------------------------
    def run(self, obs: dict[str, np.ndarray], masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Actions (B,) and logits (B, A) for a batch of observations and masks."""
        feeds: dict[str, np.ndarray] = {
            k: np.ascontiguousarray(obs[k], dtype=np.float32) for k in OBS_KEYS
        }
        feeds["action_mask"] = np.ascontiguousarray(masks, dtype=bool)
        action, logits = self.session.run(["action", "logits"], feeds)
        return np.asarray(action, dtype=np.int64), np.asarray(logits)

    # Policy protocol -----------------------------------------------------------------
    def begin_episode(self, ctx: Any, seed: int) -> None:
        if getattr(ctx, "n_max", self.max_components) != self.max_components:
            raise PolicyError(
                f"{self.path} was exported for max_components={self.max_components}, "
                f"the environment pads to {ctx.n_max}; use --max-components {self.max_components}"
            )

    def act(self, obs: dict[str, np.ndarray], mask: np.ndarray) -> int:
        batch = {k: obs[k][None] for k in OBS_KEYS}
        action, _ = self.run(batch, mask[None])
        return int(action[0])

    def end_episode(self, info: dict[str, Any]) -> None:
        pass

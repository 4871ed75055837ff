"""Simulator calibration from measured restore steps (pure).

A measured step is ``{"kind": <component kind>, "seconds": <duration>}`` (plus anything else,
ignored), as written by ``persona vm roundtrip --json`` (``apply_steps``). Per kind, the
duration of a step is modelled as log-normal and independent of size (the VM's restore steps
are dominated by fixed costs: an ``insmod``, a CRIU start-up in the guest, a round trip over
the agent channel): ``cpu_base_s`` is the geometric mean, ``sigma`` the standard deviation of
the log-durations, and the work is serial and moves no data. Kinds without measurements keep
the model they had.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from envs.sim.params import DEFAULT_KIND_MODELS, KindModel
from persona.errors import ScenarioError
from persona.model import ComponentKind

MIN_SIGMA = 0.05


def fit_kind_models(
    steps: Iterable[Mapping[str, Any]],
    base: Mapping[ComponentKind, KindModel] = DEFAULT_KIND_MODELS,
) -> dict[ComponentKind, KindModel]:
    """Per-kind duration models fitted to measured steps (see the module docstring)."""
    logs: dict[ComponentKind, list[float]] = {}
    for i, s in enumerate(steps):
        try:
            kind = ComponentKind(s["kind"])
            sec = float(s["seconds"])
        except (KeyError, ValueError, TypeError) as e:
            raise ScenarioError(f"measured step {i} needs a known 'kind' and 'seconds': {e}") from e
        if not sec > 0 or not math.isfinite(sec):
            raise ScenarioError(f"measured step {i} has a non-positive duration {sec!r}")
        logs.setdefault(kind, []).append(math.log(sec))
    out = dict(base)
    for kind, xs in logs.items():
        mean = sum(xs) / len(xs)
        sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
        out[kind] = KindModel(
            cpu_base_s=round(math.exp(mean), 6),
            cpu_mb_per_core_s=1e9,  # size-independent
            io_factor=0.0,
            serial=1.0,
            sigma=round(max(sd, MIN_SIGMA), 6),
        )
    return out


def dump_kind_models(models: Mapping[ComponentKind, KindModel], source: str) -> str:
    body = {
        "source": source,
        "kind_models": {
            k.value: asdict(m) for k, m in sorted(models.items(), key=lambda kv: kv[0].value)
        },
    }
    return yaml.safe_dump(body, sort_keys=False)


def load_kind_models(path: str | Path) -> dict[ComponentKind, KindModel]:
    p = Path(path)
    try:
        obj = yaml.safe_load(p.read_text())
        raw = obj["kind_models"]
        return {ComponentKind(k): KindModel(**v) for k, v in raw.items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ScenarioError(f"cannot read calibrated kind models from {p}: {e}") from e

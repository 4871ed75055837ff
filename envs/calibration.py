"""Simulator calibration from measured restore steps (pure: data in, models out).

Two sources: the VM round trips below, and live episode traces (``persona calibrate``,
:func:`calibrate_live`), further down.


A measured step is ``{"kind": <component kind>, "seconds": <duration>}`` (plus anything else,
ignored), as written by ``persona vm roundtrip --json`` (``apply_steps``). Per kind, the
duration of a step is modelled as log-normal and independent of size (the VM's restore steps
are dominated by fixed costs: an ``insmod``, a CRIU start-up in the guest, a round trip over
the agent channel): ``cpu_base_s`` is the geometric mean, ``sigma`` the standard deviation of
the log-durations, and the work is serial and moves no data. Kinds without measurements keep
the model they had.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from envs.sim.params import DEFAULT_KIND_MODELS, MB, KindModel, SimConfig
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


# ---------------------------------------------------------------------------------------
# live traces (``persona calibrate``)

LIVE_TRACE_FORMAT = "persona-live-episode/v1"
DEMAND_MU_GRID = np.linspace(-1.5, 1.0, 51)
DEMAND_SD_GRID = np.array([0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0])
UNLIMITED_DEMAND = (-3.0, 0.01)  # a process restored without a CPU limit is never starved


def load_traces(folder: str | Path) -> list[dict[str, Any]]:
    """Every live episode trace (``*.json`` of :data:`LIVE_TRACE_FORMAT`) under ``folder``."""
    d = Path(folder)
    if not d.is_dir():
        raise ScenarioError(f"trace folder {d} does not exist; run live episodes with a trace dir")
    out = []
    for p in sorted(d.rglob("*.json")):
        try:
            obj = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ScenarioError(f"{p}: not a readable JSON trace ({e})") from e
        if isinstance(obj, dict) and obj.get("format") == LIVE_TRACE_FORMAT:
            obj["_path"] = str(p)
            out.append(obj)
    if not out:
        raise ScenarioError(
            f"no live episode traces ({LIVE_TRACE_FORMAT}) under {d}; write some with "
            "persona eval --backend live --trace-dir DIR"
        )
    return out


def step_cores(step: Mapping[str, Any], config: SimConfig) -> float:
    """The CPU the simulator gives a step: a process's allocation, else the level's restore
    cores (the simulator's own asks, floored at 0.05 like its event loop)."""
    if step["kind"] == ComponentKind.PROCESS.value:
        return max(float(step["sim_alloc"]), 0.05)
    return max(config.restore_cores[int(step["level"])], 0.05)


def fit_live_kind_models(
    steps: Iterable[Mapping[str, Any]],
    config: SimConfig,
    base: Mapping[ComponentKind, KindModel] = DEFAULT_KIND_MODELS,
) -> tuple[dict[ComponentKind, KindModel], dict[str, Any]]:
    """Per kind: ``seconds = fixed_s + size_MB * fixed_s_per_mb + (cpu_base_s + size_MB /
    cpu_mb_per_core_s) / min(c, 1)`` (``serial = 1``: one restore runs at a time on the live
    host; ``c`` the simulator's CPU for the step, so only time that really shrinks with the
    allocation lands in the CPU terms) fitted by non-negative least squares; ``sigma`` is the
    standard deviation of log(measured / fitted). Returns the models and fit statistics."""
    rows: dict[ComponentKind, list[tuple[float, float, float]]] = {}
    for k, s in enumerate(steps):
        if s.get("outcome") != "ok":
            continue
        try:
            kind = ComponentKind(s["kind"])
            sec = float(s["seconds"])
            size = float(s["size_bytes"]) / MB
            g = 1.0 / min(step_cores(s, config), 1.0)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise ScenarioError(f"trace step {k} lacks kind/seconds/size/level: {e}") from e
        if sec > 0 and math.isfinite(sec):
            rows.setdefault(kind, []).append((sec, size, g))
    out = dict(base)
    stats: dict[str, Any] = {}
    for kind, rs in sorted(rows.items(), key=lambda kv: kv[0].value):
        y = np.array([r[0] for r in rs])
        a = np.array([[1.0, r[1], r[2], r[1] * r[2]] for r in rs])
        # too few to separate the terms: a constant
        _, out[kind], stats[kind.value] = _fit_step_model(y, a, constant=len(rs) < 4)
    return out, stats


def _fit_step_model(
    y: np.ndarray, a: np.ndarray, constant: bool = False
) -> tuple[np.ndarray, KindModel, dict[str, Any]]:
    """Non-negative least squares of step seconds ``y`` on the columns ``a`` = [1, size_MB,
    g, size_MB * g] (``g = 1 / min(c, 1)``; a column of zeros keeps its term at 0) -> the
    coefficients, the step model, and fit statistics. ``constant``: the geometric mean."""
    from scipy.optimize import nnls

    if constant:
        coef = np.array([float(np.exp(np.mean(np.log(y)))), 0.0, 0.0, 0.0])
    else:
        coef, _ = nnls(a, y)
    pred = np.maximum(a @ coef, 1e-6)
    sd = float(np.std(np.log(y / pred), ddof=1)) if len(y) > 1 else 0.0
    model = KindModel(
        cpu_base_s=round(float(coef[2]), 6),
        cpu_mb_per_core_s=round(float(1.0 / coef[3]), 6) if coef[3] > 1e-12 else 1e9,
        io_factor=0.0,
        serial=1.0,
        sigma=round(max(sd, MIN_SIGMA), 6),
        fixed_s=round(float(coef[0]), 6),
        fixed_s_per_mb=round(float(coef[1]), 6),
    )
    stats = {
        "steps": len(y),
        "mean_s": round(float(y.mean()), 4),
        "median_abs_rel_error": round(float(np.median(np.abs(pred / y - 1.0))), 4),
    }
    return coef, model, stats


MIN_COMPONENT_STEPS = 6  # a process with this many ok steps gets a model of its own


def fit_component_models(
    steps: Iterable[Mapping[str, Any]], config: SimConfig, min_steps: int = MIN_COMPONENT_STEPS
) -> tuple[dict[str, KindModel], dict[str, Any]]:
    """Per process component with ``min_steps`` ok steps: ``seconds = fixed_s + cpu_base_s /
    min(c, 1)`` by non-negative least squares (its size barely changes between episodes, so
    the size terms of the kind model cannot be told apart here). One process's restore may
    include work the others do not do (a self-check after the pause, before its ready
    heartbeat): its own model keeps that off the others."""
    rows: dict[str, list[tuple[float, float]]] = {}
    for s in steps:
        if s.get("outcome") != "ok" or s.get("kind") != ComponentKind.PROCESS.value:
            continue
        sec = float(s["seconds"])
        if sec > 0 and math.isfinite(sec):
            g = 1.0 / min(step_cores(s, config), 1.0)
            rows.setdefault(str(s["component"]), []).append((sec, g))
    out: dict[str, KindModel] = {}
    stats: dict[str, Any] = {}
    for name, rs in sorted(rows.items()):
        if len(rs) < min_steps:
            continue
        y = np.array([r[0] for r in rs])
        # its size hardly varies: the size columns are zeros
        coef, out[name], st = _fit_step_model(y, np.array([[1.0, 0.0, r[1], 0.0] for r in rs]))
        stats[name] = {
            "steps": st["steps"],
            "mean_s": st["mean_s"],
            "fixed_s": round(float(coef[0]), 4),
            "cpu_base_s": round(float(coef[2]), 4),
            "median_abs_rel_error": st["median_abs_rel_error"],
        }
    return out, stats


def fit_demand(
    episodes: Iterable[Mapping[str, Any]], config: SimConfig
) -> tuple[float, float, int]:
    """Maximum-likelihood (grid) ``mu, sigma`` of log(true demand / captured need) shared by
    the CPU-limited processes, from the first validation round's performance verdicts: a
    round passes iff every limited process's allocation multiple covers its demand."""
    from scipy.stats import norm

    obs: list[tuple[list[float], bool]] = []
    for tr in episodes:
        if not tr.get("validation"):
            continue
        first = tr["validation"][0]
        mults = [
            config.alloc_levels[int(s["level"])]
            for s in tr["steps"]
            if s["kind"] == ComponentKind.PROCESS.value and s.get("alloc_cores") is not None
        ]
        if mults:
            obs.append((mults, bool(first["checks"]["performance"])))
    if not obs:
        return UNLIMITED_DEMAND[0], UNLIMITED_DEMAND[1], 0
    best, arg = -math.inf, (0.0, 0.1)
    for mu in DEMAND_MU_GRID:
        for sd in DEMAND_SD_GRID:
            ll = 0.0
            for mults, passed in obs:
                p = float(np.prod(norm.cdf((np.log(mults) - mu) / sd)))
                p = min(max(p, 1e-9), 1 - 1e-9)
                ll += math.log(p if passed else 1.0 - p)
            if ll > best + 1e-12:
                best, arg = ll, (float(mu), float(sd))
    return arg[0], arg[1], len(obs)


def calibrate_live(
    traces: list[dict[str, Any]], name: str, config: SimConfig | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A scenario (as a YAML-ready mapping) of the traced host, and a fit report."""
    from envs.live import sim_manifest
    from persona.model import manifest_from_dict, manifest_to_dict

    cfg = config or SimConfig()
    hosts = sorted({t["host"] for t in traces})
    if len(hosts) != 1:
        raise ScenarioError(f"traces of several hosts ({', '.join(hosts)}): calibrate one host")
    steps = [s for t in traces for s in t["steps"]]
    models, fit = fit_live_kind_models(steps, cfg)
    per_component, fit_components = fit_component_models(steps, cfg)
    mu, sd, n_perf = fit_demand(traces, cfg)
    latest = max(traces, key=lambda t: t["started_at"])
    m = sim_manifest(manifest_from_dict(latest["manifest"]))
    demand = {}
    for c in m.components:
        if c.is_process:
            limited = any(
                s["component"] == c.name and s.get("alloc_cores") is not None
                for t in traces
                for s in t["steps"]
            )
            d_mu, d_sd = (mu, sd) if limited else UNLIMITED_DEMAND
            demand[c.name] = {"mu": round(d_mu, 4), "sigma": round(d_sd, 4)}
    # the validation phase: network check + readiness + one suite run, per round
    rounds = [
        float(v["seconds"]) + (float(t.get("finish_s", 0.0)) if v["round"] == 0 else 0.0)
        for t in traces
        for v in t.get("validation", [])
    ]
    remed = [
        float(t["remediation_s"]) / max(int(t["remediated"]), 1)
        for t in traces
        if t.get("remediated")
    ]
    sim: dict[str, float] = {}
    if rounds:
        sim["validation_s"] = round(float(np.median(rounds)), 4)
    if remed:
        sim["restart_base_s"] = round(float(np.median(remed)), 4)
    failures = sum(1 for s in steps if s.get("outcome") == "failed")
    scenario = {
        "name": name,
        "description": (
            f"{hosts[0]} calibrated from {len(traces)} live episodes "
            f"({len(steps)} steps, {failures} failed) by persona calibrate"
        ),
        "family": "live",
        "host": {"slots": 1, "cpu_cores": float(latest.get("cpu_count") or 1), "io_mb_s": 400.0},
        "persona": manifest_to_dict(m),
        "hidden": {"soft_dependencies": [], "demand": demand},
        "kind_models": {
            k.value: asdict(v) for k, v in sorted(models.items(), key=lambda kv: kv[0].value)
        },
        "sim": sim,
    }
    if per_component:
        scenario["component_models"] = {n: asdict(v) for n, v in per_component.items()}
    report = {
        "host": hosts[0],
        "episodes": len(traces),
        "steps": len(steps),
        "failed_steps": failures,
        "step_fit": fit,
        "component_fit": fit_components,
        "demand": {"mu": mu, "sigma": sd, "episodes_used": n_perf},
        "validation_rounds": len(rounds),
        "sim": sim,
        "note": (
            "soft dependencies: none fitted - the live persona's captured hard dependencies "
            "and the netns lock leave no order-dependent failures to observe"
            if failures == 0
            else f"{failures} failed steps: see the traces' errors"
        ),
    }
    return scenario, report

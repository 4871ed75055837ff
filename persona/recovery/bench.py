"""``persona bench failover``: time to recovery from an injected kill to validated service, by
method, side by side in one run (method order rotated per repetition).

Methods: ``cold-start`` (containers from their images plus the newest captured disk, every
process started fresh: redis loads its append-only file, the api rebuilds its item index),
``captured-order`` (every component in captured order), ``critical-path`` (the heuristic),
``policy`` (an exported ONNX policy through persona.restorer; skipped, and said so, when no
policy file exists). Each repetition brings up a fresh demo-shaped host on its own name and IP;
before every method it records the validation baseline from whatever currently runs and
captures a fresh persona of it (as continuous capture would). Adaptive updates are off, so one
method's outcome never changes another's plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from persona.errors import PersonaError
from persona.recovery.workflow import CAPTURED_ORDER, COLD

METHODS = (COLD, CAPTURED_ORDER, "critical-path", "policy")


@dataclass(frozen=True)
class BenchConfig:
    repeat: int = 3
    ip: str = "10.77.0.70"
    policy_file: str | None = None
    validate_budget_s: float = 8.0
    seed: int = 0
    out: Path = Path("bench_failover.json")


def find_policy(explicit: str | None, runs: Path = Path("runs")) -> str | None:
    if explicit:
        return explicit
    found = sorted(runs.glob("**/*.onnx"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method: samples, medians (pure)."""
    ttr = [s["ttr_s"] for s in samples if s["ttr_s"] is not None]
    ready = [s["ready_s"] for s in samples if s["ready_s"] is not None]
    keys = ("detect_s", "retrieve_s", "provision_s", "apply_s", "validate_s")
    return {
        "ttr_s": [s["ttr_s"] for s in samples],
        "ready_s": [s["ready_s"] for s in samples],
        "validated": [s["validated"] for s in samples],
        "warm": [s["warm"] for s in samples],
        "phases": [s["phases"] for s in samples],
        "ttr_median_s": round(statistics.median(ttr), 3) if ttr else None,
        "ready_median_s": round(statistics.median(ready), 3) if ready else None,
        "phase_median_s": {
            k: round(statistics.median(s["phases"].get(k, 0.0) for s in samples), 3) for k in keys
        }
        if samples
        else {},
        "errors": [s.get("error") for s in samples if s.get("error")],
        "failures": [f for s in samples for f in s.get("failures", [])],
        "attempt_warm": [w for s in samples for w in s.get("attempt_warm", [])],
        "loadavg_1m": [s.get("loadavg", [None])[0] for s in samples],
    }


def judge_targets(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, computed from the medians (pure)."""

    def med(m: str, k: str) -> float | None:
        v = methods.get(m, {}).get(k)
        return float(v) if v is not None else None

    det = [p["detect_s"] for r in methods.values() for p in r.get("phases", [])]
    out: dict[str, Any] = {
        "detect_max_s": round(max(det), 3) if det else None,
        "detect_le_3s": bool(det) and max(det) <= 3.0,
    }
    for k in ("ttr_median_s", "ready_median_s"):
        cold, warm = med(COLD, k), med("critical-path", k)
        out[f"cold_over_warm_{k}"] = round(cold / warm, 3) if cold and warm else None
    out["warm_2x_faster"] = (out["cold_over_warm_ttr_median_s"] or 0) >= 2.0
    cold = med(COLD, "ttr_median_s")
    out["cold_over_method_ttr"] = {
        m: round(cold / w, 3)
        for m in methods
        if m != COLD and cold and (w := med(m, "ttr_median_s"))
    }
    pol, heur = (
        med("policy", "ttr_median_s"),
        [med(m, "ttr_median_s") for m in (CAPTURED_ORDER, "critical-path")],
    )
    best = min((h for h in heur if h is not None), default=None)
    out["policy_no_slower"] = None if pol is None or best is None else pol <= best * 1.05
    return out


def plot(methods: dict[str, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(methods)
    keys = ("detect_s", "retrieve_s", "provision_s", "apply_s", "validate_s")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    bottom = [0.0] * len(names)
    for k in keys:
        vals = [
            methods[n]["phase_median_s"].get(k, 0.0) if methods[n]["phase_median_s"] else 0.0
            for n in names
        ]
        a1.bar(names, vals, bottom=bottom, label=k.removesuffix("_s"))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    a1.set_ylabel("median seconds")
    a1.set_title("phases (median)")
    a1.legend(fontsize=8)
    for i, n in enumerate(names):
        ys = [t for t in methods[n]["ttr_s"] if t is not None]
        a2.scatter([i] * len(ys), ys, alpha=0.7)
    a2.set_xticks(range(len(names)), names)
    a2.set_ylabel("time to validated service (s)")
    a2.set_title("TTR samples")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_bench(cfg: BenchConfig) -> dict[str, Any]:
    from persona.cli.recover_cmd import capture_version
    from persona.lab import demo, engine, spec
    from persona.model import load_manifest
    from persona.recovery import live
    from persona.recovery.fence import fence_host
    from persona.recovery.source import StoreSource
    from persona.recovery.workflow import RecoveryOptions

    client = engine.connect()
    pol_file = find_policy(cfg.policy_file)
    methods = [m for m in METHODS if m != "policy" or pol_file]
    work = Path(tempfile.mkdtemp(prefix="persona-bench-failover-"))
    load_start = [round(x, 2) for x in os.getloadavg()]
    store = str(work / "store")
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    hosts: list[str] = []
    try:
        for r in range(cfg.repeat):
            host = "bf" + secrets.token_hex(3)
            hosts.append(host)
            ids: dict[str, str] = {}
            for s in spec.demo_specs(host, ip=cfg.ip, with_load=False):
                ids[s.name] = demo.create_and_start(client, s, ids.get(s.netns_of or ""))
            demo.wait_ready(client, host, 180)
            order = methods[r % len(methods) :] + methods[: r % len(methods)]
            for m in order:
                # the baseline is the host as it is right before this failure: the previous
                # method's replacement (a cold start's lost data is the new normal, not a fault)
                baseline = live.record(client, host, cfg.ip, cfg.seed, cfg.validate_budget_s)
                capture_version(client, host, store)
                source = StoreSource(store)
                source.write_meta(host, live.BASELINE_META, baseline.to_dict())
                with tempfile.TemporaryDirectory() as d:
                    v = source.versions(host)[-1]
                    manifest = load_manifest(source.fetch(host, v, Path(d)) / "manifest.json")
                hooks = live.LiveHooks(client, cfg.ip, baseline, cfg.seed, cfg.validate_budget_s)
                policy = pol_file if m == "policy" and pol_file else m
                ropts = RecoveryOptions(
                    policy=policy,
                    seed=cfg.seed,
                    max_versions=1,
                    cold_fallback=False,
                    adaptive=False,
                )
                t = time.monotonic()
                load = [round(x, 2) for x in os.getloadavg()]
                try:
                    res = live.failover(client, host, source, manifest, hooks, ropts, inject=True)
                    ph = res.phases
                    ready = sum(
                        ph.get(k, 0.0) for k in ("detect_s", "retrieve_s", "provision_s", "apply_s")
                    )
                    samples[m].append(
                        {
                            "repeat": r,
                            "ttr_s": res.ttr_s,
                            "ready_s": round(ready, 4),
                            "validated": res.validated,
                            "warm": res.warm,
                            "phases": ph,
                            "score": res.verdict.get("score"),
                            "attempt_warm": [a.warm.warm for a in res.attempts if a.warm],
                            "failures": [a.error for a in res.attempts if a.error],
                            "loadavg": load,
                        }
                    )
                except PersonaError as e:
                    samples[m].append(
                        {
                            "repeat": r,
                            "ttr_s": None,
                            "ready_s": None,
                            "validated": False,
                            "warm": False,
                            "phases": {},
                            "error": str(e),
                            "wall_s": time.monotonic() - t,
                            "loadavg": load,
                        }
                    )
                if not demo.host_containers(client, host):  # nothing runs: start it again
                    for s in spec.demo_specs(host, ip=cfg.ip, with_load=False):
                        ids[s.name] = demo.create_and_start(client, s, ids.get(s.netns_of or ""))
                    demo.wait_ready(client, host, 180)
            fence_host(client, host)
    finally:
        for h in hosts:
            with contextlib.suppress(PersonaError):
                fence_host(client, h)
        shutil.rmtree(work, ignore_errors=True)
    by_method = {m: summarise(s) for m, s in samples.items()}
    out: dict[str, Any] = {
        "config": {**asdict(cfg), "out": str(cfg.out), "policy_file": pol_file},
        "methods": by_method,
        "targets": judge_targets(by_method),
        "loadavg_start": load_start,
    }
    if pol_file is None:
        out["note"] = "no exported policy (*.onnx) found: the 'policy' method was not run"
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    p = plot(by_method, cfg.out.with_suffix(".png"))
    out["plot"] = str(p) if p else None
    cfg.out.write_text(json.dumps(out, indent=1) + "\n")
    return out

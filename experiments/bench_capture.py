"""Benchmark: freeze time of a consistent cut of a demo-shaped host, per cut route.

Run:  python -m experiments.bench_capture [--repeat N] [--variant freezer/runc ...] [--host H]

Without ``--host`` the script starts its own demo-shaped host (pause + redis + api + worker,
named ``bench90``, 10.77.0.90) with a load client at 10.77.0.91 keeping connections and
traffic flowing (addresses 10.77.0.90-99 are the ones reserved for hand experiments) and
removes both at the end. Each capture is a full ``persona.capture.run.capture_host`` into a
fresh local store; the variants are run round-robin so that load from other work on the
machine hits all of them alike. A variant is ``<freeze>/<dump>[/nokdat]``:

- freeze ``engine``: ``docker pause``/``unpause`` through the Engine API;
  ``freezer``: the container's cgroup freezer written directly;
- dump ``engine``: the Engine API checkpoint route (dockerd -> containerd -> runc -> CRIU,
  then containerd's tar into its content store and dockerd's untar);
  ``runc``: ``runc checkpoint --leave-running`` with dockerd's runc root;
  ``gated``: runc checkpoints started before the freeze and held at CRIU's pre-dump hook
  until the whole host is frozen (runc/CRIU start-up leaves the frozen window);
- ``nokdat``: CRIU's kernel-feature cache removed before the capture (every dump re-probes);
- ``fsout``: filesystem diffs and config files read after the thaw instead of inside the cut.

Per capture it prints freeze time = pause + dumps (parallel) + thaw, and writes
``runs/bench_capture__<time>/results.json`` and ``plot.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from persona.capture.run import CaptureOptions, capture_host
from persona.capture.sink import open_sink
from persona.lab import criu_cache, demo, engine, images, spec

DEFAULT_VARIANTS = ("engine/engine", "engine/runc", "freezer/runc", "freezer/runc/nokdat",
                    "freezer/gated", "freezer/gated/fsout")
TARGET_MS = 300.0


@dataclass(frozen=True)
class Config:
    repeat: int = 5
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    host: str | None = None  # None: start (and remove) the bench host below
    bench_host: str = "bench90"
    bench_ip: str = "10.77.0.90"
    load_ip: str = "10.77.0.91"
    window_s: float = 0.2
    out: Path | None = None


@dataclass
class Sample:
    variant: str
    round: int
    freeze_ms: float
    pause_ms: float
    thaw_ms: float
    dump_ms: dict[str, float] = field(default_factory=dict)
    total_ms: float = 0.0
    process_bytes: int = 0
    files_in_cut_ms: float | None = None
    prepare_ms: float = 0.0
    loadavg_1m: float = 0.0  # machine load when the capture ran (the machine is shared)
    criu_phases_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # from dump.log


def parse_variant(v: str) -> tuple[CaptureOptions, bool]:
    parts = v.split("/")
    flags = set(parts[2:])
    if len(parts) < 2 or parts[0] not in ("engine", "freezer") or \
            parts[1] not in ("engine", "runc", "gated") or flags - {"nokdat", "fsout"}:
        raise SystemExit(f"bad variant {v!r}: <engine|freezer>/<engine|runc|gated>"
                         "[/nokdat][/fsout]")
    nokdat = "nokdat" in flags
    return CaptureOptions(freeze=parts[0], dump=parts[1], kdat_cache=not nokdat,
                          files_in_cut="fsout" not in flags), nokdat


def start_bench_host(client: Any, cfg: Config) -> list[str]:
    images.build_all(client)
    demo.ensure_network(client)
    specs = spec.demo_specs(cfg.bench_host, ip=cfg.bench_ip, with_load=True)
    specs[-1] = replace(specs[-1], ip=cfg.load_ip, host=f"{cfg.bench_host}-client")
    ids: dict[str, str] = {}
    for s in specs:
        old = demo.find(client, s.name)
        if old is not None:
            client.remove_container(old["Id"], force=True)
        ids[s.name] = demo.create_and_start(client, s, ids.get(s.netns_of or ""))
    demo.wait_ready(client, cfg.bench_host, 60)
    time.sleep(2.0)  # let the load client open its connections
    return list(ids.values())


def run(cfg: Config) -> dict[str, Any]:
    client = engine.connect()
    created = [] if cfg.host else start_bench_host(client, cfg)
    host = cfg.host or cfg.bench_host
    work = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    samples: list[Sample] = []
    try:
        for r in range(cfg.repeat):
            for v in cfg.variants:
                opts, nokdat = parse_variant(v)
                if nokdat:
                    Path("/run/criu.kdat").unlink(missing_ok=True)
                sink = open_sink(str(work / v.replace("/", "_")), tmp_root=work / "tmp")
                rep = capture_host(client, host, sink, replace(opts, window_s=cfg.window_s))
                t = rep.summary["timings"]
                s = Sample(v, r, rep.freeze_ms, t["pause_ms"], t["thaw_ms"], dict(t["dump_ms"]),
                           t["total_ms"], sum(c["size_bytes"] for c in rep.summary["components"]
                                              if c["kind"] == "process"),
                           t.get("files_in_cut_ms"), t.get("prepare_ms", 0.0), os.getloadavg()[0],
                           dict(t.get("criu_phases_ms", {})))
                samples.append(s)
                dumps = ", ".join(f"{k.rsplit('-', 1)[-1]}={x:.0f}" for k, x in s.dump_ms.items())
                print(f"[{r}] {v:22s} freeze {s.freeze_ms:6.0f} ms  (pause {s.pause_ms:4.0f}, "
                      f"dumps {dumps}, thaw {s.thaw_ms:4.0f}) total {s.total_ms:5.0f} ms", flush=True)
    finally:
        criu_cache.ensure_kdat_cache()  # leave the cache in place for everyone else
        shutil.rmtree(work, ignore_errors=True)
        for cid in reversed(created):
            with contextlib.suppress(Exception):  # someone may have removed it already
                client.remove_container(cid, force=True)
    summary = {}
    for v in cfg.variants:
        xs = [s.freeze_ms for s in samples if s.variant == v]
        summary[v] = {"median_ms": round(statistics.median(xs), 1), "min_ms": round(min(xs), 1),
                      "max_ms": round(max(xs), 1), "n": len(xs),
                      "median_pause_ms": round(statistics.median(
                          s.pause_ms for s in samples if s.variant == v), 1),
                      "median_thaw_ms": round(statistics.median(
                          s.thaw_ms for s in samples if s.variant == v), 1),
                      "median_slowest_dump_ms": round(statistics.median(
                          max(s.dump_ms.values()) for s in samples if s.variant == v), 1),
                      "meets_target": statistics.median(xs) <= TARGET_MS,
                      "median_criu_phases_ms": _median_phases(
                          [s for s in samples if s.variant == v])}
    return {"config": {**asdict(cfg), "out": str(cfg.out)}, "target_ms": TARGET_MS,
            "machine": {"cpus": _cpus(), "kernel": platform.release(),
                        "python": platform.python_version()},
            "samples": [asdict(s) for s in samples], "summary": summary}


def _median_phases(samples: list[Sample]) -> dict[str, float]:
    """Median over captures and containers of each CRIU dump phase (runc routes only)."""
    by: dict[str, list[float]] = {}
    for s in samples:
        for ph in s.criu_phases_ms.values():
            for k, x in ph.items():
                by.setdefault(k, []).append(x)
    return {k: round(statistics.median(xs), 1) for k, xs in by.items()}


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(res["summary"])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    data = [[s["freeze_ms"] for s in res["samples"] if s["variant"] == v] for v in variants]
    a1.boxplot(data, tick_labels=variants)
    a1.axhline(res["target_ms"], color="red", linestyle="--", label=f"target {res['target_ms']:.0f} ms")
    a1.set_ylabel("freeze time per capture (ms)")
    a1.set_title("freeze = pause + parallel dumps + thaw")
    a1.legend()
    a1.tick_params(axis="x", rotation=20)
    med = res["summary"]
    parts = [("median_pause_ms", "pause"), ("median_slowest_dump_ms", "slowest dump"),
             ("median_thaw_ms", "thaw")]
    bottom = [0.0] * len(variants)
    for key, label in parts:
        vals = [med[v][key] for v in variants]
        a2.bar(variants, vals, bottom=bottom, label=label)
        bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
    a2.axhline(res["target_ms"], color="red", linestyle="--")
    a2.set_ylabel("median ms")
    a2.set_title("where the frozen time goes (medians)")
    a2.legend()
    a2.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=Config.repeat)
    ap.add_argument("--variant", action="append", default=None,
                    help=f"<freeze>/<dump>[/nokdat]; repeatable (default: {' '.join(DEFAULT_VARIANTS)})")
    ap.add_argument("--host", default=None, help="capture this existing host instead")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    cfg = Config(repeat=a.repeat, variants=tuple(a.variant or DEFAULT_VARIANTS), host=a.host,
                 out=a.out)
    for v in cfg.variants:
        parse_variant(v)
    out = cfg.out or Path("runs") / f"bench_capture__{datetime.now(UTC):%Y%m%d-%H%M%S}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    res = run(cfg)
    res["wall_s"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "plot.png")
    print(f"\n{'variant':22s} {'median':>8s} {'min':>6s} {'max':>6s}  pause  slowest-dump  thaw")
    for v, s in res["summary"].items():
        print(f"{v:22s} {s['median_ms']:8.0f} {s['min_ms']:6.0f} {s['max_ms']:6.0f}  "
              f"{s['median_pause_ms']:5.0f}  {s['median_slowest_dump_ms']:12.0f}  "
              f"{s['median_thaw_ms']:4.0f}   {'meets' if s['meets_target'] else 'misses'} "
              f"<= {TARGET_MS:.0f} ms")
    for v, s in res["summary"].items():
        if s["median_criu_phases_ms"]:
            print(f"CRIU phases {v}: " + ", ".join(f"{k} {x:.0f}" for k, x in
                                                   s["median_criu_phases_ms"].items()) + " ms")
    print(f"results: {out}/results.json, {out}/plot.png")


if __name__ == "__main__":
    main()

"""Benchmark: persona's store vs restic on memory-image versions and filesystem tars.

Run:  python -m experiments.bench_store [--out DIR] [--image-mib 128] [--versions 3] [--criu-mib 64]

For each workload series (memory images with 1 %, 5 %, 20 % of pages dirtied per version, and a
filesystem-diff tar with 2 % of files changed per version, and, as root with CRIU >= 4.2
installed (``persona lab up``), successive real ``criu dump --leave-running`` image folders of a
live process whose heap has 1 % or 5 % of its pages rewritten between dumps) a fresh persona
store and a fresh
restic repository ingest the same sequence of folders, side by side. Measured per version:
bytes the store grew by (directory size), ingest wall time; at the end, the wall time of
restoring the latest version. Results go to ``runs/bench_store__<time>/`` as results.json,
results.csv and plot.png. restic comes from Debian (``apt-get install restic``); the script
installs it when missing and it runs as root, else it prints how and skips restic.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from persona.store import PutOptions, Repository, put, restore
from persona.store.synth import (
    ImageModel,
    make_image,
    make_rootfs,
    mutate_rootfs,
    next_version,
    rootfs_tar,
)

RESTIC_PASSWORD = "bench-only-password"
Writer = Callable[[Path], object]  # writes one version's files into a folder


@dataclass(frozen=True)
class Config:
    out: Path | None = None
    image_mib: int = 128
    versions: int = 3  # versions after the base, per series
    dirty: tuple[float, ...] = (0.01, 0.05, 0.20)
    tar_files: int = 3000
    tar_change: float = 0.02
    seed: int = 0
    restic: bool = True
    workdir: Path | None = None
    restore_repeats: int = 3
    # heap of the live process dumped by CRIU; 0: no CRIU series; None: 64 when restic runs
    # (the series exists to compare real dumps side by side), else 0
    criu_mib: int | None = None
    criu_dirty: tuple[float, ...] = (0.01, 0.05)  # pages the live process rewrites per version


@dataclass
class Measure:
    series: str
    tool: str
    version: int  # 0 = base
    logical_bytes: int
    added_bytes: int
    ingest_s: float

    @property
    def ingest_mb_s(self) -> float:
        return self.logical_bytes / self.ingest_s / 1e6 if self.ingest_s > 0 else float("nan")


@dataclass
class Series:
    name: str
    measures: list[Measure] = field(default_factory=list)
    restore: dict[str, dict[str, float]] = field(default_factory=dict)


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink())


def ensure_restic(allow_install: bool = True) -> str | None:
    exe = shutil.which("restic")
    if exe or not allow_install:
        return exe
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(
            "restic not found: installing the Debian package (apt-get install restic) ...",
            flush=True,
        )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=False, env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "restic"], check=False, env=env, capture_output=True
        )
        return shutil.which("restic")
    print("restic not found: install it with `sudo apt-get install restic`; continuing without it")
    return None


class ResticRunner:
    def __init__(self, exe: str, repo: Path, cache: Path) -> None:
        self.exe, self.repo, self.cache = exe, repo, cache
        self.env = {**os.environ, "RESTIC_PASSWORD": RESTIC_PASSWORD}

    def _run(self, *args: str) -> None:
        r = subprocess.run(
            [self.exe, "-r", str(self.repo), "--cache-dir", str(self.cache), "--quiet", *args],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise RuntimeError(f"restic {' '.join(args)} failed: {r.stderr.strip()}")

    def init(self) -> None:
        self._run("init", "--repository-version", "2")

    def backup(self, src: Path) -> None:
        self._run("backup", str(src))

    def restore_latest(self, dst: Path) -> None:
        self._run("restore", "latest", "--target", str(dst))

    @staticmethod
    def version(exe: str) -> str:
        return subprocess.run([exe, "version"], capture_output=True, text=True).stdout.strip()


def _write_image(src: Path, pages: bytes, pagemap: bytes) -> None:
    (src / "pages-1.img").write_bytes(pages)
    (src / "pagemap-1.img").write_bytes(pagemap)


def _write_tar(src: Path, data: bytes) -> None:
    (src / "rootfs-diff.tar").write_bytes(data)


def image_sequence(cfg: Config, dirty: float) -> Iterator[tuple[int, Writer]]:
    """Yields (version, writer) — writer(src) writes that version's CRIU-like image files."""
    rng = np.random.default_rng(cfg.seed + int(dirty * 1000))
    img = make_image(ImageModel(npages=cfg.image_mib * 256, seed=cfg.seed))
    for v in range(cfg.versions + 1):
        if v:
            img = next_version(img, dirty, rng)
        pages, pagemap = img.pages_bytes(), img.pagemap_bytes()
        yield v, functools.partial(_write_image, pages=pages, pagemap=pagemap)


def tar_sequence(cfg: Config) -> Iterator[tuple[int, Writer]]:
    rng = np.random.default_rng(cfg.seed + 99)
    files = make_rootfs(cfg.tar_files, rng)
    for v in range(cfg.versions + 1):
        if v:
            files = mutate_rootfs(files, cfg.tar_change, rng)
        data = rootfs_tar(files)
        yield v, functools.partial(_write_tar, data=data)


# A live process for the CRIU series: a heap of `mib` MiB laid out like the synthetic image
# (25 % zero pages, 30 % low-entropy text pages, the rest random), then, per line read on
# stdin, a fraction of its pages gets 1-8 cache lines rewritten in place.
WORKLOAD = r"""
import random, sys
mib, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
n = mib * 256
buf = bytearray(n * 4096)
for i in range(n):
    r = rng.random()
    if r < 0.25:
        continue
    if r < 0.55:
        buf[i * 4096:(i + 1) * 4096] = (b"key:%08d value:" % i) * 170 + bytes(16)
    else:
        buf[i * 4096:(i + 1) * 4096] = rng.randbytes(4096)
print("ready", flush=True)
for line in sys.stdin:
    for i in rng.sample(range(n), int(n * float(line))):
        for _ in range(rng.randint(1, 8)):
            o = i * 4096 + rng.randrange(64) * 64
            buf[o:o + 64] = rng.randbytes(64)
    print("ok", flush=True)
"""


class LiveProcess:
    """A real process whose memory changes a little between real ``criu dump``s."""

    def __init__(self, mib: int, seed: int) -> None:
        import sys

        self.p = subprocess.Popen(
            [sys.executable, "-c", WORKLOAD, str(mib), str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        assert self.p.stdin is not None and self.p.stdout is not None
        self.stdin, self.stdout = self.p.stdin, self.p.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError("CRIU workload process did not start")
        self.dump_s: list[float] = []

    def mutate(self, frac: float) -> None:
        self.stdin.write(f"{frac}\n")
        self.stdin.flush()
        if self.stdout.readline().strip() != "ok":
            raise RuntimeError("CRIU workload process died")

    def dump_into(self, src: Path) -> None:
        """A full CRIU dump (the process keeps running) replaces the folder's contents."""
        shutil.rmtree(src)
        src.mkdir()
        t0 = time.perf_counter()
        r = subprocess.run(
            ["criu", "dump", "-t", str(self.p.pid), "-D", str(src), "--leave-running",
             "-o", "dump.log"], capture_output=True, text=True,
        )
        self.dump_s.append(time.perf_counter() - t0)
        if r.returncode != 0:
            log = (src / "dump.log").read_text()[-600:] if (src / "dump.log").exists() else ""
            raise RuntimeError(f"criu dump failed: {r.stderr.strip()} {log}")
        for f in ("dump.log", "stats-dump"):  # logs, not state
            (src / f).unlink(missing_ok=True)

    def close(self) -> None:
        self.p.kill()
        self.p.wait()


def criu_sequence(cfg: Config, dirty: float, proc: LiveProcess) -> Iterator[tuple[int, Writer]]:
    """Successive real CRIU dumps of one live process; ``dirty`` of its heap changes per version."""
    for v in range(cfg.versions + 1):
        if v:
            proc.mutate(dirty)
        yield v, proc.dump_into


def criu_available() -> str | None:
    """Why the CRIU series cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("criu") is None:
        return "criu is not on PATH (persona lab up installs it)"
    return None


def run_series(
    name: str, seq: Iterator[tuple[int, Writer]], cfg: Config, work: Path, restic: str | None
) -> Series:
    s = Series(name)
    base = work / name
    src = base / "src"
    src.mkdir(parents=True)
    store_dir = base / "persona-store"
    repo = Repository.init(str(store_dir))
    rr = None
    if restic:
        rr = ResticRunner(restic, base / "restic-repo", base / "restic-cache")
        rr.init()
    for v, write in seq:
        write(src)
        logical = dir_size(src)
        before = dir_size(store_dir)
        t0 = time.perf_counter()
        put(repo, src, "bench", PutOptions(tags=(name,)))
        dt = time.perf_counter() - t0
        s.measures.append(Measure(name, "persona", v, logical, dir_size(store_dir) - before, dt))
        if rr is not None:
            before = dir_size(rr.repo)
            t0 = time.perf_counter()
            rr.backup(src)
            dt = time.perf_counter() - t0
            s.measures.append(Measure(name, "restic", v, logical, dir_size(rr.repo) - before, dt))
        print(
            f"  {name} v{v}: "
            + ", ".join(
                f"{m.tool} +{m.added_bytes / 2**20:.2f} MiB {m.ingest_mb_s:.0f} MB/s"
                for m in s.measures
                if m.version == v
            ),
            flush=True,
        )
    logical = dir_size(src)
    # restore the latest version cfg.restore_repeats times into a fresh folder; median time
    times = []
    for _ in range(cfg.restore_repeats):
        dst = base / "restore-persona"
        repo2 = Repository.open(str(store_dir))  # fresh repository object: empty caches
        t0 = time.perf_counter()
        restore(repo2, repo2.resolve("bench", "latest"), dst)
        times.append(time.perf_counter() - t0)
        _assert_same(src, dst)
        shutil.rmtree(dst)
    s.restore["persona"] = _restore_stats(times, logical)
    if rr is not None:
        times = []
        for _ in range(cfg.restore_repeats):
            dst = base / "restore-restic"
            t0 = time.perf_counter()
            rr.restore_latest(dst)
            times.append(time.perf_counter() - t0)
            _assert_same(src, dst / src.relative_to(src.anchor))
            shutil.rmtree(dst)
        s.restore["restic"] = _restore_stats(times, logical)
    shutil.rmtree(base)
    return s


def _restore_stats(times: list[float], logical: int) -> dict[str, float]:
    med = float(np.median(times))
    return {"seconds": med, "mb_s": logical / med / 1e6, "runs_s": times}  # type: ignore[dict-item]


def _assert_same(a: Path, b: Path) -> None:
    for f in a.rglob("*"):
        if f.is_file():
            g = b / f.relative_to(a)
            if f.read_bytes() != g.read_bytes():
                raise RuntimeError(f"restore differs: {g}")


def summarize(series: list[Series]) -> dict[str, Any]:
    """Per series and tool: mean bytes added per version (after the base), ingest and restore MB/s."""
    out: dict[str, Any] = {}
    for s in series:
        row: dict[str, Any] = {}
        for tool in ("persona", "restic"):
            ms = [m for m in s.measures if m.tool == tool]
            if not ms:
                continue
            inc = [m for m in ms if m.version > 0]
            row[tool] = {
                "base_added_bytes": next(m.added_bytes for m in ms if m.version == 0),
                "mean_added_bytes_per_version": float(np.mean([m.added_bytes for m in inc]))
                if inc
                else None,
                "mean_ingest_mb_s": float(np.mean([m.ingest_mb_s for m in ms])),
                "restore_mb_s": s.restore.get(tool, {}).get("mb_s"),
            }
        if "persona" in row and "restic" in row:
            p, r = row["persona"], row["restic"]
            assert isinstance(p, dict) and isinstance(r, dict)
            if p["mean_added_bytes_per_version"] and r["mean_added_bytes_per_version"]:
                row["added_ratio_persona_over_restic"] = (
                    p["mean_added_bytes_per_version"] / r["mean_added_bytes_per_version"]
                )
            row["ingest_speedup_persona_over_restic"] = (
                p["mean_ingest_mb_s"] / r["mean_ingest_mb_s"]
            )
        out[s.name] = row
    return out


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, evaluated from the measurements."""
    t: dict[str, Any] = {}
    one = summary.get("mem_dirty1pct")
    if isinstance(one, dict) and "added_ratio_persona_over_restic" in one:
        t["dirty1pct_added_at_most_one_fifth_of_restic"] = (
            one["added_ratio_persona_over_restic"] <= 0.2
        )
    live = summary.get("criu_live_dirty1pct")
    if isinstance(live, dict) and "added_ratio_persona_over_restic" in live:
        t["criu_live_dirty1pct_added_at_most_one_fifth_of_restic"] = (
            live["added_ratio_persona_over_restic"] <= 0.2
        )
    speedups = [
        row["ingest_speedup_persona_over_restic"]
        for row in summary.values()
        if isinstance(row, dict) and "ingest_speedup_persona_over_restic" in row
    ]
    if speedups:
        t["ingest_at_least_restic_in_every_series"] = all(x >= 1.0 for x in speedups)
    restores = [
        row["persona"]["restore_mb_s"]
        for row in summary.values()
        if isinstance(row, dict) and "persona" in row
    ]
    t["persona_restore_at_least_300_mb_s_in_every_series"] = all(
        r is not None and r >= 300 for r in restores
    )
    t["persona_restore_min_mb_s"] = min(r for r in restores if r is not None) if restores else None
    return t


def plot(series: list[Series], summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s.name for s in series]
    tools = [t for t in ("persona", "restic") if any(t in summary[n] for n in names)]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    x = np.arange(len(names))
    w = 0.8 / max(1, len(tools))
    for i, tool in enumerate(tools):
        row = [summary[n].get(tool, {}) for n in names]
        added = [(r.get("mean_added_bytes_per_version") or 0) / 2**20 for r in row]
        ingest = [r.get("mean_ingest_mb_s") or 0 for r in row]
        rest = [r.get("restore_mb_s") or 0 for r in row]
        axes[0].bar(x + i * w, added, w, label=tool)
        axes[1].bar(x + i * w, ingest, w, label=tool)
        axes[2].bar(x + i * w, rest, w, label=tool)
    axes[0].set_yscale("log")
    axes[0].set_title("MiB added per version (mean, log scale)")
    axes[1].set_title("ingest MB/s (mean over versions)")
    axes[2].set_title("restore MB/s (latest version)")
    axes[2].axhline(300, color="grey", ls="--", lw=1)
    for ax in axes:
        ax.set_xticks(x + w * (len(tools) - 1) / 2, names, rotation=20)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=None, help="run folder (default runs/bench_store__<time>)"
    )
    ap.add_argument("--image-mib", type=int, default=Config.image_mib)
    ap.add_argument("--versions", type=int, default=Config.versions)
    ap.add_argument("--tar-files", type=int, default=Config.tar_files)
    ap.add_argument("--no-restic", action="store_true", help="measure persona only")
    ap.add_argument("--criu-mib", type=int, default=None,
                    help="heap MiB of the live process dumped by CRIU (0: skip that series; "
                    "default 64, or 0 with --no-restic)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="scratch space (default: a temp dir)"
    )
    a = ap.parse_args(argv)
    cfg = Config(
        a.out,
        a.image_mib,
        a.versions,
        tar_files=a.tar_files,
        restic=not a.no_restic,
        workdir=a.workdir,
        criu_mib=a.criu_mib,
    )
    out = cfg.out or Path("runs") / f"bench_store__{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    restic = ensure_restic() if cfg.restic else None
    series: list[Series] = []
    criu_dump_s: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_store_", dir=cfg.workdir) as tmp:
        work = Path(tmp)
        for d in cfg.dirty:
            name = f"mem_dirty{round(d * 100)}pct"
            print(f"series {name} ({cfg.image_mib} MiB image, {cfg.versions} versions)", flush=True)
            series.append(run_series(name, image_sequence(cfg, d), cfg, work, restic))
        print(
            f"series fs_tar ({cfg.tar_files} files, {cfg.tar_change:.0%} changed per version)",
            flush=True,
        )
        series.append(run_series("fs_tar", tar_sequence(cfg), cfg, work, restic))
        criu_mib = cfg.criu_mib if cfg.criu_mib is not None else (64 if restic else 0)
        why_not = criu_available() if criu_mib else "disabled (--criu-mib 0 or --no-restic)"
        for d in cfg.criu_dirty if why_not is None else ():
            name = f"criu_live_dirty{round(d * 100)}pct"
            print(f"series {name} (real CRIU dumps of a live process with a {criu_mib} MiB "
                  f"heap, {d:.0%} of its pages rewritten per version)", flush=True)
            proc = LiveProcess(criu_mib, cfg.seed + int(d * 1000))
            try:
                series.append(run_series(name, criu_sequence(cfg, d, proc), cfg, work, restic))
            finally:
                proc.close()
            criu_dump_s[name] = proc.dump_s
        if why_not is not None:
            print(f"CRIU series skipped: {why_not}", flush=True)
    summary = summarize(series)
    result = {
        "command": "python -m experiments.bench_store "
        + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "restic_version": ResticRunner.version(restic) if restic else None,
        "elapsed_s": time.perf_counter() - t_start,
        "summary": summary,
        "targets": targets(summary),
        "measures": [
            {**asdict(m), "ingest_mb_s": m.ingest_mb_s} for s in series for m in s.measures
        ],
        "restore": {s.name: s.restore for s in series},
        "criu_dump_s": criu_dump_s,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    with open(out / "results.csv", "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(
            ["series", "tool", "version", "logical_bytes", "added_bytes", "ingest_s", "ingest_mb_s"]
        )
        for s in series:
            for m in s.measures:
                wr.writerow(
                    [
                        m.series,
                        m.tool,
                        m.version,
                        m.logical_bytes,
                        m.added_bytes,
                        f"{m.ingest_s:.4f}",
                        f"{m.ingest_mb_s:.1f}",
                    ]
                )
        for s in series:
            for tool, r in s.restore.items():
                wr.writerow(
                    [
                        s.name,
                        tool,
                        "restore_median",
                        "",
                        "",
                        f"{r['seconds']:.4f}",
                        f"{r['mb_s']:.1f}",
                    ]
                )
    plot(series, summary, out / "plot.png")
    print(markdown_table(result))
    print(f"results in {out}")
    return out


def markdown_table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    assert isinstance(summary, dict)
    lines = [
        "| series | tool | base added (MiB) | added per version (MiB) | ingest MB/s | restore MB/s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, row in summary.items():
        for tool in ("persona", "restic"):
            r = row.get(tool)
            if not r:
                continue
            per = r["mean_added_bytes_per_version"]
            rest = r["restore_mb_s"]
            lines.append(
                f"| {name} | {tool} | {r['base_added_bytes'] / 2**20:.1f} | "
                f"{'-' if per is None else f'{per / 2**20:.2f}'} | {r['mean_ingest_mb_s']:.0f} | "
                f"{'-' if rest is None else f'{rest:.0f}'} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Crash safety (SIGKILL at random points), concurrency (threads, processes, gc vs writer)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from persona.store import Policy, PutOptions, Repository, gc, prune, put, restore, verify

from .conftest import tree_bytes

ROOT = Path(__file__).resolve().parents[2]


def _spawn_writer(
    url: str, host: str, n: int, work: Path, srcs: list[Path], crash_at: int = 0
) -> subprocess.Popen[bytes]:
    work.mkdir(exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.store.writer_proc",
            url,
            host,
            str(n),
            str(work),
            *map(str, srcs),
        ],
        cwd=ROOT,
        env={**os.environ, "CRASH_AT_PUT": str(crash_at)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _check_all_versions(url: str, srcs: dict[str, Path] | Path, out: Path) -> int:
    """verify --read-data is clean and every visible version restores byte-identically.

    ``srcs`` maps a version's tag to its source folder (or is the writers' work folder)."""
    repo = Repository.open(url)
    rep = verify(repo, read_data=True)
    assert rep.ok, rep.errors
    if isinstance(srcs, Path):
        srcs = {p.name: p for p in srcs.iterdir()}
    n = 0
    for v in repo.list_versions():
        snap = repo.load_snapshot(v.snapshot)
        dest = out / f"{v.host}-{v.version}"
        restore(repo, v, dest)
        assert tree_bytes(dest) == tree_bytes(srcs[snap.tags[0]]), (v, snap.tags)
        n += 1
    return n


def test_sigkill_writer_never_leaves_broken_snapshot(
    tmp_path: Path, image_versions: list[Path]
) -> None:
    url = str(tmp_path / "store")
    Repository.init(url, pack_size=64 * 1024)  # many packs: more points to die at
    work = tmp_path / "work"
    rnd = random.Random(1234)
    for round_ in range(5):
        proc = _spawn_writer(url, "h", 10_000, work, image_versions)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        time.sleep(rnd.uniform(0.0, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_all_versions(url, work, tmp_path / f"out{round_}")
    # the store stays usable: a new writer succeeds and its version is complete
    proc = _spawn_writer(url, "h", 1, work, image_versions[:1])
    assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    assert _check_all_versions(url, work, tmp_path / "final") >= 1


def test_sigkill_between_every_ordered_write(tmp_path: Path, image_versions: list[Path]) -> None:
    """Deterministic: die before the k-th backend put, for every k of one version's puts."""
    url = str(tmp_path / "store")
    Repository.init(url, pack_size=1024 * 1024)
    work = tmp_path / "work"
    ok = _spawn_writer(url, "h", 1, work, image_versions[:1])
    assert ok.wait(timeout=120) == 0
    puts_per_version = 0
    leftovers: list[int] = []
    for k in range(1, 30):
        proc = _spawn_writer(url, "h", 1, work, image_versions[1:2], crash_at=k)
        out, _err = proc.communicate(timeout=120)
        if proc.returncode == 0:  # finished: k exceeds the number of puts of one version
            puts_per_version = k - 1
            break
        assert proc.returncode == -signal.SIGKILL
        assert b"put " not in out  # the version was not reported as stored
        _check_all_versions(url, work, tmp_path / f"out{k}")
        leftovers.append(len(verify(Repository.open(url)).warnings))
    # lock, packs, index, snapshot, ref: several distinct crash points were exercised
    assert puts_per_version >= 5, puts_per_version
    assert max(leftovers) > 0  # crashes after packs/snapshot left (harmless, invisible) leftovers
    assert [v.version for v in Repository.open(url).list_versions("h")] == [1, 2]


def test_two_writer_threads_same_host(tmp_path: Path, image_versions: list[Path]) -> None:
    url = str(tmp_path / "store")
    Repository.init(url, pack_size=256 * 1024)
    errors: list[BaseException] = []
    done: list[int] = []

    def writer(k: int) -> None:
        try:
            repo = Repository.open(url)
            for src in image_versions:
                done.append(put(repo, src, "h", PutOptions(tags=(src.name,))).version)
        except BaseException as e:  # pragma: no cover - asserted below
            errors.append(e)

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert sorted(done) == list(range(1, 7))  # unique, gap-free version numbers
    assert _check_all_versions(url, {p.name: p for p in image_versions}, tmp_path / "out") == 6


def test_two_writer_processes(tmp_path: Path, image_versions: list[Path]) -> None:
    url = str(tmp_path / "store")
    Repository.init(url, pack_size=256 * 1024)
    procs = [_spawn_writer(url, "h", 3, tmp_path / "work", image_versions) for _ in range(2)]
    for p in procs:
        _out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()
    repo = Repository.open(url)
    assert [v.version for v in repo.list_versions("h")] == list(range(1, 7))
    assert _check_all_versions(url, tmp_path / "work", tmp_path / "out") == 6


def test_gc_concurrent_with_writer_keeps_what_writer_needs(
    tmp_path: Path, image_versions: list[Path]
) -> None:
    url = str(tmp_path / "store")
    repo = Repository.init(url, pack_size=64 * 1024)
    proc = _spawn_writer(url, "h", 20, tmp_path / "work", image_versions)
    gcs = 0
    while proc.poll() is None:
        # aggressive: no grace period, so only the lease lock protects the writer
        prune(repo, Policy(keep_last=2))
        gc(repo, grace_s=0, lock_wait=60)
        gcs += 1
    _out, err = proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert gcs >= 2
    prune(repo, Policy(keep_last=2))
    gc(repo, grace_s=0)
    assert _check_all_versions(url, tmp_path / "work", tmp_path / "out") == 2


def test_gc_waits_for_live_writer_lock(tmp_path: Path, image_versions: list[Path]) -> None:
    from persona.errors import StoreError
    from persona.store.locks import LeaseLock

    repo = Repository.init(str(tmp_path / "s"))
    put(repo, image_versions[0], "h")
    with LeaseLock(repo.backend, "shared", lease=5), pytest.raises(StoreError, match="locked"):
        gc(repo, grace_s=0, lock_wait=0.5)
    # an expired lock (killed writer) does not block
    stale = LeaseLock(repo.backend, "shared", lease=0.2)
    stale.acquire()
    stale._stop.set()  # simulate a dead process: no more refreshes, lock left behind
    time.sleep(0.5)
    assert os.path.exists(tmp_path / "s" / stale.name)
    gc(repo, grace_s=0, lock_wait=0.5)
    assert not os.path.exists(tmp_path / "s" / stale.name)  # expired beyond grace: cleaned

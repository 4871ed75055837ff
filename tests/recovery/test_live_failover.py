"""Live failover of a demo-shaped host (Docker + CRIU): full failover with a passing verdict,
a deliberately broken restore that validation catches, the rollback path, and a cold start
(images + captured disk, fresh processes) that rebuilds its state and validates.

Fixtures come from tests/live/conftest.py (prerequisites checked there, every container
removed in teardown); each test also fences its host at the end (the replacement carries the
same label) and runs on its own store folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

from persona.cli import main
from persona.recovery.fence import fence_host
from persona.recovery.source import StoreSource

pytestmark = [pytest.mark.live, pytest.mark.slow]


def _run(host: str, store: Path, out: Path, *extra: str,
         policy: str = "critical-path") -> tuple[int, dict[str, Any]]:
    code = 0
    try:
        main(["failover", "--host", host, "--policy", policy, "--store", str(store),
              "--inject-failure", "--json", str(out), "--validate-budget", "8",
              "--trace-dir", str(out.parent / "traces"), *extra])
    except SystemExit as e:
        code = int(e.code or 0)
    return code, json.loads(out.read_text())


@pytest.fixture
def fenced(lab: Any, test_host: str) -> Any:
    yield test_host
    fence_host(lab, test_host)


def _no_leftovers(lab: Any, res: dict[str, Any]) -> None:
    alive = {c["Id"] for c in lab.containers(all=True)}
    for a in res["attempts"]:
        tr = a["trace"]
        if isinstance(tr, str):
            tr = json.loads(Path(tr).read_text())
        if a["outcome"] != "validated" and tr is not None:
            assert tr["rolled_back"] is True
            assert not set(tr["containers"].values()) & alive, "a rolled-back replacement survived"


def test_full_failover_is_warm_detected_fast_and_validated(lab: Any, fenced: str,
                                                           tmp_path: Path) -> None:
    code, res = _run(fenced, tmp_path / "store", tmp_path / "fo.json")
    assert set(res["phases"]) == {"detect_s", "retrieve_s", "provision_s", "apply_s", "validate_s"}
    assert res["phases"]["detect_s"] <= 3.0
    first = res["attempts"][0]
    assert first["method"] == "persona" and first["warm"]["warm"], first["warm"]
    steps = json.loads(Path(first["trace"]).read_text())["steps"]
    restores = [s for s in steps if s["action"] == "CRIU restore"]
    assert len(restores) == 3 and all(s["criu"].get("pages_restored", 0) > 0 for s in restores)
    _no_leftovers(lab, res)
    assert res["validated"] and res["warm"] and code == 0, \
        f"verdict: {[(a['outcome'], a['error']) for a in res['attempts']]}"
    assert res["ttr_s"] > res["phases"]["detect_s"]


def test_starved_restore_is_caught_by_validation_and_rolled_back(lab: Any, fenced: str,
                                                                 tmp_path: Path) -> None:
    _code, res = _run(fenced, tmp_path / "store", tmp_path / "fo.json", "--fault", "starve")
    first = res["attempts"][0]
    assert first["outcome"] == "validation-failed"
    # the starved api (0.02 cores) must show where it hurts: latency or throughput
    assert "latency" in first["error"] or "throughput" in first["error"], first["error"]
    steps = json.loads(Path(first["trace"]).read_text())["steps"]
    api = next(s for s in steps if s["name"] == "api.process" and s["kind"] == "resources")
    assert api["alloc_cores"] == 0.02
    assert len(res["attempts"]) >= 2  # the next attempt ran (cold start: only one version)
    _no_leftovers(lab, res)


def test_broken_checkpoint_rolls_back_and_leaves_the_store_intact(lab: Any, fenced: str,
                                                                  tmp_path: Path) -> None:
    from persona.provision.apply import sha256_tree
    store = tmp_path / "store"
    _code, res = _run(fenced, store, tmp_path / "fo.json", "--fault", "broken-checkpoint")
    first = res["attempts"][0]
    assert first["outcome"] == "restore-failed" and "CRIU restore" in first["error"]
    tr = json.loads(Path(first["trace"]).read_text())
    failed = [s for s in tr["steps"] if s["outcome"] == "failed"]
    # the broken image fails in the container and again in the fresh one it is retried in
    assert len(failed) == 2 and {s["kind"] for s in failed} == {"process"}
    assert len({s["name"] for s in failed}) == 1
    assert any(s["action"] == "recreate after failed restore" for s in tr["steps"])
    _no_leftovers(lab, res)
    # the stored persona is untouched: it restores byte-identically twice and verifies
    from persona.store import Repository, verify
    assert verify(Repository.open(str(store)), read_data=True).ok
    src = StoreSource(str(store))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        v = src.versions(fenced)[-1]
        assert sha256_tree(src.fetch(fenced, v, Path(a))) == sha256_tree(src.fetch(fenced, v, Path(b)))
        assert (Path(a) / v / "process").is_dir()
    assert res["attempts"][1]["outcome"] != "restore-failed" or len(res["attempts"]) > 2


def test_cold_start_rebuilds_state_from_disk_and_validates(lab: Any, fenced: str,
                                                           tmp_path: Path) -> None:
    """Method (a) of the benchmark: the host's images plus its captured disk, processes started
    fresh. redis reloads its append-only file, the worker carries on from the stored counter, the
    api rebuilds its item index before it reports ready, and the replacement validates."""
    from lab_helpers import redis_cli

    from persona.lab import demo
    redis = f"persona-{fenced}-redis"
    ticks_before = int(redis_cli(lab, redis, "GET", "demo:worker:ticks"))
    started_before = demo.introspect(lab, fenced)["started"]
    code, res = _run(fenced, tmp_path / "store", tmp_path / "fo.json", policy="cold-start")
    (only,) = res["attempts"]
    assert only["method"] == "cold-start" and only["warm"] is None
    steps = json.loads(Path(only["trace"]).read_text())["steps"]
    assert not [s for s in steps if s["action"] == "CRIU restore"]
    unpacked = [s for s in steps if s["kind"] == "filesystem" and s["outcome"] == "ok"]
    assert any("redis" in s["detail"] for s in unpacked), unpacked
    assert res["validated"] and code == 0, \
        f"verdict: {[(a['outcome'], a['error']) for a in res['attempts']]}"
    state = next(m for m in res["verdict"]["metrics"] if m["name"] == "state")
    assert state["passed"] and state["evidence"]["fields_compared"] > 0
    # fresh processes, state from disk: not a restore of memory, not an empty start
    intro = demo.introspect(lab, fenced)
    assert intro["started"] != started_before and intro["index"]["ready"]
    assert intro["index"]["warmup"]["items"] >= 10000  # the whole catalogue, rebuilt
    assert int(redis_cli(lab, redis, "GET", "demo:worker:ticks")) > ticks_before
    info = redis_cli(lab, redis, "INFO", "persistence")
    assert "aof_enabled:1" in info and "loading:0" in info

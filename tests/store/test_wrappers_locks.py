"""Backend wrappers (retry, logging, concurrency limit) and lease-lock behaviour."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from persona.errors import StoreError
from persona.store import Policy, PutOptions, Repository, gc, prune, put, restore, verify
from persona.store.backend import ObjectNotFound, TransientStoreError
from persona.store.locks import LeaseLock, read_locks
from persona.store.memory import MemoryBackend
from persona.store.wrappers import LockingBackend, LoggingBackend, RetryBackend

from .conftest import tree_bytes


class FlakyBackend(MemoryBackend):
    """Fails the first ``failures`` calls of each operation with a transient error."""

    def __init__(self, failures: int) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.calls: dict[str, int] = {}

    def _maybe_fail(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.calls[op] <= self.failures:
            raise TransientStoreError(f"{op}: connection reset")

    def put(self, name: str, data: bytes) -> None:
        self._maybe_fail("put")
        super().put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._maybe_fail("get")
        return super().get(name, offset, length)


def test_retry_recovers_from_transient_errors() -> None:
    inner = FlakyBackend(failures=2)
    sleeps: list[float] = []
    b = RetryBackend(inner, attempts=3, sleep=sleeps.append)
    b.put("config", b"x")
    assert b.get("config") == b"x"
    assert inner.calls == {"put": 3, "get": 3} and len(sleeps) == 4
    # jittered exponential backoff: the second wait of an operation is never shorter
    assert sleeps[1] >= sleeps[0] and sleeps[3] >= sleeps[2]
    assert all(0 < s <= 2.0 for s in sleeps)


def test_retry_gives_up_and_does_not_retry_missing_objects() -> None:
    inner = FlakyBackend(failures=10)
    b = RetryBackend(inner, attempts=3, sleep=lambda _: None)
    with pytest.raises(TransientStoreError):
        b.put("config", b"x")
    assert inner.calls["put"] == 3
    ok = FlakyBackend(failures=0)
    rb = RetryBackend(ok, attempts=5, sleep=lambda _: None)
    with pytest.raises(ObjectNotFound):
        rb.get("nothing")
    assert ok.calls["get"] == 1


def test_logging_backend_logs_each_operation(caplog: pytest.LogCaptureFixture) -> None:
    b = LoggingBackend(MemoryBackend())
    with caplog.at_level(logging.DEBUG, logger="persona.store"):
        b.put("a", b"123")
        with pytest.raises(ObjectNotFound):
            b.get("b")
    msgs = [r.getMessage() for r in caplog.records]
    assert any("put a (3 B) ok" in m for m in msgs)
    assert any("get b" in m and "failed" in m for m in msgs)


def test_locking_backend_bounds_concurrency() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    class Slow(MemoryBackend):
        def put(self, name: str, data: bytes) -> None:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.02)
            with lock:
                active -= 1
            super().put(name, data)

    b = LockingBackend(Slow(), max_concurrent=2)
    ts = [threading.Thread(target=b.put, args=(f"x{i}", b"")) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert peak == 2 and len(list(b.list(""))) == 8
    with pytest.raises(ValueError):
        LockingBackend(MemoryBackend(), 0)


def test_lease_is_refreshed_while_held() -> None:
    backend = MemoryBackend()
    with LeaseLock(backend, "shared", lease=0.3):
        time.sleep(1.0)  # three lease periods: only refreshes keep it alive
        (lk,) = read_locks(backend)
        assert lk.live(time.time()) and lk.kind == "shared"
        with pytest.raises(StoreError, match="locked"):
            LeaseLock(backend, "exclusive", wait=0.2, poll=0.05).acquire()
    assert read_locks(backend) == []  # released
    with LeaseLock(backend, "exclusive", wait=0.2), pytest.raises(StoreError, match="locked"):
        LeaseLock(backend, "shared", wait=0.2, poll=0.05).acquire()
    # two shared locks coexist
    with LeaseLock(backend, "shared"), LeaseLock(backend, "shared", wait=0.2):
        assert len(read_locks(backend)) == 2


def test_encrypted_store_on_s3_prune_gc_verify(
    s3_url: str, image_versions: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONA_STORE_KEY", "s3 secret")
    repo = Repository.init(s3_url, encrypt=True, pack_size=128 * 1024)
    for d in image_versions:
        put(repo, d, "h", PutOptions(tags=(d.name,)))
    packs_before = len(list(repo.backend.list("data/")))
    prune(repo, Policy(keep_last=1))
    gc(repo, grace_s=0)
    fresh = Repository.open(s3_url)
    assert verify(fresh, read_data=True).ok
    assert len(list(fresh.backend.list("data/"))) <= packs_before
    restore(fresh, fresh.resolve("h", "latest"), tmp_path / "out")
    assert tree_bytes(tmp_path / "out") == tree_bytes(image_versions[-1])
    monkeypatch.setenv("PERSONA_STORE_KEY", "wrong")
    with pytest.raises(StoreError, match="wrong encryption key"):
        Repository.open(s3_url)

"""One conformance suite for every backend (local, memory, S3 via moto, wrapped local)."""

from __future__ import annotations

import os
import threading

import pytest

from persona.errors import StoreError
from persona.store.backend import Backend, ObjectNotFound


def test_put_get_roundtrip(backend: Backend) -> None:
    data = os.urandom(100_000)
    backend.put("data/ab/abc", data)
    assert backend.get("data/ab/abc") == data
    assert backend.stat("data/ab/abc").size == len(data)


def test_empty_blob(backend: Backend) -> None:
    backend.put("refs/h/x", b"")
    assert backend.get("refs/h/x") == b""
    assert backend.stat("refs/h/x").size == 0
    assert [b.name for b in backend.list("refs/")] == ["refs/h/x"]


def test_range_reads(backend: Backend) -> None:
    data = bytes(range(256)) * 40
    backend.put("p", data)
    assert backend.get("p", 10, 20) == data[10:30]
    assert backend.get("p", 5000) == data[5000:]
    assert backend.get("p", len(data) - 3, 100) == data[-3:]
    assert backend.get("p", 0, 0) == b""


def test_overwrite_replaces(backend: Backend) -> None:
    backend.put("config", b"one")
    backend.put("config", b"two!")
    assert backend.get("config") == b"two!"


def test_missing_object(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound):
        backend.get("data/00/nothing")
    with pytest.raises(ObjectNotFound):
        backend.stat("data/00/nothing")
    with pytest.raises(ObjectNotFound):
        backend.get("data/00/nothing", 3, 4)


def test_delete_is_idempotent(backend: Backend) -> None:
    backend.put("locks/l1", b"x")
    backend.delete("locks/l1")
    backend.delete("locks/l1")
    with pytest.raises(ObjectNotFound):
        backend.get("locks/l1")
    assert list(backend.list("locks/")) == []


def test_list_prefixes_sorted(backend: Backend) -> None:
    names = ["index/b", "index/a", "data/01/x", "data/02/y", "snapshots/s", "indexes"]
    for n in names:
        backend.put(n, n.encode())
    assert [b.name for b in backend.list("index/")] == ["index/a", "index/b"]
    assert [b.name for b in backend.list("data/")] == ["data/01/x", "data/02/y"]
    assert [b.name for b in backend.list("")] == sorted(names)
    assert [b.name for b in backend.list("nothing/")] == []
    sizes = {b.name: b.size for b in backend.list("")}
    assert sizes["snapshots/s"] == len(b"snapshots/s")


@pytest.mark.parametrize(
    "name", ["../escape", "/abs", "a//b", "a/./b", "a/../../b", "", "a b", "a\\b", "data/\x00"]
)
def test_rejects_unsafe_names(backend: Backend, name: str) -> None:
    with pytest.raises(StoreError):
        backend.put(name, b"x")
    with pytest.raises(StoreError):
        backend.get(name)


def test_concurrent_puts(backend: Backend) -> None:
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                backend.put(f"data/{i:02d}/{j}", bytes([i]) * 1000)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(list(backend.list("data/"))) == 40
    assert backend.get("data/03/9") == b"\x03" * 1000

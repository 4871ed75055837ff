"""In-memory backend for tests and for throw-away stores (``memory://name``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from persona.store.backend import BlobInfo, ObjectNotFound, check_name, check_prefix, check_range

_SHARED: dict[str, MemoryBackend] = {}
_SHARED_LOCK = threading.Lock()


class MemoryBackend:
    """A thread-safe dict of blobs. ``MemoryBackend.named(n)`` shares one instance per name."""

    def __init__(self, name: str = "anonymous") -> None:
        self._name = name
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryBackend:
        with _SHARED_LOCK:
            if name not in _SHARED:
                _SHARED[name] = cls(name)
            return _SHARED[name]

    @property
    def location(self) -> str:
        return f"memory://{self._name}"

    def put(self, name: str, data: bytes) -> None:
        check_name(name)
        with self._lock:
            self._blobs[name] = (bytes(data), time.time())

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        check_name(name)
        check_range(name, offset, length)
        with self._lock:
            item = self._blobs.get(name)
        if item is None:
            raise ObjectNotFound(name, self.location)
        data = item[0]
        end = len(data) if length is None else offset + length
        return data[offset:end]

    def stat(self, name: str) -> BlobInfo:
        check_name(name)
        with self._lock:
            item = self._blobs.get(name)
        if item is None:
            raise ObjectNotFound(name, self.location)
        return BlobInfo(name, len(item[0]), item[1])

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        check_prefix(prefix)
        with self._lock:
            items = [(n, len(d), t) for n, (d, t) in self._blobs.items() if n.startswith(prefix)]
        for n, size, t in sorted(items):
            yield BlobInfo(n, size, t)

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self._blobs.pop(name, None)

    def close(self) -> None:
        pass

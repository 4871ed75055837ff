"""Backend wrappers with the same interface: retry, logging, and a concurrency-limiting lock."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from persona.store.backend import Backend, BlobInfo, TransientStoreError

T = TypeVar("T")
log = logging.getLogger("persona.store")


class RetryBackend:
    """Retries operations that fail with :class:`TransientStoreError`, with jittered backoff."""

    def __init__(
        self,
        inner: Backend,
        *,
        attempts: int = 5,
        base_delay: float = 0.05,
        max_delay: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep

    @property
    def location(self) -> str:
        return self.inner.location

    def _run(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except TransientStoreError as e:
                if attempt == self.attempts:
                    raise
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
                log.warning(
                    "%s failed (attempt %d/%d): %s; retrying", what, attempt, self.attempts, e
                )
                self._sleep(delay)
        raise AssertionError("unreachable")

    def put(self, name: str, data: bytes) -> None:
        self._run(f"put {name}", lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._run(f"get {name}", lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> BlobInfo:
        return self._run(f"stat {name}", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return iter(self._run(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._run(f"delete {name}", lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()


class LoggingBackend:
    """Logs every operation (name, size, duration) at DEBUG level on ``persona.store``."""

    def __init__(self, inner: Backend, logger: logging.Logger | None = None) -> None:
        self.inner = inner
        self.log = logger or log

    @property
    def location(self) -> str:
        return self.inner.location

    def _timed(self, what: str, fn: Callable[[], T]) -> T:
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:
            self.log.debug("%s failed after %.1f ms: %s", what, (time.perf_counter() - t0) * 1e3, e)
            raise
        self.log.debug("%s ok in %.1f ms", what, (time.perf_counter() - t0) * 1e3)
        return out

    def put(self, name: str, data: bytes) -> None:
        self._timed(f"put {name} ({len(data)} B)", lambda: self.inner.put(name, data))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._timed(
            f"get {name}[{offset}:{length}]", lambda: self.inner.get(name, offset, length)
        )

    def stat(self, name: str) -> BlobInfo:
        return self._timed(f"stat {name}", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return iter(self._timed(f"list {prefix}", lambda: list(self.inner.list(prefix))))

    def delete(self, name: str) -> None:
        self._timed(f"delete {name}", lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()


class LockingBackend:
    """Bounds the number of concurrent operations on the inner backend with a semaphore.

    Protects backends (and remote services) from unbounded parallelism when the repository
    layer uses thread pools; ``max_concurrent=1`` serialises all access.
    """

    def __init__(self, inner: Backend, max_concurrent: int = 8) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be >= 1")
        self.inner = inner
        self._sem = threading.BoundedSemaphore(max_concurrent)

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, name: str, data: bytes) -> None:
        with self._sem:
            self.inner.put(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self._sem:
            return self.inner.get(name, offset, length)

    def stat(self, name: str) -> BlobInfo:
        with self._sem:
            return self.inner.stat(name)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        with self._sem:
            items = list(self.inner.list(prefix))
        return iter(items)

    def delete(self, name: str) -> None:
        with self._sem:
            self.inner.delete(name)

    def close(self) -> None:
        self.inner.close()

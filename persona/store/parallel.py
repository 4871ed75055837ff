"""A bounded, order-preserving parallel map for the chunk pipelines (hashing, zstd and
AES release the GIL, so threads help on multi-core machines)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """Threads for chunk pipelines: ``$PERSONA_STORE_THREADS``, default 1.

    Per-chunk Python work holds the GIL, so on the 2-core reference machine extra threads
    measured slower for ingest and within noise for restore; set the variable on bigger hosts.
    """
    env = os.environ.get("PERSONA_STORE_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            return 1
    return 1


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None, window: int = 64
) -> Iterator[R]:
    """``map(fn, items)`` computed by ``workers`` threads, at most ``window`` items ahead."""
    n = workers or default_workers()
    if n <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(n, thread_name_prefix="persona-store") as ex:
        pending: deque[Future[R]] = deque()
        for it in items:
            pending.append(ex.submit(fn, it))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

"""Lease locks stored in the backend (``locks/<id>``), refreshed while held.

Writers (``put``) hold *shared* locks; ``gc``/``prune`` hold an *exclusive* lock. Each side
first writes its own lock and then looks for conflicting live locks, so with read-after-write
consistency at least one of two racing parties sees the other and backs off. A lock is live
until its ``expires`` time; the holder refreshes it every ``lease/3`` seconds from a daemon
thread, so a killed process's lock expires by itself (no stale-lock cleanup needed by hand).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from persona.errors import StoreError
from persona.store.backend import Backend, ObjectNotFound


@dataclass(frozen=True)
class LockInfo:
    name: str
    kind: str
    hostname: str
    pid: int
    created: float
    expires: float

    def live(self, now: float) -> bool:
        return self.expires > now


def read_locks(backend: Backend) -> list[LockInfo]:
    out = []
    for b in backend.list("locks/"):
        try:
            d = json.loads(backend.get(b.name))
            out.append(
                LockInfo(
                    b.name,
                    str(d["kind"]),
                    str(d["hostname"]),
                    int(d["pid"]),
                    float(d["created"]),
                    float(d["expires"]),
                )
            )
        except ObjectNotFound:
            continue
        except (ValueError, KeyError, TypeError):
            # unreadable lock: treat as live for one default lease from its mtime
            out.append(LockInfo(b.name, "exclusive", "?", 0, b.mtime, b.mtime + 60.0))
    return out


class LeaseLock:
    def __init__(
        self,
        backend: Backend,
        kind: str,
        *,
        lease: float = 60.0,
        wait: float = 300.0,
        poll: float = 0.2,
    ) -> None:
        if kind not in ("shared", "exclusive"):
            raise ValueError(kind)
        self.backend = backend
        self.kind = kind
        self.lease = lease
        self.wait = wait
        self.poll = poll
        self.name = f"locks/{secrets.token_hex(16)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._created = 0.0

    def _write(self) -> None:
        now = time.time()
        body = {
            "kind": self.kind,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "created": self._created or now,
            "expires": now + self.lease,
        }
        self.backend.put(self.name, json.dumps(body).encode())

    def _conflicts(self) -> list[LockInfo]:
        now = time.time()
        out = []
        for lk in read_locks(self.backend):
            if lk.name == self.name or not lk.live(now):
                continue
            if self.kind == "exclusive" or lk.kind == "exclusive":
                out.append(lk)
        return out

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        self._created = time.time()
        while True:
            self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self.backend.delete(self.name)
            if time.monotonic() >= deadline:
                c = conflicts[0]
                raise StoreError(
                    f"store {self.backend.location} is locked ({c.kind} lock {c.name} held by pid"
                    f" {c.pid} on {c.hostname}, expires in {c.expires - time.time():.0f}s);"
                    " retry later (an abandoned lock expires by itself)"
                )
            time.sleep(self.poll * (0.5 + random.random()))
        self._thread = threading.Thread(
            target=self._refresh, name=f"lease {self.name}", daemon=True
        )
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with contextlib.suppress(StoreError):  # the lease covers a few missed refreshes
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete(self.name)

    def __enter__(self) -> LeaseLock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

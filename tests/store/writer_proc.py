"""Subprocess body for crash and concurrency tests: put folders into a store in a loop.

Usage: python -m tests.store.writer_proc STORE HOST N WORKDIR SRC [SRC ...]

Iteration i hard-links SRC[i % len] into WORKDIR/<pid>-<i>, adds a fresh random file (so every
put writes new packs), stores it tagged with that folder's name, and prints a line.
"ready" is printed once the store is open, so a test can time its kill from there.
With CRASH_AT_PUT=k in the environment the process SIGKILLs itself just before its k-th
backend put (after the temporary file of that put was written, for a local store), which
lands a crash deterministically between any two ordered writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

from persona.store import Backend, PutOptions, Repository, put
from persona.store.url import unwrap


class _CrashingBackend:
    def __init__(self, inner: Backend, at: int) -> None:
        self.inner = inner
        self.at = at
        self.puts = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, name: str, data: bytes) -> None:
        self.puts += 1
        if self.puts == self.at:
            root = getattr(unwrap(self.inner), "root", None)
            if root is not None:  # leave a half-written temporary file behind, as a crash would
                tmp = Path(root) / Path(name).parent / f".tmp-{Path(name).name}.crash"
                tmp.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        self.inner.put(name, data)


def main(argv: list[str]) -> None:
    url, host, n, work = argv[0], argv[1], int(argv[2]), Path(argv[3])
    srcs = [Path(p) for p in argv[4:]]
    repo = Repository.open(url)
    crash_at = int(os.environ.get("CRASH_AT_PUT", "0"))
    if crash_at:
        repo.backend = _CrashingBackend(repo.backend, crash_at)
    print("ready", flush=True)
    for i in range(n):
        d = work / f"{os.getpid()}-{i}"
        shutil.copytree(srcs[i % len(srcs)], d, symlinks=True, copy_function=os.link)
        (d / "nonce.bin").write_bytes(os.urandom(150_000))
        v = put(repo, d, host, PutOptions(tags=(d.name,)))
        print(f"put {v.version} {d.name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

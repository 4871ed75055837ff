"""Subprocess body for crash and concurrency tests: put folders into a store in a loop.

Usage: python -m tests.store.writer_proc STORE HOST N WORKDIR SRC [SRC ...]

Iteration i hard-links SRC[i % len] into WORKDIR/<pid>-<i>, adds a fresh random file (so every
put writes new packs), stores it tagged with that folder's name, and prints a line.
"ready" is printed once the store is open, so a test can time its kill from there.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from persona.store import PutOptions, Repository, put


def main(argv: list[str]) -> None:
    url, host, n, work = argv[0], argv[1], int(argv[2]), Path(argv[3])
    srcs = [Path(p) for p in argv[4:]]
    repo = Repository.open(url)
    print("ready", flush=True)
    for i in range(n):
        d = work / f"{os.getpid()}-{i}"
        shutil.copytree(srcs[i % len(srcs)], d, symlinks=True, copy_function=os.link)
        (d / "nonce.bin").write_bytes(os.urandom(150_000))
        v = put(repo, d, host, PutOptions(tags=(d.name,)))
        print(f"put {v.version} {d.name}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

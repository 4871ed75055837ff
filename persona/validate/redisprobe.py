"""Redis measurement and the ``redis-benchmark`` reference, both run *inside* a host's network
namespace (the demo's redis binds 127.0.0.1) via ``nsenter -t PID -n``.

``python -m persona.validate.redisprobe PORT CONNS WINDOWS WINDOW_S SEED`` prints JSON
``{"ops_per_s": [...], "dbsize": n}`` (closed loop of read-only GETs, stdlib only).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import sys
from typing import Any

from persona.errors import LabError, ValidationError


async def _cmd(r: asyncio.StreamReader, w: asyncio.StreamWriter, *args: str) -> bytes:
    w.write(
        f"*{len(args)}\r\n".encode()
        + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    )
    await w.drain()
    line = await r.readline()
    if line[:1] == b"$":
        n = int(line[1:])
        return b"" if n < 0 else (await r.readexactly(n + 2))[:-2]
    if line[:1] == b"-":
        raise ValueError(line.decode().strip())
    return line.strip()


async def _measure(
    port: int, conns: int, windows: int, window_s: float, seed: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    counts = [0] * windows
    rng = random.Random(seed)
    t0 = loop.time()
    end = t0 + windows * window_s

    async def worker() -> None:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
        try:
            while loop.time() < end:
                await asyncio.wait_for(_cmd(r, w, "GET", f"item:{rng.randrange(2000)}"), 2.0)
                k = int((loop.time() - t0) / window_s)
                if k < windows:
                    counts[k] += 1
        finally:
            w.close()

    await asyncio.gather(*(worker() for _ in range(conns)), return_exceptions=True)
    r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
    dbsize = int((await _cmd(r, w, "DBSIZE")).lstrip(b":"))
    w.close()
    return {"ops_per_s": [c / window_s for c in counts], "dbsize": dbsize}


def measure(
    netns_pid: int,
    port: int = 6379,
    conns: int = 4,
    windows: int = 5,
    window_s: float = 0.5,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the probe inside the namespace of ``netns_pid``; bounded by its windows + 10 s."""
    cmd = [
        "nsenter",
        "-t",
        str(netns_pid),
        "-n",
        sys.executable,
        "-m",
        "persona.validate.redisprobe",
        str(port),
        str(conns),
        str(windows),
        str(window_s),
        str(seed),
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=windows * window_s + 10)
    except subprocess.TimeoutExpired as e:
        raise ValidationError(f"redis probe in netns of pid {netns_pid} timed out") from e
    if res.returncode != 0:
        raise ValidationError(
            f"redis probe in netns of pid {netns_pid} failed: {res.stderr.strip()[-300:]}"
        )
    return dict(json.loads(res.stdout))


def ensure_redis_tools() -> str:
    """Path of ``redis-benchmark``; installs Debian's redis-tools when missing (needs root)."""
    path = shutil.which("redis-benchmark")
    if path:
        return path
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "redis-tools"],
            check=True,
            capture_output=True,
            timeout=300,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise LabError(
            "redis-benchmark is missing and `apt-get install redis-tools` failed; "
            "run it by hand (as root), after `apt-get update` if needed"
        ) from e
    path = shutil.which("redis-benchmark")
    if not path:
        raise LabError("redis-tools installed but redis-benchmark is not on PATH")
    return path


def redis_benchmark(
    netns_pid: int, port: int = 6379, requests: int = 20000, clients: int = 4, tests: str = "get"
) -> dict[str, float]:
    """``redis-benchmark -t TESTS --csv`` inside the namespace: ``{test: requests/s}``.

    Read-only by default (GET of ``key:__rand_int__``-style keys that do not exist).
    """
    exe = ensure_redis_tools()
    cmd = [
        "nsenter",
        "-t",
        str(netns_pid),
        "-n",
        exe,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-t",
        tests,
        "--csv",
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        raise ValidationError("redis-benchmark timed out after 120 s") from e
    if res.returncode != 0:
        raise ValidationError(f"redis-benchmark failed: {res.stderr.strip()[-300:]}")
    out: dict[str, float] = {}
    for line in res.stdout.splitlines():
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) >= 2 and parts[0] != "test":
            try:
                out[parts[0]] = float(parts[1])
            except ValueError:
                continue
    if not out:
        raise ValidationError(f"redis-benchmark printed no results: {res.stdout[-300:]}")
    return out


if __name__ == "__main__":
    a = sys.argv[1:]
    print(
        json.dumps(asyncio.run(_measure(int(a[0]), int(a[1]), int(a[2]), float(a[3]), int(a[4]))))
    )

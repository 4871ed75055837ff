"""Demo background worker: seeds the catalogue once, then ticks over one persistent redis connection.

The catalogue (``DEMO_CATALOGUE`` items, default 10,000 values of 128-896 bytes: about 5 MB)
is seeded only into an empty redis; redis keeps it on disk (append-only file), so a host
started again from its disk finds it there and the worker carries on from the stored counters.

Every tick INCRs ``demo:worker:ticks`` and rewrites one item of the hot set (the first
``DEMO_ITEMS``, default 2,000: what clients and the validation corpus request), so the counter proves that the
worker's ESTABLISHED connection to redis survived a checkpoint/restore (it never reconnects
silently: a reconnect increments ``demo:worker:reconnects``).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import RedisConn, when_loaded

ITEMS = int(os.environ.get("DEMO_CATALOGUE", "10000"))
HOT = int(os.environ.get("DEMO_ITEMS", "2000"))
BATCH = 500
TICK = float(os.environ.get("DEMO_TICK_S", "0.1"))


def connect() -> RedisConn:
    for _ in range(100):
        try:
            return RedisConn("127.0.0.1", 6379, 5.0)
        except OSError:
            time.sleep(0.2)
    raise SystemExit("redis did not come up")


c = connect()
if not when_loaded(c, "EXISTS", "demo:seeded"):
    for lo in range(0, ITEMS, BATCH):
        pairs: list[object] = []
        for i in range(lo, min(lo + BATCH, ITEMS)):
            pairs += [f"item:{i}", os.urandom(64 + (i % 7) * 64).hex()]
        c.cmd("MSET", *pairs)
    c.cmd("SET", "demo:seeded", ITEMS)
c.cmd("SET", "demo:worker:pid", os.getpid())
n = int(c.cmd("GET", "demo:worker:ticks") or 0)  # carry on where the stored counter stopped
while True:
    try:
        c.cmd("INCR", "demo:worker:ticks")
        c.cmd("SET", f"item:{n % HOT}", os.urandom(96).hex())
    except (OSError, ConnectionError):
        c = connect()
        c.cmd("INCR", "demo:worker:reconnects")
    n += 1
    time.sleep(TICK)

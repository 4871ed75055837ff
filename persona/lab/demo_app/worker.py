"""Demo background worker: seeds the dataset, then ticks over one persistent redis connection.

Every tick INCRs ``demo:worker:ticks`` and rewrites one item, so the counter proves that the
worker's ESTABLISHED connection to redis survived a checkpoint/restore (it never reconnects
silently: a reconnect increments ``demo:worker:reconnects``).
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import RedisConn

ITEMS = int(os.environ.get("DEMO_ITEMS", "2000"))
TICK = float(os.environ.get("DEMO_TICK_S", "0.1"))


def connect() -> RedisConn:
    for _ in range(100):
        try:
            return RedisConn("127.0.0.1", 6379, 5.0)
        except OSError:
            time.sleep(0.2)
    raise SystemExit("redis did not come up")


c = connect()
if not c.cmd("EXISTS", "demo:seeded"):
    for i in range(ITEMS):
        c.cmd("SET", f"item:{i}", os.urandom(64 + (i % 7) * 64).hex())
    c.cmd("SET", "demo:seeded", ITEMS)
c.cmd("SET", "demo:worker:pid", os.getpid())
n = 0
while True:
    try:
        c.cmd("INCR", "demo:worker:ticks")
        c.cmd("SET", f"item:{n % ITEMS}", os.urandom(96).hex())
    except (OSError, ConnectionError):
        c = connect()
        c.cmd("INCR", "demo:worker:reconnects")
    n += 1
    time.sleep(TICK)

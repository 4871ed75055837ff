"""Demo HTTP API: a pool of persistent redis connections, a config file, an introspection endpoint.

Behaviour depends on state (the redis dataset and the API's in-memory item index), config (pool
size, work rounds, feature flags) and resources (CPU quota: each request hashes ``work_rounds``
times), so a bad restore shows. Config is re-read when the file's mtime changes (checked once a
second).

The item index is what a real service rebuilds at start-up (cache warm-up, derived index): every
item of the catalogue with its fingerprint (``index_rounds`` sha256 rounds over the value, a
stand-in for the per-document work of building a search index). It is built from redis when the
process starts, kept coherent through redis keyspace notifications, and ``/healthz`` answers 503
until it is complete: a process started fresh is not ready before it has done that work, a
process restored from a checkpoint has it in memory already.

Resume self-check (off unless ``DEMO_RESUME_CHECK_ITEMS`` > 0; the lab's ``demo-check`` host turns
it on): a process that finds it was stopped for longer than ``DEMO_RESUME_AFTER_S`` (its clock
jumped: frozen, or checkpointed and restored) cannot know what it missed, so before it reports
ready again it re-verifies that many index entries (their fingerprints recomputed: CPU work, so
its duration follows the CPU quota it was given). ``DEMO_READY_FILE`` (default
``/tmp/persona-ready``) carries a heartbeat, ``ready <unix time>`` every 0.1 s while ready and
``checking <n>`` during a self-check: what the restorer waits for after a process restore.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resp import Pool, RedisConn, when_loaded

CONFIG_PATH = os.environ.get("DEMO_CONFIG", "/etc/demo/api.json")
VERSION = "demo-api/1.3.0"
STARTED = time.time()
READY_FILE = os.environ.get("DEMO_READY_FILE", "/tmp/persona-ready")
RESUME_CHECK_ITEMS = int(os.environ.get("DEMO_RESUME_CHECK_ITEMS", "0"))
RESUME_AFTER_S = float(os.environ.get("DEMO_RESUME_AFTER_S", "2.0"))
HEARTBEAT_S = 0.1


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config: dict = {}
        self.config_mtime = 0.0
        self.config_sha = ""
        self.pool: Pool | None = None
        self.requests = 0
        self.errors = 0
        self.index: dict[str, tuple[bytes, bytes]] = {}  # item key -> (value, fingerprint)
        self.index_ready = False
        self.index_rounds = 0
        self.dirty: set[str] = set()  # keys changed while the index was being built
        self.warmup: dict = {"state": "not started"}
        self.resume: dict = {"checks": 0}
        self.reload()

    def reload(self) -> None:
        st = os.stat(CONFIG_PATH)
        if st.st_mtime == self.config_mtime:
            return
        with open(CONFIG_PATH, "rb") as f:
            raw = f.read()
        cfg = json.loads(raw)
        old = self.pool
        if old is None or cfg["pool_size"] != self.config.get("pool_size"):
            self.pool = Pool("127.0.0.1", 6379, int(cfg["pool_size"]), float(cfg["redis_timeout_s"]))
        self.config, self.config_mtime = cfg, st.st_mtime
        self.config_sha = hashlib.sha256(raw).hexdigest()
        rounds = int(cfg.get("index_rounds", 0))
        if rounds != self.index_rounds:  # the index is derived with these rounds: rebuild it
            self.index_rounds = rounds
            if old is not None:
                threading.Thread(target=build_index, daemon=True).start()


def fingerprint(value: bytes, rounds: int) -> bytes:
    d = value
    for _ in range(rounds):
        d = hashlib.sha256(d).digest()
    return d


def wait_for_redis() -> State:
    for _ in range(100):
        try:
            return State()
        except OSError:
            time.sleep(0.2)
    raise SystemExit("redis did not come up on 127.0.0.1:6379")


S = wait_for_redis()


def refresh(key: str) -> None:
    """Re-read one item after redis said it changed."""
    pool = S.pool
    assert pool is not None
    with pool.conn() as c:
        value = c.cmd("GET", f"item:{key}")
    if value is None:
        S.index.pop(key, None)
    else:
        S.index[key] = (value, fingerprint(value, S.index_rounds))


def changed(key: str) -> None:
    with S.lock:
        if not S.index_ready:
            S.dirty.add(key)
            return
    refresh(key)


def build_index() -> None:
    """Warm-up: every item of the catalogue from redis (SCAN + MGET), fingerprinted."""
    print(f"{time.time():.3f} building the index", file=sys.stderr, flush=True)
    with S.lock:
        S.index_ready = False
    t0, cpu0 = time.monotonic(), time.process_time()
    S.warmup = {"state": "waiting for the dataset"}
    c = RedisConn("127.0.0.1", 6379, 30.0)
    try:
        deadline = time.monotonic() + 60
        while not when_loaded(c, "EXISTS", "demo:seeded") and time.monotonic() < deadline:
            time.sleep(0.1)  # a new host: the worker is seeding the catalogue
        S.warmup = {"state": "building"}
        with S.lock:  # the scan reads every change made so far; only later ones are replayed
            S.dirty.clear()
        index: dict[str, tuple[bytes, bytes]] = {}
        cursor = "0"
        while True:
            cursor_b, keys = when_loaded(c, "SCAN", cursor, "MATCH", "item:*", "COUNT", 1000)
            for lo in range(0, len(keys), 500):
                batch = keys[lo : lo + 500]
                for k, v in zip(batch, c.cmd("MGET", *batch), strict=True):
                    if v is not None:
                        index[k.decode()[len("item:") :]] = (v, fingerprint(v, S.index_rounds))
            S.warmup = {"state": "building", "items": len(index)}
            cursor = cursor_b.decode()
            if cursor == "0":
                break
    finally:
        c.close()
    S.index.update(index)
    for k in set(S.index) - set(index):
        S.index.pop(k, None)
    while True:  # changes seen while building: apply them, then serve
        with S.lock:
            dirty, S.dirty = S.dirty, set()
            if not dirty:
                S.index_ready = True
                break
        for k in dirty:
            refresh(k)
    S.warmup = {
        "state": "done",
        "items": len(S.index),
        "rounds": S.index_rounds,
        "seconds": round(time.monotonic() - t0, 3),
        "cpu_seconds": round(time.process_time() - cpu0, 3),
    }


def subscribe() -> None:
    """Keyspace notifications of item keys -> index updates. A lost subscription may have
    missed changes: the index is rebuilt after reconnecting."""
    first = True
    while True:
        try:
            c = RedisConn("127.0.0.1", 6379, 5.0)
            when_loaded(c, "PSUBSCRIBE", "__keyspace@0__:item:*")
            c.sock.settimeout(None)
            if first or S.index_ready:  # (a build still running picks up changes itself)
                threading.Thread(target=build_index, daemon=True).start()
            first = False
            while True:
                msg = c.read_push()
                if isinstance(msg, list) and len(msg) == 4 and msg[0] == b"pmessage":
                    changed(msg[2].decode().split(":", 2)[2])
        except (OSError, ConnectionError, RuntimeError) as e:
            print(f"{time.time():.3f} subscription lost ({e!r}): resubscribing, then the index "
                  "is rebuilt", file=sys.stderr, flush=True)
            time.sleep(0.2)


def _heartbeat(text: str) -> None:
    tmp = READY_FILE + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, READY_FILE)


def resume_check(gap_s: float) -> None:
    """Re-verify up to RESUME_CHECK_ITEMS index entries after a pause (CPU-bound)."""
    print(f"{time.time():.3f} paused {gap_s:.1f} s: self-check", file=sys.stderr, flush=True)
    t0, cpu0 = time.monotonic(), time.process_time()
    keys = sorted(S.index, key=lambda k: int(k) if k.isdigit() else 0)[:RESUME_CHECK_ITEMS]
    stale = 0
    for k in keys:
        entry = S.index.get(k)
        if entry is not None and fingerprint(entry[0], S.index_rounds) != entry[1]:
            stale += 1
    S.resume = {
        "checks": int(S.resume.get("checks", 0)) + 1,
        "gap_s": round(gap_s, 3),
        "items": len(keys),
        "stale": stale,
        "seconds": round(time.monotonic() - t0, 3),
        "cpu_seconds": round(time.process_time() - cpu0, 3),
    }


def heartbeat() -> None:
    """Ready-file heartbeat; a clock jump of more than RESUME_AFTER_S starts a self-check.

    The clock is read once per round, at the same place, so a pause anywhere in the loop
    falls between two readings (only the self-check's own time is taken out)."""
    prev = time.time()
    while True:
        time.sleep(HEARTBEAT_S)
        now = time.time()
        gap, prev = now - prev, now
        if RESUME_CHECK_ITEMS > 0 and gap > RESUME_AFTER_S + HEARTBEAT_S and S.index_ready:
            _heartbeat(f"checking {RESUME_CHECK_ITEMS}")
            resume_check(gap)
            prev = time.time()
        if S.index_ready or not S.config.get("features", {}).get("cache_hot_items"):
            _heartbeat(f"ready {time.time():.3f}")


def watch_config() -> None:
    while True:
        time.sleep(1)
        try:
            S.reload()
        except Exception as e:  # keep serving on a bad edit; /introspect shows the error
            S.config["reload_error"] = str(e)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def send_json(self, code: int, body: dict) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        with S.lock:
            S.requests += 1
        try:
            if self.path == "/introspect":
                return self.introspect()
            if self.path == "/healthz":
                if S.index_ready or not S.config.get("features", {}).get("cache_hot_items"):
                    return self.send_json(200, {"ok": True})
                return self.send_json(503, {"ok": False, "warmup": S.warmup})
            if self.path.startswith("/item/"):
                return self.item(self.path[len("/item/") :])
            self.send_json(404, {"error": "unknown path"})
        except Exception as e:
            with S.lock:
                S.errors += 1
            self.send_json(503, {"error": str(e)})

    def item(self, key: str) -> None:
        cfg, pool = S.config, S.pool
        assert pool is not None
        feats = cfg.get("features", {})
        entry = S.index.get(key) if feats.get("cache_hot_items") else None
        if entry is None:
            with pool.conn() as c:
                got = c.cmd("GET", f"item:{key}")
                c.cmd("INCR", "demo:api:reads")
            if got is None:
                return self.send_json(404, {"error": f"no item {key}"})
            entry = (got, fingerprint(got, S.index_rounds))
            if feats.get("cache_hot_items"):
                S.index.setdefault(key, entry)
        value, fp = entry
        digest = value
        for _ in range(int(cfg.get("work_rounds", 0))):  # CPU work: latency follows the CPU quota
            digest = hashlib.sha256(digest).digest()
        body = {"key": key, "len": len(value)}
        if feats.get("checksum_responses"):
            body["sha"] = digest.hex()[:16]
            body["fp"] = fp.hex()[:16]
        self.send_json(200, body)

    def introspect(self) -> None:
        pool = S.pool
        assert pool is not None
        self.send_json(
            200,
            {
                "version": VERSION,
                "pid": os.getpid(),
                "started": STARTED,
                "config_path": CONFIG_PATH,
                "config_sha256": S.config_sha,
                "config": S.config,
                "pool": {"size": pool.size, "in_use": pool.in_use, "waits": pool.waits},
                "requests": S.requests,
                "errors": S.errors,
                "hot_items": len(S.index),
                "index": {"ready": S.index_ready, "items": len(S.index), "warmup": S.warmup},
                "resume": S.resume,
            },
        )


if __name__ == "__main__":
    threading.Thread(target=watch_config, daemon=True).start()
    threading.Thread(target=subscribe, daemon=True).start()
    threading.Thread(target=heartbeat, daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()

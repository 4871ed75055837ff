"""Demo HTTP API: a pool of persistent redis connections, a config file, an introspection endpoint.

Behaviour depends on state (the redis dataset), config (pool size, work rounds, feature flags)
and resources (CPU quota: each request hashes ``work_rounds`` times), so a bad restore shows.
Config is re-read when the file's mtime changes (checked once a second).
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
from resp import Pool

CONFIG_PATH = os.environ.get("DEMO_CONFIG", "/etc/demo/api.json")
VERSION = "demo-api/1.3.0"
STARTED = time.time()


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.config: dict = {}
        self.config_mtime = 0.0
        self.config_sha = ""
        self.pool: Pool | None = None
        self.requests = 0
        self.errors = 0
        self.hot: dict[str, bytes] = {}
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
        self.hot.clear()


def wait_for_redis() -> State:
    for _ in range(100):
        try:
            return State()
        except OSError:
            time.sleep(0.2)
    raise SystemExit("redis did not come up on 127.0.0.1:6379")


S = wait_for_redis()


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
                return self.send_json(200, {"ok": True})
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
        value = S.hot.get(key) if feats.get("cache_hot_items") else None
        if value is None:
            with pool.conn() as c:
                value = c.cmd("GET", f"item:{key}")
                c.cmd("INCR", "demo:api:reads")
            if value is None:
                return self.send_json(404, {"error": f"no item {key}"})
            if feats.get("cache_hot_items"):
                S.hot[key] = value
        digest = value
        for _ in range(int(cfg.get("work_rounds", 0))):  # CPU work: latency follows the CPU quota
            digest = hashlib.sha256(digest).digest()
        body = {"key": key, "len": len(value)}
        if feats.get("checksum_responses"):
            body["sha"] = digest.hex()[:16]
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
                "hot_items": len(S.hot),
            },
        )


if __name__ == "__main__":
    threading.Thread(target=watch_config, daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()

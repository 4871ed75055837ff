"""Demo load client: keep-alive HTTP connections with steady traffic; stats on :9000/stats."""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

TARGET = os.environ.get("DEMO_TARGET", "10.77.0.10")
CONNS = int(os.environ.get("DEMO_CONNS", "2"))
RATE = float(os.environ.get("DEMO_RATE", "20"))  # requests/s per connection (open loop)
ITEMS = int(os.environ.get("DEMO_ITEMS", "2000"))
lock = threading.Lock()
stats: dict[str, Any] = {"ok": 0, "errors": 0, "reconnects": 0, "lat_ms": []}


def run() -> None:
    conn = http.client.HTTPConnection(TARGET, 8080, timeout=5)
    nxt = time.monotonic()
    while True:
        nxt += 1.0 / RATE
        time.sleep(max(0.0, nxt - time.monotonic()))
        t0 = nxt  # latency from the intended send time (no coordinated omission)
        try:
            conn.request("GET", f"/item/{random.randrange(ITEMS)}")
            r = conn.getresponse()
            r.read()
            with lock:
                stats["ok" if r.status == 200 else "errors"] += 1
                stats["lat_ms"].append((time.monotonic() - t0) * 1000)
                del stats["lat_ms"][:-500]
        except (OSError, http.client.HTTPException):
            with lock:
                stats["errors"] += 1
                stats["reconnects"] += 1
            conn.close()
            conn = http.client.HTTPConnection(TARGET, 8080, timeout=5)
            time.sleep(0.2)
            nxt = time.monotonic()


class Stats(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        with lock:
            lat = sorted(stats["lat_ms"])
            body = {k: v for k, v in stats.items() if k != "lat_ms"}
        body["p50_ms"] = lat[len(lat) // 2] if lat else None
        body["p99_ms"] = lat[int(len(lat) * 0.99)] if lat else None
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    time.sleep(1)
    for _ in range(CONNS):
        threading.Thread(target=run, daemon=True).start()
    HTTPServer(("0.0.0.0", 9000), Stats).serve_forever()

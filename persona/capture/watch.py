"""Continuous capture: at an interval, and on engine events and declared config file changes."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from persona.lab import spec

SIGNIFICANT = {"start", "stop", "die", "update", "restart", "oom", "kill", "destroy"}  # not pause/unpause: our own cut


def parse_interval(text: str) -> float:
    """'30s', '2m', '1h', '500ms' or plain seconds."""
    t = text.strip().lower()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    suffix = next((u for u in units if t.endswith(u)), "")
    num, mult = (t[: -len(suffix)], units[suffix]) if suffix else (t, 1.0)
    try:
        v = float(num) * mult
    except ValueError:
        raise ValueError(f"bad interval {text!r}: use e.g. 30s, 2m, 1h") from None
    if v <= 0:
        raise ValueError(f"interval must be > 0, got {text!r}")
    return v


def is_significant(event: Mapping[str, Any], host: str) -> bool:
    """An engine event about one of the host's containers that changes its persona."""
    if event.get("Type") != "container":
        return False
    attrs = event.get("Actor", {}).get("Attributes", {})
    if attrs.get(spec.HOST_LABEL) != host:
        return False
    action = str(event.get("Action", "")).split(":")[0]
    return action in SIGNIFICANT


@dataclass
class Trigger:
    reason: str
    at: float


def config_fingerprint(read: Callable[[], Mapping[str, bytes]]) -> str:
    h = hashlib.sha256()
    for path, data in sorted(read().items()):
        h.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


class Watcher:
    """Yields triggers: 'interval', 'event:<action> <name>', 'config:<sha>'.

    Events come from a thread reading the engine's event stream; config files are polled.
    Our own capture pauses/unpauses the host: those events are ignored (not significant).
    """

    def __init__(self, host: str, interval_s: float, events: Iterator[Mapping[str, Any]] | None,
                 read_configs: Callable[[], Mapping[str, bytes]] | None,
                 poll_s: float = 1.0) -> None:
        self.host, self.interval_s, self.poll_s = host, interval_s, poll_s
        self.read_configs = read_configs
        self.pending: list[Trigger] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if events is not None:
            threading.Thread(target=self._pump, args=(events,), daemon=True).start()

    def _pump(self, events: Iterator[Mapping[str, Any]]) -> None:
        for ev in events:
            if self.stop.is_set():
                return
            if is_significant(ev, self.host):
                name = ev.get("Actor", {}).get("Attributes", {}).get("name", "?")
                with self.lock:
                    self.pending.append(Trigger(f"event:{ev['Action']} {name}", time.monotonic()))

    def triggers(self, max_count: int | None = None) -> Iterator[Trigger]:
        count = 0
        last_cfg = config_fingerprint(self.read_configs) if self.read_configs else ""
        next_at = time.monotonic()  # the first capture happens at once
        while not self.stop.is_set() and (max_count is None or count < max_count):
            now = time.monotonic()
            trig: Trigger | None = None
            with self.lock:
                if self.pending:
                    trig = self.pending.pop(0)
                    self.pending.clear()  # a burst of events -> one capture
            if trig is None and self.read_configs:
                try:
                    cfg = config_fingerprint(self.read_configs)
                except Exception:
                    cfg = last_cfg
                if cfg != last_cfg:
                    last_cfg = cfg
                    trig = Trigger(f"config:{cfg[:12]}", now)
            if trig is None and now >= next_at:
                trig = Trigger("interval", now)
            if trig is None:
                self.stop.wait(self.poll_s)
                continue
            next_at = time.monotonic() + self.interval_s
            count += 1
            yield trig

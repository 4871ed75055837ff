"""Proof that a restore was warm, not a silent cold start: in-memory state, established
connections and process start times of the demo-shaped host survived.

``HostProbe`` is what the checks need (an HTTP introspection call and redis commands inside
the replacement); :func:`prove_warm` is pure over it, so a fake probe tests it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from persona.errors import LabError, PersonaError
from persona.model import ComponentKind, PersonaManifest


class HostProbe(Protocol):
    def introspect(self) -> dict[str, Any]: ...
    def redis(self, *args: str) -> str: ...


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class WarmProof:
    warm: bool
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"warm": self.warm, "checks": [asdict(c) for c in self.checks]}


def captured_live(manifest: PersonaManifest) -> dict[str, Any]:
    for c in manifest.components:
        if c.kind == ComponentKind.CONFIG and c.attributes.get("live"):
            return dict(c.attributes["live"])
    return {}


def captured_epoch(manifest: PersonaManifest) -> float:
    return (
        time.mktime(time.strptime(manifest.host.captured_at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    )


def prove_warm(manifest: PersonaManifest, probe: HostProbe, now: float | None = None) -> WarmProof:
    now = time.time() if now is None else now
    live = captured_live(manifest)
    checks: list[Check] = []
    try:
        intro = probe.introspect()
        started = live.get("started")
        same = started is not None and intro.get("started") == started
        checks.append(
            Check(
                "api start time preserved", same, f"captured {started}, now {intro.get('started')}"
            )
        )
        pool = intro.get("pool", {})
        checks.append(
            Check(
                "api pooled connections alive",
                bool(pool.get("size")) and intro.get("errors", 1) == 0,
                f"pool {pool}, errors {intro.get('errors')}",
            )
        )
    except (PersonaError, ValueError, KeyError) as e:
        checks.append(Check("api introspection", False, str(e)))
    try:
        ticks = probe.redis("GET", "demo:worker:ticks")
        reconnects = probe.redis("GET", "demo:worker:reconnects")
        dbsize = int(probe.redis("DBSIZE") or 0)
        info = probe.redis("INFO", "server")
        uptime = next(
            (int(x.split(":")[1]) for x in info.splitlines() if x.startswith("uptime_in_seconds:")),
            -1,
        )
        age = now - captured_epoch(manifest)
        checks.append(
            Check(
                "redis dataset in memory",
                dbsize > 0 and ticks.isdigit() and int(ticks) > 0,
                f"DBSIZE {dbsize}, demo:worker:ticks {ticks or 'missing'}",
            )
        )
        checks.append(
            Check(
                "worker connection survived (no reconnect)",
                reconnects == "",
                f"demo:worker:reconnects {reconnects or 'unset'}",
            )
        )
        checks.append(
            Check(
                "redis start time preserved",
                uptime >= age - 2.0,
                f"uptime {uptime} s >= {age:.0f} s since capture",
            )
        )
    except (PersonaError, ValueError) as e:
        checks.append(Check("redis", False, str(e)))
    return WarmProof(all(c.ok for c in checks) and bool(checks), tuple(checks))


class DemoProbe:
    """The real probe: introspection through the host's namespace, redis-cli via docker exec."""

    def __init__(self, client: Any, host: str, redis_container: str) -> None:
        self.client, self.host, self.redis_container = client, host, redis_container

    def introspect(self) -> dict[str, Any]:
        from persona.lab import demo

        try:
            return dict(
                json.loads(
                    demo.http_get_in_netns(
                        demo.netns_pid(self.client, self.host), "http://127.0.0.1:8080/introspect"
                    )
                )
            )
        except LabError as e:
            raise PersonaError(f"introspection of {self.host} failed: {e}") from e

    def redis(self, *args: str) -> str:
        try:
            ex = self.client.exec_create(self.redis_container, ["redis-cli", *args])
            return bytes(self.client.exec_start(ex["Id"])).decode().strip()
        except Exception as e:
            raise PersonaError(f"redis-cli {' '.join(args)} in {self.redis_container}: {e}") from e

"""Fencing: make sure the old host is dead before a replacement takes its identity.

Pacemaker's rule: never two live copies. The fence kills every container of the host
(SIGKILL through the Engine) and removes it, then checks nothing with its label is left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from persona.errors import RestoreError
from persona.lab import demo


@dataclass(frozen=True)
class FenceResult:
    host: str
    killed: tuple[str, ...]
    duration_s: float


def fence_host(client: Any, host: str) -> FenceResult:
    """Kill and remove every container labelled with ``host``. Idempotent."""
    t = time.perf_counter()
    killed = []
    for c in demo.host_containers(client, host):
        name = c["Names"][0].lstrip("/")
        try:
            client.remove_container(c["Id"], force=True)
        except Exception as e:
            if "No such container" not in str(e):
                raise RestoreError(
                    f"cannot fence {name} of {host}: {e}; remove it by hand "
                    f"(docker rm -f {name}) before recovering"
                ) from e
        killed.append(name)
    left = [c["Names"][0] for c in demo.host_containers(client, host)]
    if left:
        raise RestoreError(f"fence of {host} incomplete: {', '.join(left)} still exist")
    return FenceResult(host, tuple(killed), time.perf_counter() - t)


def kill_host(client: Any, host: str) -> list[str]:
    """The injected failure: SIGKILL every container of the host (they stay, exited)."""
    out = []
    for c in demo.host_containers(client, host):
        if c["State"] == "running":
            try:
                client.kill(c["Id"])
            except Exception as e:
                if "is not running" in str(e) or "No such container" in str(e):
                    continue  # died with its namespace owner: that is the failure we wanted
                raise RestoreError(f"cannot kill {c['Names'][0]}: {e}") from e
            out.append(c["Names"][0].lstrip("/"))
    return out

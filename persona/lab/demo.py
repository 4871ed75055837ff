"""Start, stop and describe the lab's network and demo host through the Engine API."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from persona.errors import LabError
from persona.lab import spec


def ensure_network(client: Any, name: str = spec.NETWORK, subnet: str = spec.SUBNET) -> str:
    for net in client.networks(names=[name]):
        if net["Name"] == name:
            return str(net["Id"])
    ipam = {"Driver": "default", "Config": [{"Subnet": subnet}]}
    try:
        res = client.create_network(name, driver="bridge", ipam=ipam, labels={spec.LAB_LABEL: "1"})
    except Exception as e:
        raise LabError(f"cannot create network {name} {subnet}: {e}; "
                       "is another network using that subnet? (docker network ls)") from e
    return str(res["Id"])


def find(client: Any, name: str) -> dict[str, Any] | None:
    for c in client.containers(all=True, filters={"name": f"^/{name}$"}):
        return dict(c)
    return None


def create_and_start(client: Any, s: spec.ContainerSpec, netns_id: str | None,
                     network: str = spec.NETWORK) -> str:
    a = spec.create_args(s, netns_id, network)
    hc = dict(a["host_config"])  # type: ignore[call-overload]
    kwargs: dict[str, Any] = {
        "image": a["image"], "command": a["command"], "name": a["name"], "labels": a["labels"],
        "environment": a["environment"], "detach": True,
        "host_config": client.create_host_config(**hc),
    }
    if a.get("hostname"):
        kwargs["hostname"] = a["hostname"]
    if "networking_config" in a:
        (net, ep), = a["networking_config"].items()  # type: ignore[attr-defined]
        kwargs["networking_config"] = client.create_networking_config(
            {net: client.create_endpoint_config(**ep)})
    try:
        cid = str(client.create_container(**kwargs)["Id"])
        client.start(cid)
    except Exception as e:
        raise LabError(f"cannot start {s.name}: {e}") from e
    return cid


def up(client: Any, host: str = spec.DEMO_HOST, with_load: bool = True,
       wait_s: float = 180.0, ip: str | None = None) -> list[str]:
    """Start the demo host (idempotent: running containers are kept, stopped ones recreated).
    ``ip`` defaults to the named lab host's (``spec.LAB_HOSTS``)."""
    ensure_network(client)
    ids: dict[str, str] = {}
    for s in spec.demo_specs(host, ip=ip, with_load=with_load):
        cur = find(client, s.name)
        if cur is not None and cur["State"] == "running":
            ids[s.name] = str(cur["Id"])
            continue
        if cur is not None:
            client.remove_container(cur["Id"], force=True)
        ids[s.name] = create_and_start(client, s, ids.get(s.netns_of or ""))
    wait_ready(client, host, wait_s)
    return list(ids.values())


def host_containers(client: Any, host: str) -> list[dict[str, Any]]:
    """Containers of a host (label persona.host), namespace owner first, then by name."""
    cs = client.containers(all=True, filters={"label": f"{spec.HOST_LABEL}={host}"})
    return sorted(cs, key=lambda c: (c["Labels"].get(spec.ROLE_LABEL) != "pause", c["Names"][0]))


def netns_pid(client: Any, host: str) -> int:
    for c in host_containers(client, host):
        if c["Labels"].get(spec.ROLE_LABEL) == "pause":
            return int(client.inspect_container(c["Id"])["State"]["Pid"])
    raise LabError(f"host {host!r} has no pause container; run: persona lab up")


def http_get_in_netns(pid: int, url: str, timeout: float = 5.0) -> bytes:
    """GET a URL from inside a network namespace (nsenter + python3 of the host machine)."""
    import subprocess
    code = ("import sys,urllib.request;"
            f"sys.stdout.buffer.write(urllib.request.urlopen({url!r},timeout={timeout}).read())")
    res = subprocess.run(["nsenter", "-t", str(pid), "-n", "python3", "-c", code],
                         capture_output=True, timeout=timeout + 5)
    if res.returncode != 0:
        raise LabError(f"GET {url} in netns of pid {pid} failed: {res.stderr.decode()[-500:]}")
    return res.stdout


def wait_ready(client: Any, host: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    last = ""
    while time.monotonic() < deadline:
        try:
            pid = netns_pid(client, host)
            body = json.loads(http_get_in_netns(pid, "http://127.0.0.1:8080/introspect"))
            # ready = redis connections pooled and the item index built (the api's warm-up)
            if body.get("pool", {}).get("size") and body.get("index", {}).get("ready", True):
                return
            last = f"api warming up: {body.get('index', {}).get('warmup')}"
        except (LabError, ValueError) as e:
            last = str(e)
        time.sleep(0.5)
    raise LabError(f"demo host {host!r} not ready after {wait_s:.0f}s: {last}; "
                   f"see: docker logs persona-{host}-api")


def down(client: Any) -> list[str]:
    """Remove every container and network carrying the lab label. Returns what was removed."""
    removed = []
    for c in client.containers(all=True, filters={"label": spec.LAB_LABEL}):
        client.remove_container(c["Id"], force=True)
        removed.append(c["Names"][0].lstrip("/"))
    for n in client.networks(filters={"label": spec.LAB_LABEL}):
        client.remove_network(n["Id"])
        removed.append("network " + n["Name"])
    return removed


@dataclass(frozen=True)
class Status:
    engine: str
    network: bool
    containers: list[tuple[str, str, str]]  # name, role, state


def status(client: Any) -> Status:
    v = client.version()
    nets = client.networks(names=[spec.NETWORK])
    cs = client.containers(all=True, filters={"label": spec.LAB_LABEL})
    rows = sorted((c["Names"][0].lstrip("/"), c["Labels"].get(spec.ROLE_LABEL, "?"), c["State"])
                  for c in cs)
    return Status(f"{v.get('Version')} experimental={v.get('Experimental', False)}",
                  any(n["Name"] == spec.NETWORK for n in nets), rows)


def introspect(client: Any, host: str) -> dict[str, Any]:
    return dict(json.loads(http_get_in_netns(netns_pid(client, host),
                                             "http://127.0.0.1:8080/introspect")))


def urlopen_local(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return bytes(r.read())

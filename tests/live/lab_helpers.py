"""Helpers shared by the live tests (imported by name: tests/live is on sys.path)."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from persona.errors import LabError
from persona.lab import demo, spec

# test hosts take addresses from this range; hand experiments use 10.77.0.90-99, the demo .10/.20
TEST_IPS = tuple(f"10.77.0.{i}" for i in range(100, 250))


@dataclass
class Tracker:
    client: Any
    containers: list[str] = field(default_factory=list)
    rules: list[tuple[int, list[str]]] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    def add_rule(self, pid: int, rule: list[str]) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-I", *rule], check=True)
        self.rules.append((pid, rule))

    def drop_rule(self, pid: int, rule: list[str]) -> None:
        subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-D", *rule], check=True)
        self.rules.remove((pid, rule))

    def cleanup(self) -> None:
        for pid, rule in reversed(self.rules):
            subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables", "-D", *rule],
                           capture_output=True)
        for cid in reversed(self.containers):
            with contextlib.suppress(Exception):
                self.client.remove_container(cid, force=True)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)



def redis_cli(client: Any, container: str, *args: str) -> str:
    ex = client.exec_create(container, ["redis-cli", *args])
    return bytes(client.exec_start(ex["Id"])).decode().strip()


def used_ips(client: Any, network: str = spec.NETWORK) -> set[str]:
    """IPv4 addresses the engine has handed out on ``network`` (running endpoints)."""
    net = client.inspect_network(network)
    return {str(ipaddress.ip_interface(ep["IPv4Address"]).ip)
            for ep in (net.get("Containers") or {}).values() if ep.get("IPv4Address")}


def start_with_free_ip(client: Any, tracker: Tracker, s: spec.ContainerSpec,
                       candidates: tuple[str, ...] = TEST_IPS, attempts: int = 8) -> str:
    """Start the namespace owner ``s`` at an address not in use on the lab network; when a
    concurrent test process wins the race for it, remove the failed container and retry."""
    last = ""
    for _ in range(attempts):
        free = sorted(set(candidates) - used_ips(client))
        if not free:
            raise LabError(f"no free address left in {candidates[0]}..{candidates[-1]} on "
                           f"{spec.NETWORK}; remove stale test containers (persona lab status)")
        ip = random.choice(free)
        try:
            cid = demo.create_and_start(client, dataclasses.replace(s, ip=ip), None)
        except LabError as e:
            last = str(e)
            gone = demo.find(client, s.name)
            if gone is not None:
                client.remove_container(gone["Id"], force=True)
            if "address" not in last.lower() and "ip" not in last.lower():
                raise
            continue
        tracker.containers.append(cid)
        return cid
    raise LabError(f"could not get a free address for {s.name} after {attempts} tries: {last}")


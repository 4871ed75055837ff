"""Helpers shared by the live tests (imported by name: tests/live is on sys.path)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

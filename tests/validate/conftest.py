"""Live fixtures of the validation/detection tests: a fresh demo-shaped host per test with a
unique name and a free IP (checked on the network, high end of the test range so parallel
sessions allocating from .100 upwards do not collide); everything removed in teardown."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from persona.errors import LabError


def _fail(msg: str) -> None:
    pytest.fail(
        f"live lab missing: {msg}\n  fix: make test (runs `persona lab up --no-demo`), "
        "or: .venv/bin/persona lab up --no-demo; then: .venv/bin/persona doctor",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def vlab() -> Any:
    from persona.lab import demo, engine, images

    if os.geteuid() != 0:
        _fail("live tests need root (nsenter, /proc/<pid>/net)")
    if shutil.which("nsenter") is None:
        _fail("nsenter is not on PATH")
    try:
        client = engine.connect()
        images.build_all(client)
        demo.ensure_network(client)
    except LabError as e:
        _fail(str(e))
    return client


@dataclass
class LiveHost:
    name: str
    ip: str
    ids: dict[str, str] = field(default_factory=dict)  # role -> container id


def _free_ip(client: Any) -> str:
    from persona.lab import spec

    used = set()
    for n in client.networks(names=[spec.NETWORK]):
        info = client.inspect_network(n["Id"])
        used |= {c["IPv4Address"].split("/")[0] for c in info.get("Containers", {}).values()}
    free = [f"10.77.0.{i}" for i in range(200, 250) if f"10.77.0.{i}" not in used]
    if not free:
        pytest.fail("no free test IP in 10.77.0.200-249 on the lab network")
    return random.SystemRandom().choice(free)


@pytest.fixture
def live_host(vlab: Any) -> Iterator[LiveHost]:
    from persona.lab import demo, spec

    created: list[str] = []
    host = None
    try:
        for _attempt in range(3):
            h = LiveHost("v" + secrets.token_hex(3), _free_ip(vlab))
            try:
                for s in spec.demo_specs(h.name, ip=h.ip, with_load=False):
                    cid = demo.create_and_start(vlab, s, h.ids.get((s.netns_of and "pause") or ""))
                    created.append(cid)
                    h.ids[s.role] = cid
                host = h
                break
            except LabError as e:
                if "address" not in str(e).lower():
                    raise
                for cid in reversed(created):
                    with contextlib.suppress(Exception):
                        vlab.remove_container(cid, force=True)
                created.clear()
        if host is None:
            pytest.fail("could not start a test host (IP conflicts)")
        demo.wait_ready(vlab, host.name, 180)  # the api builds its item index first
        yield host
    finally:
        for cid in reversed(created):
            with contextlib.suppress(Exception):
                vlab.remove_container(cid, force=True)

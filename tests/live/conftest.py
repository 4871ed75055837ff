"""Live-lab fixtures: prerequisites are checked here (not at import) and fail loudly; every
container, network rule and folder a test creates is recorded and removed in teardown."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from lab_helpers import Tracker, start_with_free_ip

from persona.errors import LabError
from persona.lab import demo, engine, images, spec


def _fail(msg: str) -> None:
    pytest.fail(f"live lab missing: {msg}\n  fix: make test (runs `persona lab up --no-demo`), "
                "or: .venv/bin/persona lab up --no-demo; then: .venv/bin/persona doctor",
                pytrace=False)


@pytest.fixture(scope="session")
def lab() -> Any:
    """A connected APIClient with the lab's prerequisites verified and images built."""
    if os.geteuid() != 0:
        _fail("live tests need root (CRIU, nsenter)")
    try:
        client = engine.connect()
    except LabError as e:
        _fail(str(e))
    if not engine.experimental(client):
        _fail("engine runs without --experimental")
    if shutil.which("criu") is None:
        _fail("criu is not on PATH")
    try:
        images.build_all(client)
        demo.ensure_network(client)
    except LabError as e:
        _fail(str(e))
    return client


@pytest.fixture
def tracker(lab: Any) -> Iterator[Tracker]:
    t = Tracker(lab)
    yield t
    t.cleanup()


def _start_host(lab: Any, tracker: Tracker, host: str) -> str:
    specs = spec.demo_specs(host, with_load=False)
    pause_id = start_with_free_ip(lab, tracker, specs[0])
    ids: dict[str, str] = {specs[0].name: pause_id}
    for s in specs[1:]:
        cid = demo.create_and_start(lab, s, ids.get(s.netns_of or ""))
        ids[s.name] = cid
        tracker.containers.append(cid)
    demo.wait_ready(lab, host, 180)  # a fresh host seeds its catalogue and builds its index
    return host


@pytest.fixture
def test_host(lab: Any, tracker: Tracker) -> Iterator[str]:
    """A fresh demo-shaped host (pause+redis+api+worker) with its own name and IP.

    The IP is one the engine reports free on the lab network (several pytest processes may
    run at once); if another process takes it first, the start fails and another is tried."""
    yield _start_host(lab, tracker, "t" + secrets.token_hex(3))


@pytest.fixture
def check_host(lab: Any, tracker: Tracker) -> Iterator[str]:
    """Like ``test_host``, shaped like ``demo-check``: its api self-checks after a pause and
    keeps a ready heartbeat (``spec.LAB_HOSTS``)."""
    yield _start_host(lab, tracker, f"{spec.CHECK_HOST}-{secrets.token_hex(3)}")

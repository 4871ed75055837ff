"""The live-test address allocation against the real engine: a test host started while
another process holds the chosen address retries with another one and leaves nothing behind."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import lab_helpers
import pytest
from lab_helpers import TEST_IPS, Tracker, start_with_free_ip, used_ips

from persona.errors import LabError
from persona.lab import demo, spec

pytestmark = [pytest.mark.live, pytest.mark.slow]


def test_conflicting_address_is_retried_and_cleaned_up(
        lab: Any, tracker: Tracker, test_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = next(iter(used_ips(lab) & set(TEST_IPS)))  # the test host's own address
    free = next(ip for ip in TEST_IPS if ip not in used_ips(lab))
    cands = tuple(sorted((taken, free)))
    looks: list[int] = []

    def stale_once(client: Any) -> set[str]:  # the first look is stale (another process raced)
        looks.append(1)
        return set() if len(looks) == 1 else used_ips(client)

    monkeypatch.setattr(lab_helpers, "used_ips", stale_once)
    tried: list[str | None] = []
    real_start = demo.create_and_start

    def counting(client: Any, sp: spec.ContainerSpec, netns: str | None) -> str:
        tried.append(sp.ip)
        return real_start(client, sp, netns)

    monkeypatch.setattr(lab_helpers.demo, "create_and_start", counting)
    seed = next(s for s in range(100) if random.Random(s).choice(cands) == taken)
    random.seed(seed)  # the stale view makes it pick the taken address first
    s = dataclasses.replace(spec.demo_specs("c" + test_host[1:], with_load=False)[0])
    cid = start_with_free_ip(lab, tracker, s, candidates=cands)
    ip = lab.inspect_container(cid)["NetworkSettings"]["Networks"][spec.NETWORK]["IPAddress"]
    assert tried == [taken, free], "the conflict path did not run"
    assert ip == free and cid in tracker.containers
    assert [c["Id"] for c in lab.containers(all=True, filters={"name": f"^/{s.name}$"})] == [cid]


def test_no_free_address_is_a_clear_error(lab: Any, tracker: Tracker, test_host: str) -> None:
    taken = tuple(sorted(used_ips(lab) & set(TEST_IPS)))
    s = spec.demo_specs("d" + test_host[1:], with_load=False)[0]
    with pytest.raises(LabError, match="no free address"):
        start_with_free_ip(lab, tracker, s, candidates=taken)
    assert demo.find(lab, s.name) is None

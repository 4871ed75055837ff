"""Pure plan logic: policies -> plans, plan checks, adaptive tweaks, allocation and lock rules."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from persona.errors import PolicyError, RestoreError
from persona.model import PersonaManifest, load_manifest
from persona.provision import plan as P

FIX = Path(__file__).parent / "fixtures" / "demo-manifest.json"


@pytest.fixture(scope="module")
def m() -> PersonaManifest:
    return load_manifest(FIX)


def test_dedupe_keeps_first_position_and_last_level() -> None:
    assert P.dedupe([("a", 0), ("b", 1), ("a", 2), ("c", 1)]) == [("a", 2), ("b", 1), ("c", 1)]


@pytest.mark.parametrize("policy", ["capture-order", "critical-path", "seed-adaptive", "random"])
def test_baseline_plans_cover_every_component_in_dependency_order(
    m: PersonaManifest, policy: str
) -> None:
    plan = P.plan_from_policy(m, policy, seed=3)
    assert sorted(plan.order) == sorted(m.names)
    pos = {n: i for i, n in enumerate(plan.order)}
    for c in m.components:
        for d in c.depends_on:
            assert pos[d] < pos[c.name], (d, c.name)
    assert plan.policy == policy and plan.predicted_ttr_s is not None and plan.predicted_ttr_s > 0
    assert P.Plan.from_dict(plan.to_dict()) == plan


def test_plans_are_reproducible_per_seed(m: PersonaManifest) -> None:
    assert P.plan_from_policy(m, "random", 5) == P.plan_from_policy(m, "random", 5)


def test_unknown_policy_and_missing_onnx_are_clear_errors(m: PersonaManifest) -> None:
    with pytest.raises(PolicyError, match="unknown policy"):
        P.plan_from_policy(m, "fastest")
    with pytest.raises(PolicyError, match="does not exist"):
        P.plan_from_policy(m, "/nonexistent/p.onnx")


def test_captured_order_plan_is_topological(m: PersonaManifest) -> None:
    plan = P.captured_order_plan(m)
    assert plan.order == m.topological_order()
    assert {s.level for s in plan.steps} == {1}


def test_check_plan_rejects_bad_plans(m: PersonaManifest) -> None:
    good = P.captured_order_plan(m)
    steps = list(good.steps)
    with pytest.raises(RestoreError, match="before its dependencies"):
        P.check_plan(m, replace(good, steps=tuple(reversed(steps))))
    with pytest.raises(RestoreError, match="leaves out"):
        P.check_plan(m, replace(good, steps=tuple(steps[:-1])))
    with pytest.raises(RestoreError, match="appears twice"):
        P.check_plan(m, replace(good, steps=(*steps, steps[-1])))
    with pytest.raises(RestoreError, match="level 7"):
        P.check_plan(m, replace(good, steps=(*steps[:-1], replace(steps[-1], level=7))))
    with pytest.raises(RestoreError, match="not a component"):
        P.check_plan(m, replace(good, steps=(*steps[:-1], replace(steps[-1], component="x"))))


def test_adjust_plan_defers_roles_and_boosts_levels_within_dependencies(m: PersonaManifest) -> None:
    base = P.captured_order_plan(m)
    adj = P.adjust_plan(m, base, defer={"cache": 1.0}, boost={"app": 1, "worker": -1})
    P.check_plan(m, adj)
    lv = {s.component: s.level for s in adj.steps}
    assert lv["api.process"] == 2 and lv["worker.process"] == 0 and lv["redis.process"] == 1
    assert lv["api.config"] == 1  # only processes get allocation changes
    # cache components move as late as their dependents allow: redis.process still precedes
    # api/worker processes (hard dependency), but the cache's filesystem/config move back
    order = adj.order
    assert order.index("redis.process") < order.index("api.process")
    assert order.index("redis.filesystem") > base.order.index("redis.filesystem")
    assert P.adjust_plan(m, base, {}, {}) == base


def test_cpu_allocation_levels_never_go_below_the_captured_limit() -> None:
    assert P.cpu_allocation(0.8, 0.1, 0.5) == 0.5
    assert P.cpu_allocation(1.2, 0.1, 0.5) == pytest.approx(0.6)
    assert P.cpu_allocation(1.8, 0.9, 0.5) == pytest.approx(1.62)  # peak above the limit
    assert P.cpu_allocation(1.8, 0.001, None) is None  # unlimited stays unlimited
    assert P.cpu_allocation(0.8, None, 0.01) == P.MIN_CPU_CORES


def test_lock_released_once_both_ends_of_every_connection_are_back() -> None:
    conns = [("api.process", "redis.process"), ("worker.process", "redis.process")]
    assert P.lock_release_after(["redis.process", "api.process", "worker.process"], conns) == 2
    assert P.lock_release_after(["api.process", "worker.process", "redis.process", "x"], conns) == 2
    assert P.lock_release_after(["x", "y"], conns) == -1
    assert (
        P.lock_release_after(
            ["redis.process", "api.process", "x"], [("api.process", "redis.process")]
        )
        == 1
    )


def test_connections_ip_and_replacement_from_the_captured_manifest(m: PersonaManifest) -> None:
    assert P.connections(m) == [
        ("api.process", "redis.process"),
        ("worker.process", "redis.process"),
    ]
    assert P.host_ip(m) == "10.77.0.61"
    r = P.replacement(m)
    owner, *rest = r.specs
    assert owner.role == "pause" and owner.ip == "10.77.0.61" and owner.netns_of is None
    assert {s.role for s in rest} == {"redis", "api", "worker"}
    assert all(s.netns_of == owner.name and s.ip is None and s.cpus is None for s in rest)
    api = next(s for s in rest if s.role == "api")
    assert api.command == ("python3", "/app/api.py") and api.mem_bytes == 128 << 20
    assert api.config_files == ("/etc/demo/api.json",)
    assert r.config_files["api.config"] == (
        ("persona-rx61-api", "/etc/demo/api.json", "config/persona-rx61-api/etc/demo/api.json"),
    )
    cold = P.replacement(m, cpu_limits=True)
    assert next(s for s in cold.specs if s.role == "api").cpus == 0.5


def test_a_manifest_without_a_namespace_owner_is_refused(m: PersonaManifest) -> None:
    comps = [c for c in m.components if c.name != "pause.filesystem"]
    with pytest.raises(RestoreError, match="namespace owner"):
        P.replacement(m.with_components(comps))


def test_holders_of_outside_connections_are_restored_behind_the_lock(m: PersonaManifest) -> None:
    """A client outside the host (the load generator) talks to the api: the api's restore
    must be inside the lock window, even when every internal pair is back before it."""
    from dataclasses import replace

    net = next(c for c in m.components if c.kind.value == "network")
    ext = {"local": "10.77.0.61:8080", "remote": "10.77.0.20:40000",
           "client": None, "server": "persona-rx61-api"}
    attrs = {**net.attributes, "joins": [*net.attributes["joins"], ext]}
    m2 = replace(m, components=tuple(
        replace(c, attributes=attrs) if c is net else c for c in m.components))
    assert P.external_holders(m) == []
    assert P.external_holders(m2) == ["api.process"]
    pairs = P.lock_pairs(m2)
    assert ("api.process", "api.process") in pairs
    # redis and the worker are both back first; the lock waits for the api too
    order = ["redis.process", "worker.process", "api.process"]
    only_worker = [("worker.process", "redis.process")]
    assert P.lock_release_after(order, only_worker) == 1
    assert P.lock_release_after(order, [*only_worker, ("api.process", "api.process")]) == 2

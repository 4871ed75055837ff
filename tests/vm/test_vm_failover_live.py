"""Live: a VM host's failover through the recovery workflow, judged by the Behavioural
Validation Suite - unchanged - against the VM replacement.

The original guest (cloud kernel, 19 modules in a known order with non-default parameters, its
NIC on the project bridge, the vmkv service whose data lives only in its memory) gets a
validation baseline recorded from the host, its persona captured into a folder store, and is
fenced (powered off). ``recover()`` then boots the replacement through ``VmEngine`` (the
provisioner interface), applies the persona in captured order, and validates it with
``VmHooks`` (``validate_target`` against the replacement's service and its connection table).
Control: the same persona cold-started (no process memory) against the same baseline must
fail the suite's state check. Bounded in time; nothing is left behind (``clean_vm_lab``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from persona.vm import host
from persona.vm.failover import failover

pytestmark = [pytest.mark.live, pytest.mark.slow]
BUDGET_S = 240.0


def test_vm_failover_is_validated_by_the_suite_and_a_cold_start_is_not(
        vm_image: object, clean_vm_lab: None, tmp_path: Path) -> None:
    t0 = time.monotonic()
    r = failover(tmp_path, budget_s=16.0, control=True, log=print)
    res = r.recovery
    (at,) = res.attempts
    assert at.method == "persona" and at.policy == "captured-order", at.to_dict()
    assert res.validated, (at.error, {m["name"]: m["summary"] for m in res.verdict["metrics"]})
    assert res.verdict["passed"] and res.verdict["score"] >= res.verdict["pass_score"]
    critical = {m["name"]: m["outcome"] for m in res.verdict["metrics"] if m["critical"]}
    assert {"functional", "state", "latency", "throughput", "connections"} <= set(critical)
    assert set(critical.values()) == {"Pass"}, critical
    # warm: CRIU restore in the guest, same pid, the sampled items answer as captured
    assert res.warm and at.warm is not None and all(c.ok for c in at.warm.checks), at.warm
    assert r.warm_counter[1] > r.warm_counter[0] > 0  # the shell counter went on
    # the provisioner interface's trace: the VM's boot, then the plan's steps in order
    assert at.trace is not None and at.trace.steps[0].kind == "provision"
    assert [s.name for s in at.trace.steps[1:]] == list(at.plan.order if at.plan else ())
    # the replacement's own kernel: the captured modules, order and parameters
    assert r.replacement_modules == r.captured_modules
    assert [n for n, _ in r.captured_modules] == host.module_names(host.VM_HOST)
    # control: without the process memory the suite sees the data is not the original's
    assert r.control is not None and not r.control["passed"]
    assert "state" in r.control["failed"], r.control["failed"]
    elapsed = time.monotonic() - t0
    print(f"\nVM failover: {r.timings}; total {elapsed:.1f} s")
    assert elapsed < BUDGET_S

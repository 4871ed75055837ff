"""A VM host's failover through the recovery workflow, validated by the Behavioural
Validation Suite (the live test's scenario, and what docs/vm.md's numbers come from):

    .venv/bin/python -m persona.vm.failover --json out.json

Boot the original on the project bridge, record the baseline against its service, capture its
persona into a folder store, fence it, then ``persona.recovery.workflow.recover`` with
:class:`~persona.vm.provision.VmEngine` + :class:`~persona.vm.provision.VmHooks`; optionally a
cold start of the same persona as the control (its state check must fail).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from persona.capture import parse
from persona.vm import apply as vm_apply
from persona.vm import capture as vm_capture
from persona.vm import host as vm_host
from persona.vm.image import build_image
from persona.vm.net import VmNetwork
from persona.vm.provision import (
    QemuProvisioner,
    VmEngine,
    VmHooks,
    capture_spec,
    vm_target,
)
from persona.vm.qemu import choose_accel


@dataclass
class VmFailover:
    recovery: Any  # persona.recovery.workflow.RecoveryResult
    baseline_host: str
    replacement_modules: list[tuple[str, dict[str, str]]]
    captured_modules: list[tuple[str, dict[str, str]]]
    warm_counter: tuple[int, int]  # the shell counter at capture, on the replacement after
    control: Mapping[str, Any] | None  # the cold start's verdict (the state check must fail)
    timings: dict[str, float]
    accel: str

    def summary(self) -> dict[str, Any]:
        r = self.recovery
        return {"accel": self.accel, "timings": self.timings, "validated": r.validated,
                "warm": r.warm, "ttr_s": r.ttr_s, "phases": r.phases,
                "score": r.verdict.get("score"),
                "metrics": {m["name"]: m["outcome"] for m in r.verdict.get("metrics", [])},
                "attempts": [a.to_dict() for a in r.attempts],
                "modules_match": self.replacement_modules == self.captured_modules,
                "control_cold_start": None if self.control is None else {
                    "passed": self.control.get("passed"),
                    "metrics": {m["name"]: m["outcome"] for m in self.control.get("metrics", [])}}}


def read_modules(g: vm_host.Guest) -> list[tuple[str, dict[str, str]]]:
    """The guest's own /proc/modules (load order) and /sys/module/*/parameters."""
    text = g.run(vm_capture.MODULES_SCRIPT).check("reading modules").text
    mods_text, params = vm_capture.split_modules_dump(text)
    rows = parse.parse_proc_modules(mods_text)
    return [(m.name, dict(m.parameters)) for m in parse.modules_in_load_order(rows, params)]


def failover(work: Path, spec: vm_host.VmHostSpec = vm_host.VM_HOST, accel: str = "auto",
             budget_s: float = 8.0, seed: int = 0, control: bool = True,
             log: Any = None) -> VmFailover:
    """The VM host's failover through the recovery workflow: boot the original on the project
    bridge, record the validation baseline against its service, capture its persona into a
    folder store (``work/store/<host>/v1``), fence it (power off), then
    ``persona.recovery.workflow.recover`` with a :class:`VmEngine` (boots the replacement,
    applies the persona in plan order) and :class:`VmHooks` (validation suite, warm proof).
    With ``control``, the same persona is then cold-started (no process memory) and validated
    against the same baseline: its state check must fail. Every guest, tap, rule and the
    bridge are removed before returning."""
    from persona.recovery.source import FolderSource
    from persona.recovery.workflow import CAPTURED_ORDER, RecoveryOptions, recover
    from persona.validate import record_baseline, validate_target

    say = log or (lambda s: None)
    tm: dict[str, float] = {}
    t0 = time.monotonic()
    image = build_image(vm_host.module_names(spec))
    acc, why = choose_accel(image, accel)
    say(f"image {image.dir.name} (CRIU {image.criu or 'none'}), accelerator {acc}: {why}")
    store = work / "store"
    with VmNetwork.up() as network, QemuProvisioner(image, acc, network) as prov:
        t = time.monotonic()
        (orig,) = prov.provision([spec.name])
        tm["boot_original_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        vm_host.setup_original(orig, spec, image.modules)
        tm["setup_original_s"] = round(time.monotonic() - t, 2)
        t = time.monotonic()
        baseline = record_baseline(vm_target(orig, spec), seed=seed, budget_s=budget_s)
        tm["baseline_s"] = round(time.monotonic() - t, 2)
        say(f"baseline recorded against {vm_host.service_url(spec)} in {tm['baseline_s']} s "
            f"(capacity {baseline.settings['capacity_rps']:.0f} req/s)")
        t = time.monotonic()
        labels = {"vm_memory_mb": str(orig.cfg.memory_mb), "vm_cpus": str(orig.cfg.cpus),
                  "accel": acc, "image": image.dir.name}
        cap = capture_spec(orig, spec, store / spec.name / "v1", labels)
        counter_at_capture = int(orig.sh("cat /run/demo/count", "reading the counter"))
        tm["capture_s"] = round(time.monotonic() - t, 2)
        captured = vm_apply.module_table(cap.manifest)
        say(f"captured {len(cap.manifest.components)} components in {tm['capture_s']} s")
        prov.remove(orig)  # fence: the original is powered off, its tap removed
        engine = VmEngine(prov, FolderSource(store))
        hooks = VmHooks(engine, baseline, spec, seed, work / "verdict")
        t_fail = time.monotonic()
        res = recover(spec.name, FolderSource(store), engine, hooks,
                      RecoveryOptions(policy=CAPTURED_ORDER, adaptive=False,
                                      cold_fallback=False, seed=seed,
                                      trace_dir=work / "traces"),
                      t_failure=t_fail)
        tm["recover_s"] = round(time.monotonic() - t_fail, 2)
        for k, v in res.phases.items():
            tm[f"recover_{k}"] = round(v, 2)
        say(f"recovered: validated={res.validated} warm={res.warm} in {tm['recover_s']} s "
            f"(score {res.verdict.get('score')})")
        repl_modules: list[tuple[str, dict[str, str]]] = []
        counter_after = -1
        if engine.replacements:
            g = next(iter(engine.replacements.values()))
            repl_modules = read_modules(g)
            counter_after = int(g.sh("cat /run/demo/count", "reading the counter"))
        ctl = None
        if control and res.validated:
            for vid in list(engine.replacements):
                engine._remove(vid)
            t = time.monotonic()
            engine.cold_start(cap.manifest)
            hooks.wait_ready(spec.name, 30)
            since = datetime.fromisoformat(cap.manifest.host.captured_at).timestamp()
            verdict = validate_target(vm_target(hooks._guest(), spec), baseline, seed=seed,
                                      state_since=since)
            ctl = verdict.to_dict()
            tm["control_cold_start_and_validate_s"] = round(time.monotonic() - t, 2)
            say(f"control (cold start, same baseline): passed={verdict.passed}, failed "
                f"{', '.join(verdict.failed_metrics) or 'nothing'}")
    tm["total_s"] = round(time.monotonic() - t0, 2)
    return VmFailover(res, baseline.host, repl_modules, captured,
                      (counter_at_capture, counter_after), ctl, tm, acc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m persona.vm.failover", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the timings, phases and verdicts here")
    ap.add_argument("--work", type=Path, help="keep the store, traces and verdict here")
    ap.add_argument("--accel", choices=["auto", "kvm", "tcg"], default="auto")
    ap.add_argument("--budget", type=float, default=8.0, help="validation budget (s)")
    ap.add_argument("--no-control", action="store_true", help="skip the cold-start control")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="persona-vm-failover-") as d:
        work = a.work or Path(d)
        r = failover(work, accel=a.accel, budget_s=a.budget, control=not a.no_control,
                     log=print)
        out = r.summary()
    print("timings: " + ", ".join(f"{k}={v}" for k, v in r.timings.items()))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    ok = r.recovery.validated and out["modules_match"] and (
        r.control is None or not r.control.get("passed"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

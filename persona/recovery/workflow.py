"""The recovery workflow: latest valid persona -> provision -> apply -> validate; on failure
roll back and retry with the previous version, then a cold start (the host's images plus the
newest captured disk, every process started fresh). Every phase is timed.

Pure decisions (:func:`candidates`, :func:`phase_totals`) are separate from the side effects,
which come in through small protocols: a :class:`~persona.recovery.source.PersonaSource`, a
:class:`~persona.provision.engine.ProvisionEngine` and :class:`Hooks` (readiness, warm proof,
CPU accounting, validation). The old host must already be fenced (see :mod:`.failover`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from persona.errors import PersonaError, RestoreError
from persona.model import ComponentKind, PersonaManifest, load_manifest
from persona.provision.apply import (
    ApplyOptions,
    StepFailed,
    Trace,
    apply_persona,
    cold_start,
    remove_replacement,
)
from persona.provision.engine import HostEngine, ProvisionEngine
from persona.provision.plan import Plan, adjust_plan, captured_order_plan, plan_from_policy
from persona.provision.warm import WarmProof
from persona.recovery import adaptive
from persona.recovery.source import PersonaSource

COLD = "cold-start"
CAPTURED_ORDER = "captured-order"


@dataclass(frozen=True)
class ValidationResult:
    passed: bool
    score: float | None
    verdict: Mapping[str, Any]
    failed_metrics: tuple[str, ...] = ()


@dataclass(frozen=True)
class CpuSample:
    t: float
    usage_ns: int
    periods: int
    throttled: int


class Hooks(Protocol):
    def wait_ready(self, host: str, timeout_s: float) -> None: ...
    def prove_warm(self, manifest: PersonaManifest) -> WarmProof: ...
    def cpu(self, cid: str) -> CpuSample: ...
    def validate(self, manifest: PersonaManifest) -> ValidationResult: ...


@dataclass(frozen=True)
class RecoveryOptions:
    policy: str = "critical-path"  # baseline name, "captured-order", "cold-start" or FILE.onnx
    version: str | None = None  # a specific version (then: no fallback to older ones)
    max_versions: int = 2  # persona versions tried before the cold start
    cold_fallback: bool = True
    seed: int = 0
    ready_timeout_s: float = 30.0
    cold_ready_timeout_s: float = 120.0  # a cold start's apps warm up (load data, build indexes)
    adaptive: bool = True
    first_attempt: ApplyOptions = field(default_factory=ApplyOptions)  # fault injection
    injected: bool = False  # first_attempt carries a deliberate fault
    trace_dir: Path | None = None


@dataclass
class Attempt:
    number: int
    method: str  # persona | cold-start
    version: str | None
    policy: str
    outcome: str = "running"  # validated | restore-failed | validation-failed | retrieve-failed
    phases: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    warm: WarmProof | None = None
    verdict: Mapping[str, Any] | None = None
    trace: Trace | None = None
    plan: Plan | None = None
    trace_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "method": self.method,
            "version": self.version,
            "policy": self.policy,
            "outcome": self.outcome,
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            "error": self.error,
            "warm": self.warm.to_dict() if self.warm else None,
            "score": (self.verdict or {}).get("score"),
            "verdict": dict(self.verdict) if self.verdict else None,
            "plan": self.plan.to_dict() if self.plan else None,
            "trace": self.trace_path or (self.trace.to_dict() if self.trace else None),
        }


@dataclass
class RecoveryResult:
    host: str
    policy: str
    validated: bool
    warm: bool
    ttr_s: float | None
    phases: dict[str, float]
    verdict: Mapping[str, Any]
    attempts: list[Attempt]
    adaptive: Mapping[str, Any] | None = None
    detection: Mapping[str, Any] | None = None
    fence: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "policy": self.policy,
            "validated": self.validated,
            "warm": self.warm,
            "ttr_s": None if self.ttr_s is None else round(self.ttr_s, 4),
            "phases": {k: round(v, 4) for k, v in self.phases.items()},
            "verdict": dict(self.verdict),
            "attempts": [a.to_dict() for a in self.attempts],
            "adaptive": self.adaptive,
            "detection": self.detection,
            "fence": self.fence,
        }


# ------------------------------------------------------------------------------- pure parts


def candidates(
    versions: Sequence[str],
    bad: Sequence[str],
    max_versions: int,
    cold_fallback: bool,
    pinned: str | None = None,
) -> list[str | None]:
    """What to try, in order: the newest valid versions (known-bad ones skipped), then a cold
    start (``None``). A pinned version is tried alone (plus the cold start if allowed)."""
    out: list[str | None] = []
    if pinned is not None:
        if pinned != "latest" and pinned not in versions:
            raise RestoreError(
                f"version {pinned} not found; known: {', '.join(versions) or 'none'}"
            )
        out.append(versions[-1] if pinned == "latest" and versions else pinned)
    else:
        out.extend([v for v in reversed(versions) if v not in set(bad)][:max_versions])
    if cold_fallback:
        out.append(None)
    return out


def phase_totals(detect_s: float, attempts: Sequence[Attempt]) -> dict[str, float]:
    tot = {
        "detect_s": detect_s,
        "retrieve_s": 0.0,
        "provision_s": 0.0,
        "apply_s": 0.0,
        "validate_s": 0.0,
    }
    for a in attempts:
        for k in ("retrieve_s", "provision_s", "apply_s", "validate_s"):
            tot[k] += a.phases.get(k, 0.0)
    return tot


def failed_attempts(trace: Trace) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in trace.steps:
        n = s.retries + (1 if s.outcome == "failed" else 0)
        if n:
            out[s.name] = out.get(s.name, 0) + n
    return out


def observations(
    manifest: PersonaManifest,
    trace: Trace,
    before: Mapping[str, CpuSample],
    after: Mapping[str, CpuSample],
) -> list[adaptive.ComponentObservation]:
    """Per restored process: failed attempts (trace) and CPU utilisation over validation."""
    fails = failed_attempts(trace)
    alloc = {s.name: s.alloc_cores for s in trace.steps if s.kind == "resources"}
    out = []
    for c in manifest.components:
        if c.kind != ComponentKind.PROCESS:
            continue
        ctr = str(c.attributes.get("container"))
        cid = trace.containers.get(ctr)
        u = None
        if cid and cid in before and cid in after:
            a, b = before[cid], after[cid]
            dt = max(b.t - a.t, 1e-6)
            used = (b.usage_ns - a.usage_ns) / 1e9 / dt
            periods = b.periods - a.periods
            thr = (b.throttled - a.throttled) / periods if periods > 0 else 0.0
            u = adaptive.utilisation(used, alloc.get(c.name), thr)
        out.append(adaptive.ComponentObservation(c.name, c.role, fails.get(c.name, 0), u))
    return out


def make_plan(
    manifest: PersonaManifest, policy: str, seed: int, rec: adaptive.AdaptiveRecord | None
) -> Plan:
    plan = (
        captured_order_plan(manifest)
        if policy == CAPTURED_ORDER
        else plan_from_policy(manifest, policy, seed)
    )
    if rec is not None and (rec.defer or rec.boost):
        plan = adjust_plan(manifest, plan, rec.defer, rec.boost)
    return plan


# ------------------------------------------------------------------------------- the workflow


def recover(
    host: str,
    source: PersonaSource,
    engine: ProvisionEngine | HostEngine,  # containers, or a whole-host provisioner (VMs)
    hooks: Hooks,
    opts: RecoveryOptions,
    t_failure: float,
    detect_s: float = 0.0,
    now: Callable[[], float] = time.monotonic,
) -> RecoveryResult:
    """Recover ``host`` (already fenced). ``t_failure``: when it failed, on ``now``'s clock."""
    rec = (
        adaptive.AdaptiveRecord.from_dict(source.read_meta(host, adaptive.META_NAME), host)
        if opts.adaptive
        else None
    )
    versions = source.versions(host)
    if not versions:
        raise RestoreError(
            f"no persona of {host} in {source.url}: capture one first "
            f"(persona capture --host {host} --store ...)"
        )
    todo: list[str | None]
    if opts.policy == COLD:
        todo = [None]
    else:
        todo = candidates(
            versions,
            rec.bad_versions if rec else (),
            opts.max_versions,
            opts.cold_fallback,
            opts.version,
        )
    attempts: list[Attempt] = []
    work = Path(tempfile.mkdtemp(prefix=f"persona-recover-{host}-"))
    latest_manifest: PersonaManifest | None = None
    try:
        for version in todo:
            n = len(attempts) + 1
            at = Attempt(
                n,
                "persona" if version is not None else COLD,
                version,
                opts.policy if version is not None else COLD,
            )
            attempts.append(at)
            apply_opts = opts.first_attempt if n == 1 else ApplyOptions()
            # ---- retrieve
            t = now()
            try:
                src_version = version if version is not None else versions[-1]
                data = source.fetch(host, src_version, work / f"a{n}")
                manifest = load_manifest(data / "manifest.json")
                latest_manifest = latest_manifest or manifest
            except PersonaError as e:
                at.outcome, at.error = "retrieve-failed", str(e)
                at.phases["retrieve_s"] = now() - t
                continue
            at.phases["retrieve_s"] = now() - t
            # ---- provision + apply
            try:
                if version is None:  # images + the newest captured disk, processes fresh
                    trace = cold_start(engine, manifest, data, version=f"disk of {src_version}")
                else:
                    at.plan = make_plan(manifest, opts.policy, opts.seed, rec)
                    trace = apply_persona(engine, manifest, data, at.plan, version, apply_opts)
            except StepFailed as e:
                at.trace = e.trace
                at.phases.update(e.trace.phases)
                at.outcome, at.error = "restore-failed", str(e)
                _save_trace(opts, at)
                if rec is not None:
                    obs = observations(manifest, e.trace, {}, {})
                    rec = adaptive.update(
                        rec, None if opts.injected and n == 1 else version, obs, False, ("restore",)
                    )
                    source.write_meta(host, adaptive.META_NAME, rec.to_dict())
                continue
            except PersonaError as e:
                at.outcome, at.error = "restore-failed", str(e)
                continue
            at.trace = trace
            at.phases["provision_s"] = trace.phases.get("provision_s", 0.0)
            t = now()
            try:
                # a cold start is ready only once its apps rebuilt their memory from disk
                hooks.wait_ready(
                    host,
                    opts.ready_timeout_s
                    if version is not None
                    else max(opts.ready_timeout_s, opts.cold_ready_timeout_s),
                )
            except PersonaError as e:
                at.phases["apply_s"] = trace.phases.get("apply_s", 0.0) + now() - t
                at.outcome, at.error = "restore-failed", f"service not ready: {e}"
                remove_replacement(engine, trace)
                _save_trace(opts, at)
                continue
            at.phases["apply_s"] = trace.phases.get("apply_s", 0.0) + now() - t
            # ---- validate
            t = now()
            cids = list(trace.containers.values())
            before = _cpu(hooks, cids)
            try:
                vr = hooks.validate(manifest)
            except PersonaError as e:
                vr = ValidationResult(False, None, {"error": str(e)}, ("validation-error",))
            after = _cpu(hooks, cids)
            at.phases["validate_s"] = now() - t
            at.verdict = vr.verdict
            if version is not None:
                at.warm = hooks.prove_warm(manifest)
            if rec is not None:
                obs = observations(manifest, trace, before, after)
                rec = adaptive.update(
                    rec,
                    None if (opts.injected and n == 1) else version,
                    obs,
                    vr.passed,
                    vr.failed_metrics,
                )
                source.write_meta(host, adaptive.META_NAME, rec.to_dict())
            if vr.passed:
                at.outcome = "validated"
                _save_trace(opts, at)
                ttr = now() - t_failure
                return RecoveryResult(
                    host,
                    opts.policy,
                    True,
                    bool(at.warm and at.warm.warm),
                    ttr,
                    phase_totals(detect_s, attempts),
                    vr.verdict,
                    attempts,
                    rec.to_dict() if rec else None,
                )
            at.outcome = "validation-failed"
            at.error = "validation failed: " + ", ".join(vr.failed_metrics)
            remove_replacement(engine, trace)  # roll back: the replacement goes, personas stay
            _save_trace(opts, at)
        last = next((a.verdict for a in reversed(attempts) if a.verdict), None) or {}
        return RecoveryResult(
            host,
            opts.policy,
            False,
            False,
            None,
            phase_totals(detect_s, attempts),
            last,
            attempts,
            rec.to_dict() if rec else None,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cpu(hooks: Hooks, cids: Sequence[str]) -> dict[str, CpuSample]:
    out = {}
    for c in cids:
        with contextlib.suppress(PersonaError):
            out[c] = hooks.cpu(c)
    return out


def _save_trace(opts: RecoveryOptions, at: Attempt) -> None:
    if opts.trace_dir is not None and at.trace is not None:
        p = at.trace.write(opts.trace_dir / f"restore-trace-{at.number}.json")
        at.trace_path = str(p)

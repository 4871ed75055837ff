"""The VM provisioner and the end-to-end round trip (original -> capture -> replacement).

``QemuProvisioner`` boots fresh guests (each with a tap on the project's bridge when it has a
:class:`~persona.vm.net.VmNetwork`), records every guest it starts and removes all of them on
:meth:`QemuProvisioner.close`. ``VmEngine`` puts it behind the provisioner interface the
container path uses: it is a :class:`persona.provision.engine.HostEngine`, so
``persona.provision.apply.apply_persona`` / ``cold_start`` / ``remove_replacement`` - and through
them the recovery workflow (``persona.recovery.workflow.recover``) - build, apply and roll back
a VM replacement with the same calls as a container one. ``VmHooks`` are the workflow's hooks
for a VM host (readiness, warm proof, CPU accounting, the Behavioural Validation Suite through
:func:`vm_target`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from persona.capture import parse
from persona.errors import PersonaError, RestoreError, ValidationError, VmError
from persona.model import ComponentKind, PersonaManifest
from persona.provision.apply import ApplyOptions, StepFailed, StepRecord, Trace
from persona.provision.plan import Plan
from persona.provision.warm import Check, WarmProof
from persona.vm import apply as vm_apply
from persona.vm import capture as vm_capture
from persona.vm import host as vm_host
from persona.vm.image import Image, build_image
from persona.vm.net import VmNetwork
from persona.vm.qemu import Vm, VmConfig, boot_many, choose_accel

if TYPE_CHECKING:
    from persona.recovery.source import PersonaSource
    from persona.recovery.workflow import CpuSample, ValidationResult
    from persona.validate.model import Baseline, Target


class VmProvisioner(Protocol):
    def provision(self, names: list[str], memory_mb: int, cpus: int) -> list[Vm]: ...
    def remove(self, vm: Vm) -> None: ...


@dataclass
class QemuProvisioner:
    image: Image
    accel: str = "tcg"
    network: VmNetwork | None = None  # None: guests without a NIC
    vms: list[Vm] = field(default_factory=list)

    def provision(self, names: list[str], memory_mb: int = 256, cpus: int = 1) -> list[Vm]:
        """Boot ``names`` in parallel (fresh guests from the image, each on its own tap)."""
        cfgs = []
        try:
            for n in names:
                tap, mac = self.network.tap() if self.network else (None, "")
                cfgs.append(VmConfig(n, memory_mb, cpus, self.accel, tap=tap, mac=mac))
            vms = boot_many(self.image, cfgs)
        except BaseException:
            for c in cfgs:
                if self.network and c.tap:
                    self.network.remove_tap(c.tap)
            raise
        self.vms += vms
        return vms

    def provision_for(self, m: PersonaManifest, name: str) -> Vm:
        """A replacement sized as the captured guest (labels vm_memory_mb / vm_cpus)."""
        try:
            mem = int(m.host.labels.get("vm_memory_mb", "256"))
            cpus = int(m.host.labels.get("vm_cpus", "1"))
        except ValueError as e:
            raise VmError(f"manifest of {m.host.name}: bad VM size label: {e}") from e
        return self.provision([name], mem, cpus)[0]

    def remove(self, vm: Vm) -> None:
        vm.close()
        if self.network and vm.cfg.tap:
            self.network.remove_tap(vm.cfg.tap)
        if vm in self.vms:
            self.vms.remove(vm)

    def find(self, name: str) -> Vm | None:
        return next((v for v in self.vms if v.name == name), None)

    def close(self) -> None:
        for vm in list(self.vms):
            self.remove(vm)

    def __enter__(self) -> QemuProvisioner:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


@dataclass
class RoundTrip:
    original: PersonaManifest
    replacement: PersonaManifest
    mismatches: list[str]
    trace: vm_apply.ApplyTrace
    timings: dict[str, float]
    accel: str
    accel_reason: str
    proc_modules_after: str
    out_dir: Path

    def summary(self) -> dict[str, Any]:
        return {"accel": self.accel, "accel_reason": self.accel_reason,
                "timings": self.timings, "mismatches": self.mismatches,
                "modules": vm_apply.module_table(self.original),
                "apply_steps": [s.__dict__ for s in self.trace.steps]}


def capture_spec(g: vm_host.Guest, spec: vm_host.VmHostSpec, out: Path,
                 labels: Mapping[str, str]) -> vm_capture.VmCapture:
    return vm_capture.capture_vm(g, out, tuple(spec.config_files), spec.cgroup,
                                 tuple(spec.sysctls), labels,
                                 service_url=vm_host.service_url(spec))


def roundtrip(out_dir: Path | None = None, spec: vm_host.VmHostSpec = vm_host.VM_HOST,
              accel: str = "auto", memory_mb: int = 256,
              log: Any = None, with_criu: bool = True) -> RoundTrip:
    """Boot original + replacement, set up the original, capture it, apply to the replacement,
    capture the replacement, compare. Every guest is removed before returning."""
    say = log or (lambda s: None)
    tm: dict[str, float] = {}
    t0 = time.monotonic()
    image = build_image(vm_host.module_names(spec), with_criu=with_criu)
    tm["image_s"] = round(time.monotonic() - t0, 2)
    say(f"image {image.dir} ({'cached' if image.cached else 'built'}, {tm['image_s']} s)")
    acc, why = choose_accel(image, accel)
    say(f"accelerator {acc}: {why}")
    out = out_dir or Path(tempfile.mkdtemp(prefix="persona-vm-roundtrip-"))
    with VmNetwork.up() as network, QemuProvisioner(image, acc, network) as prov:
        t = time.monotonic()
        orig, repl = prov.provision([spec.name, f"{spec.name}-replacement"], memory_mb)
        tm["boot_both_s"] = round(time.monotonic() - t, 2)
        tm["boot_original_s"], tm["boot_replacement_s"] = round(orig.boot_s, 2), round(repl.boot_s, 2)
        say(f"booted {orig.name} in {orig.boot_s:.1f} s, {repl.name} in {repl.boot_s:.1f} s")
        before = repl.sh("cat /proc/modules", "reading /proc/modules")
        if before.strip():
            raise VmError(f"fresh replacement already has modules loaded: {before!r}")
        t = time.monotonic()
        vm_host.setup_original(orig, spec, image.modules)
        tm["setup_original_s"] = round(time.monotonic() - t, 2)
        labels = {"vm_memory_mb": str(memory_mb), "vm_cpus": "1", "accel": acc,
                  "image": image.dir.name}
        t = time.monotonic()
        cap = capture_spec(orig, spec, out / "original", labels)
        tm["capture_s"] = round(time.monotonic() - t, 2)
        tm["capture_criu_dump_s"] = float(cap.timings.get("criu_dump_s", 0.0))
        say(f"captured {len(cap.manifest.components)} components in {tm['capture_s']} s")
        prov.remove(orig)  # never two live copies: the replacement takes its address and MAC
        t = time.monotonic()
        trace = vm_apply.apply_vm(repl, cap.manifest, cap.data_dir, image.modules)
        tm["apply_s"] = round(time.monotonic() - t, 2)
        tm["apply_kernel_modules_s"] = trace.seconds("kernel_module")
        tm["apply_process_s"] = trace.seconds("process")
        say(f"applied in {tm['apply_s']} s (kernel modules {tm['apply_kernel_modules_s']} s)")
        after = repl.sh("cat /proc/modules", "reading /proc/modules")
        t = time.monotonic()
        rcap = capture_spec(repl, spec, out / "replacement", labels)
        tm["verify_capture_s"] = round(time.monotonic() - t, 2)
    tm["total_s"] = round(time.monotonic() - t0, 2)
    mism = vm_apply.compare(cap.manifest, rcap.manifest)
    return RoundTrip(cap.manifest, rcap.manifest, mism, trace, tm, acc, why, after, out)


def module_defaults(names: list[str], accel: str = "auto") -> dict[str, dict[str, str]]:
    """Load each module with no parameters in a scratch guest and read its parameters: the
    kernel's defaults (for documenting that the VM host's values are non-default)."""
    image = build_image(names)
    acc, _ = choose_accel(image, accel)
    with QemuProvisioner(image, acc) as prov:
        (vm,) = prov.provision(["defaults"])
        for n in vm_host.module_names(vm_host.VM_HOST):
            if n in names:
                vm.sh(vm_host.insmod_line(image.modules[n], {}), f"insmod {n}")
        text = vm.sh(vm_capture.MODULES_SCRIPT, "reading modules")
    _mtext, params = vm_capture.split_modules_dump(text)
    return {n: dict(params.get(n, {})) for n in names}


def remove_tree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------- validation of a VM host
def guest_sockets(g: vm_host.Guest) -> list[parse.TcpSocket]:
    """The guest's TCP table (``/proc/net/tcp`` and, if the guest has IPv6, ``tcp6``) read
    through its agent. Raises ValidationError (what the suite tolerates on a candidate)."""
    out: list[parse.TcpSocket] = []
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        r = g.run(f"cat {f}", 20)
        if f.endswith("6") and (r.rc != 0 or not r.text.strip()):
            continue  # no IPv6 in the guest
        try:
            out += parse.parse_proc_net_tcp(r.check(f"reading {f}").text)
        except PersonaError as e:
            raise ValidationError(f"cannot read the connection table of guest {g.name}: {e}"
                                  ) from e
    return out


def service_items(spec: vm_host.VmHostSpec = vm_host.VM_HOST) -> int:
    conf = spec.config_files["/etc/demo/app.conf"]
    return int(dict(ln.split("=", 1) for ln in conf.splitlines() if "=" in ln)["items"])


def vm_target(g: vm_host.Guest, spec: vm_host.VmHostSpec = vm_host.VM_HOST) -> Target:
    """The validation suite's :class:`~persona.validate.model.Target` for a VM host: its service
    on the project bridge, its connection table read through the guest's agent, no redis."""
    from persona.validate.model import Target

    return Target(host=spec.name, api_url=vm_host.service_url(spec), redis=None,
                  netns_pid=None, corpus_items=service_items(spec),
                  sockets=lambda: guest_sockets(g))


# ---------------------------------------------------------------- the provisioner interface
VM_ID = "vm:"  # trace.containers values of a VM replacement: "vm:<guest name>"
UNSUPPORTED_OPTIONS = ("cpu_override", "config_override", "break_checkpoint")


@dataclass
class VmEngine:
    """A :class:`persona.provision.engine.HostEngine`: boots a replacement guest sized as the
    captured one and applies the persona in the plan's order (:func:`persona.vm.apply.apply_vm`);
    the trace is the container path's :class:`~persona.provision.apply.Trace`. The replacement is
    named ``<host>-replacement`` and gets the captured address and MAC (fence the original
    first: this engine refuses to build a second live copy it knows of)."""

    prov: QemuProvisioner
    source: PersonaSource | None = None  # where a cold start gets the persona's config from
    replacements: dict[str, Vm] = field(default_factory=dict)  # trace id -> guest

    @property
    def modules(self) -> Mapping[str, str]:
        return self.prov.image.modules

    def _name(self, m: PersonaManifest) -> str:
        return f"{m.host.name}-replacement"

    def _check_options(self, opts: ApplyOptions) -> None:
        d = ApplyOptions()
        bad = [k for k in UNSUPPORTED_OPTIONS if getattr(opts, k) != getattr(d, k)]
        if bad:
            raise RestoreError(f"the VM provisioner does not support ApplyOptions "
                               f"{', '.join(bad)} (fault injection of the container path)")

    def _build(self, m: PersonaManifest, data: Path, plan: Plan | None, trace: Trace,
               cold: bool) -> Trace:
        t0 = time.perf_counter()
        name = self._name(m)
        live = [v.name for v in self.prov.vms if v.name in (m.host.name, name)]
        if live:
            raise RestoreError(f"guest(s) {', '.join(live)} still running: fence the old host "
                               "first (never two live copies of one address and MAC)")
        rec = StepRecord(name, "provision", f"boot VM ({self.prov.accel})", 0.0)
        trace.steps.append(rec)
        vm: Vm | None = None
        try:
            vm = self.prov.provision_for(m, name)
            trace.containers = {name: VM_ID + name}
            self.replacements[VM_ID + name] = vm
            rec.outcome, rec.end_s = "ok", time.perf_counter() - t0
            rec.detail = f"{name}: agent ready after {vm.boot_s:.2f} s (tap {vm.cfg.tap})"
            trace.phases["provision_s"] = rec.end_s
            t_apply = time.perf_counter()
            manifest = _without_memory(m) if cold else m
            tr = vm_apply.apply_vm(vm, manifest, data, self.modules, plan)
        except PersonaError as e:
            if rec.outcome == "running":
                rec.outcome, rec.detail, rec.end_s = "failed", str(e), time.perf_counter() - t0
            else:
                trace.steps.append(StepRecord("apply", "apply", "apply in plan order",
                                              time.perf_counter() - t0,
                                              time.perf_counter() - t0, "failed", str(e)))
            if vm is not None:
                self._remove(VM_ID + name)
                trace.rolled_back = True
            trace.outcome, trace.error = "failed", str(e)
            raise StepFailed(f"restore of {m.host.name} onto a VM failed and was rolled back: "
                             f"{e}", trace) from e
        except BaseException:
            if vm is not None:
                self._remove(VM_ID + name)
            raise
        levels = {s.component: s.level for s in (plan.steps if plan else ())}
        for st in tr.steps:
            start = st.started - t_apply + trace.phases["provision_s"]
            trace.steps.append(StepRecord(st.component, st.kind, st.action, start,
                                          start + st.seconds, "ok", st.detail,
                                          levels.get(st.component)))
        trace.lock = {"connections": [], "why": "the service's process tree is restored by one "
                      "CRIU call inside the guest: no namespace lock needed"}
        trace.phases["apply_s"] = time.perf_counter() - t_apply
        trace.outcome = "ok"
        return trace

    def apply_persona(self, manifest: PersonaManifest, data_dir: Path, plan: Plan,
                      version: str, opts: ApplyOptions) -> Trace:
        self._check_options(opts)
        trace = Trace(manifest.host.name, plan.policy, version, time.time())
        return self._build(manifest, data_dir, plan, trace, cold=False)

    def cold_start(self, manifest: PersonaManifest, data_dir: Path | None = None,
                   version: str = "newest persona") -> Trace:
        """A VM's image carries no service configuration (that is part of the persona), so the
        cold start applies the persona's modules, network, files and config (from ``data_dir``,
        else the host's newest persona in ``source``) and starts the service fresh from its
        captured command line: no process memory (the service's in-memory data is new)."""
        host = manifest.host.name
        trace = Trace(host, "cold-start", f"{version} without process memory", time.time())
        if data_dir is not None:
            return self._build(manifest, data_dir, None, trace, cold=True)
        if self.source is None:
            raise RestoreError(f"cold start of VM host {host}: no persona data given and the "
                               "VmEngine has no persona source to take the service's "
                               "configuration from")
        versions = self.source.versions(host)
        if not versions:
            raise RestoreError(f"cold start of VM host {host}: no persona in {self.source.url}")
        with tempfile.TemporaryDirectory(prefix=f"persona-vm-cold-{host}-") as d:
            return self._build(manifest, self.source.fetch(host, versions[-1], Path(d)), None,
                               trace, cold=True)

    def remove_replacement(self, trace: Trace) -> None:
        for vid in trace.containers.values():
            self._remove(vid)
        trace.rolled_back = True

    def _remove(self, vid: str) -> None:
        vm = self.replacements.pop(vid, None)
        if vm is not None:
            self.prov.remove(vm)

    def guest(self, trace: Trace) -> Vm:
        for vid in trace.containers.values():
            if vid in self.replacements:
                return self.replacements[vid]
        raise RestoreError(f"no running VM replacement for {trace.host}")


def _without_memory(m: PersonaManifest) -> PersonaManifest:
    """``m`` with its processes' CRIU images dropped: apply starts them fresh (reported)."""
    comps = tuple(
        replace(c, data=(), attributes={**c.attributes, "memory_state": "cold-start: requested"})
        if c.kind == ComponentKind.PROCESS else c
        for c in m.components)
    return replace(m, components=comps)


# ---------------------------------------------------------------- the recovery workflow's hooks
@dataclass
class VmHooks:
    """``persona.recovery.workflow.Hooks`` for a VM host: the service answers on the bridge,
    warm = the replacement's service still holds the captured data (same pid, the data set's
    sampled items answer as at capture), CPU from the guest's cgroup,
    validation = the Behavioural Validation Suite against :func:`vm_target`."""

    engine: VmEngine
    baseline: Baseline
    spec: vm_host.VmHostSpec = vm_host.VM_HOST
    seed: int = 0
    verdict_dir: Path | None = None
    last_trace: Trace | None = None

    def _guest(self) -> Vm:
        vms = list(self.engine.replacements.values())
        if not vms:
            raise RestoreError(f"no VM replacement of {self.spec.name} is running")
        return vms[-1]

    def wait_ready(self, host: str, timeout_s: float) -> None:
        url = vm_host.service_url(self.spec) + "/healthz"
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                with _http(url, 0.5) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        raise RestoreError(f"{host}'s service at {url} not healthy after {timeout_s:.0f} s "
                           f"({last})")

    def prove_warm(self, manifest: PersonaManifest) -> WarmProof:
        return prove_warm_vm(manifest, self._guest(), self.spec)

    def cpu(self, cid: str) -> CpuSample:
        from persona.recovery.workflow import CpuSample

        vm = self.engine.replacements.get(cid)
        if vm is None:
            raise RestoreError(f"no VM replacement {cid}")
        text = vm.sh(f"cat /sys/fs/cgroup/{self.spec.cgroup}/cpu.stat", "cpu.stat")
        kv = dict(ln.split() for ln in text.splitlines() if len(ln.split()) == 2)
        return CpuSample(time.monotonic(), int(kv.get("usage_usec", 0)) * 1000,
                         int(kv.get("nr_periods", 0)), int(kv.get("nr_throttled", 0)))

    def validate(self, manifest: PersonaManifest) -> ValidationResult:
        from persona.recovery.workflow import ValidationResult
        from persona.validate import validate_target

        since = datetime.fromisoformat(manifest.host.captured_at).timestamp()
        v = validate_target(vm_target(self._guest(), self.spec), self.baseline, seed=self.seed,
                            state_since=since)
        if self.verdict_dir is not None:
            v.write(self.verdict_dir)
        failed = tuple(m.name for m in v.metrics if not m.passed and m.critical)
        return ValidationResult(bool(v.passed), float(v.score), v.to_dict(), failed)


def _http(url: str, timeout: float) -> Any:
    import urllib.request

    from persona.detect.probes import check_address
    from persona.validate.load import VALIDATION_SUBNETS

    check_address(url.split("/")[2].split(":")[0], VALIDATION_SUBNETS)
    return urllib.request.urlopen(url, timeout=timeout)


def introspect(spec: vm_host.VmHostSpec = vm_host.VM_HOST) -> dict[str, Any]:
    with _http(vm_host.service_url(spec) + "/introspect", 2.0) as r:
        return dict(json.loads(r.read()))


def prove_warm_vm(manifest: PersonaManifest, vm: Vm,
                  spec: vm_host.VmHostSpec = vm_host.VM_HOST) -> WarmProof:
    """Warm, not a silent cold start: the service runs under its captured pid, and the items
    sampled at capture answer as they did then (vmkv draws its data from /dev/urandom at
    start: a fresh process answers differently)."""
    proc = next(c for c in manifest.components if c.kind == ComponentKind.PROCESS)
    live = proc.attributes.get("service") or {}
    checks = [Check("criu-restore", proc.attributes.get("memory_state", "").startswith("warm"),
                    str(proc.attributes.get("memory_state", ""))[:120])]
    try:
        now = introspect(spec)
    except (OSError, ValueError) as e:
        return WarmProof(False, (*checks, Check("introspect", False, str(e))))
    checks.append(Check("same-pid", live.get("pid") is not None and now.get("pid") == live["pid"],
                        f"captured pid {live.get('pid')}, now {now.get('pid')}"))
    items = dict(live.get("items") or {})
    try:
        same = {k: _get_json(f"{vm_host.service_url(spec)}/item/{k}") == v
                for k, v in items.items()}
    except (OSError, ValueError) as e:
        return WarmProof(False, (*checks, Check("data-kept", False, str(e))))
    checks.append(Check("data-kept", bool(same) and all(same.values()),
                        f"{sum(same.values())} of {len(same)} sampled items as captured"))
    return WarmProof(all(c.ok for c in checks), tuple(checks))


def _get_json(url: str) -> Any:
    with _http(url, 2.0) as r:
        return json.loads(r.read())

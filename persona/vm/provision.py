"""The VM provisioner and the end-to-end round trip (original -> capture -> replacement).

``VmProvisioner`` is this package's own small protocol (the container provisioner's
``ProvisionEngine`` is Docker-shaped: containers, network namespaces, CRIU restores):
``provision`` a fresh guest of a given size, ``remove`` it. ``QemuProvisioner`` records every
guest it starts and :meth:`QemuProvisioner.close` removes all of them.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from persona.errors import VmError
from persona.model import PersonaManifest
from persona.vm import apply as vm_apply
from persona.vm import capture as vm_capture
from persona.vm import host as vm_host
from persona.vm.image import Image, build_image
from persona.vm.qemu import Vm, VmConfig, boot_many, choose_accel


class VmProvisioner(Protocol):
    def provision(self, names: list[str], memory_mb: int, cpus: int) -> list[Vm]: ...
    def remove(self, vm: Vm) -> None: ...


@dataclass
class QemuProvisioner:
    image: Image
    accel: str = "tcg"
    vms: list[Vm] = field(default_factory=list)

    def provision(self, names: list[str], memory_mb: int = 256, cpus: int = 1) -> list[Vm]:
        """Boot ``names`` in parallel (fresh guests from the image)."""
        vms = boot_many(self.image, [VmConfig(n, memory_mb, cpus, self.accel) for n in names])
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
        if vm in self.vms:
            self.vms.remove(vm)

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
                                 tuple(spec.sysctls), labels)


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
    with QemuProvisioner(image, acc) as prov:
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

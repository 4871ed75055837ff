"""Live: two real QEMU guests (original, replacement) running Debian's cloud kernel.

The original gets the VM host's state (kernel modules in a known order with non-default
parameters, address, sysctl, files, a service in a cgroup); its persona is captured through
the agent; the persona is applied to the replacement in plan order; the replacement's own
``/proc/modules`` and ``/sys/module/*/parameters`` must then show the same load order and
parameters. Bounded in time; every QEMU process and temp folder is removed in teardown.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from persona.capture import parse
from persona.vm import apply, capture, host, image
from persona.vm.net import VmNetwork
from persona.vm.provision import QemuProvisioner, capture_spec
from persona.vm.qemu import choose_accel

pytestmark = [pytest.mark.live, pytest.mark.slow]
BUDGET_S = 150.0


@pytest.fixture
def provisioner(vm_image: image.Image, clean_vm_lab: None) -> Iterator[QemuProvisioner]:
    acc, _ = choose_accel(vm_image)
    network = VmNetwork.up()
    prov = QemuProvisioner(vm_image, acc, network)
    yield prov
    vms = list(prov.vms)
    prov.close()
    assert network.close() == []
    for vm in vms:  # nothing left behind: processes ended, temp folders gone
        assert vm.proc.poll() is not None, f"QEMU {vm.proc.pid} still running"
        assert not vm.workdir.exists(), f"{vm.workdir} left behind"


def _modules_of(vm: host.Guest) -> list[tuple[str, dict[str, str]]]:
    """The guest's own /proc/modules (load order) and /sys/module/*/parameters."""
    text = vm.run(capture.MODULES_SCRIPT).check("reading modules").text
    mods_text, params = capture.split_modules_dump(text)
    rows = parse.parse_proc_modules(mods_text)
    return [(m.name, dict(m.parameters)) for m in parse.modules_in_load_order(rows, params)]


def test_vm_persona_round_trip_loads_modules_in_captured_order(
        provisioner: QemuProvisioner, vm_image: image.Image, tmp_path: Path) -> None:
    spec = host.VM_HOST
    t0 = time.monotonic()
    orig, repl = provisioner.provision([spec.name, f"{spec.name}-repl"], memory_mb=256)
    assert _modules_of(repl) == [], "a fresh replacement must start with no modules loaded"

    host.setup_original(orig, spec, vm_image.modules)
    loaded = _modules_of(orig)
    assert [n for n, _ in loaded] == host.module_names(spec)
    for (name, params), want in zip(loaded, spec.modules, strict=True):
        assert name == want.name and {k: params[k] for k in want.params} == dict(want.params)

    count_before = int(orig.sh("cat /run/demo/count", "reading the counter"))
    cap = capture_spec(orig, spec, tmp_path / "original", {"test": "live"})
    assert apply.module_table(cap.manifest) == loaded
    provisioner.remove(orig)  # fenced: the replacement takes over its address and MAC
    trace = apply.apply_vm(repl, cap.manifest, cap.data_dir, vm_image.modules)
    t_applied = time.monotonic()
    proc = cap.manifest.component("demo.process")
    if vm_image.criu:  # warm: the guest's CRIU moved the service's memory
        assert proc.attributes["memory_state"].startswith("warm: CRIU"), proc.attributes
        assert trace.steps[-1].action.startswith("warm: CRIU restore"), trace.steps[-1]
        # the in-memory counter went on from where it was: a cold start begins again at 1 and
        # ticks at most once per 0.2 s since its process step began
        count_after = int(repl.sh(  # the restored loop rewrites the file after its sleep
            "for i in $(seq 50); do [ -s /run/demo/count ] && break; sleep 0.1; done\n"
            "cat /run/demo/count", "reading the counter"))
        cold_bound = (trace.steps[-1].seconds + time.monotonic() - t_applied) / 0.2 + 2
        assert count_after > count_before and count_after > cold_bound, (
            count_before, count_after, cold_bound)
        restored = repl.sh(f"cat /sys/fs/cgroup/{spec.cgroup}/cgroup.procs", "cgroup").split()
        assert set(proc.attributes["criu"]["pids"][:2]) <= set(restored)  # same PIDs
    else:
        assert proc.attributes["memory_state"].startswith("cold-start"), proc.attributes

    # the replacement's kernel, read directly: same modules, same order, same parameters
    assert _modules_of(repl) == loaded
    body = repl.sh(f"wget -q -O - {host.service_url(spec)}/", "fetching the service")
    assert body.strip() == "hello from the persona vm host"
    rcap = capture_spec(repl, spec, tmp_path / "replacement", {"test": "live"})
    assert apply.compare(cap.manifest, rcap.manifest) == []
    # control: the read-back is live, not the capture echoed: reload brd with another value
    repl.sh(f"rmmod brd && {host.insmod_line(vm_image.modules['brd'], {'rd_nr': '3'})}",
            "reloading brd")
    diffs = apply.compare(cap.manifest, capture_spec(repl, spec, tmp_path / "control", {}).manifest)
    assert "kmod.brd parameter rd_nr: original '2', replacement '3'" in diffs
    assert any(d.startswith("kernel module load order:") for d in diffs)  # brd is now last
    elapsed = time.monotonic() - t0
    print(f"\nboot {orig.boot_s:.1f}/{repl.boot_s:.1f} s, apply {trace.total_s:.2f} s "
          f"(modules {trace.seconds('kernel_module'):.2f} s, process "
          f"{trace.seconds('process'):.2f} s), total {elapsed:.1f} s; {proc.attributes['memory_state']}")
    assert elapsed < BUDGET_S

"""The VM lab's network helpers, the validation plumbing for a VM target, and the VM engine
behind the provisioner interface (``persona.provision.apply``), with a fake guest (no QEMU)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from persona.capture.parse import TcpSocket
from persona.errors import RestoreError, ValidationError
from persona.provision import apply as P
from persona.provision.engine import HostEngine
from persona.provision.plan import captured_order_plan
from persona.validate import suite
from persona.validate.load import Endpoint
from persona.validate.model import Target
from persona.vm import capture, net, provision
from persona.vm.qemu import VmConfig, nic_argv

from .test_capture_apply import FakeGuest

IP4 = ("1: lo    inet 127.0.0.1/8 scope host lo\n"
       "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n"
       "9: br-x    inet 10.78.0.200/25 scope global br-x\n")


def test_subnet_users_are_found_and_other_networks_ignored() -> None:
    assert net.users_of_subnet(IP4) == ["br-x 10.78.0.200/25"]
    assert net.users_of_subnet(IP4.replace("10.78.0.200/25", "10.77.0.1/24")) == []
    assert net.users_of_subnet("7: w    inet 10.0.0.1/8 scope global w\n") == ["w 10.0.0.1/8"]


def test_nic_only_with_a_tap_and_with_its_mac() -> None:
    assert nic_argv(VmConfig("a")) == ["-nic", "none"]
    argv = nic_argv(VmConfig("a", tap="pvmtap3", mac=net.guest_mac(3)))
    assert argv[1] == "tap,id=net0,ifname=pvmtap3,script=no,downscript=no"
    assert argv[3].endswith(",mac=52:54:00:78:00:03") and "virtio-net-pci" in argv[3]


def test_interfaces_depend_on_their_driver_module() -> None:
    have = {"kmod.virtio_net", "kmod.dummy", "kmod.loop"}
    drivers = {"eth0": "virtio_net", "dummy0": "", "lo": ""}
    assert capture.iface_modules(["dummy0", "eth0"], drivers, have) == ("kmod.dummy",
                                                                       "kmod.virtio_net")
    assert capture.iface_modules(["eth1"], {"eth1": "e1000"}, have) == ()


def test_validation_may_reach_the_vm_bridge_and_nothing_else() -> None:
    assert Endpoint.parse("http://10.78.0.2:8080") == Endpoint("10.78.0.2", 8080)
    for bad in ("http://10.79.0.2:8080", "http://192.0.2.1:80"):
        with pytest.raises(ValidationError, match="refusing"):
            Endpoint.parse(bad)


def test_a_target_reads_its_connection_table_through_its_own_reader() -> None:
    socks = [TcpSocket("10.78.0.2", 8080, "0.0.0.0", 0, "LISTEN", 1),
             TcpSocket("10.78.0.2", 8080, "10.78.0.1", 41000, "ESTABLISHED", 2)]
    t = Target("vmhost", "http://10.78.0.2:8080", sockets=lambda: socks)
    assert suite._conn_table(t) == {"listen": [["10.78.0.2", 8080]], "internal": {}}
    assert "sockets" not in t.to_dict() and Target.from_dict(t.to_dict()).sockets is None
    assert suite._conn_table(Target("h", "http://10.78.0.2:8080")) is None


def test_guest_sockets_parse_the_guests_tables() -> None:
    g = FakeGuest()
    socks = provision.guest_sockets(g)
    assert [(s.local, s.local_port, s.state) for s in socks] == [("10.78.0.2", 8080, "LISTEN")]


# ---------------------------------------------------------------- VmEngine behind apply_persona
@dataclass
class FakeVm(FakeGuest):
    cfg: VmConfig = field(default_factory=lambda: VmConfig("x"))
    boot_s: float = 0.1


@dataclass
class FakeImage:
    modules: dict[str, str]


@dataclass
class FakeProv:
    image: Any
    accel: str = "tcg"
    vms: list[Any] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    fail_on: str | None = None

    def provision_for(self, m: Any, name: str) -> FakeVm:
        vm = FakeVm(name=name, fail_on=self.fail_on, cfg=VmConfig(name, tap="pvmtap1"))
        self.vms.append(vm)
        return vm

    def remove(self, vm: Any) -> None:
        self.vms.remove(vm)
        self.removed.append(vm.name)


def _persona(tmp_path: Path) -> Any:
    return capture.capture_vm(FakeGuest(), tmp_path, ("/etc/demo/app.conf",), "demo",
                              ("net.netfilter.nf_conntrack_max",))


def _paths(m: Any) -> dict[str, str]:
    return {c.name.removeprefix("kmod."): f"/lib/modules/{c.name}.ko" for c in m.components
            if c.name.startswith("kmod.")}


def test_vm_engine_is_driven_through_the_provisioner_entry_points(tmp_path: Path) -> None:
    cap = _persona(tmp_path)
    prov = FakeProv(FakeImage(_paths(cap.manifest)))
    eng = provision.VmEngine(prov)  # type: ignore[arg-type]
    assert isinstance(eng, HostEngine)
    plan = captured_order_plan(cap.manifest)
    tr = P.apply_persona(eng, cap.manifest, cap.data_dir, plan, "v1")  # type: ignore[arg-type]
    assert tr.outcome == "ok" and tr.containers == {"fake-replacement": "vm:fake-replacement"}
    assert [s.name for s in tr.steps] == ["fake-replacement", *plan.order]
    assert all(s.outcome == "ok" and s.end_s >= s.start_s for s in tr.steps)
    assert tr.steps[1].action == "insmod at position 0" and tr.steps[1].level == 1
    assert set(tr.phases) == {"provision_s", "apply_s"}
    # a second copy is refused while the first runs
    with pytest.raises(RestoreError, match="still running"):  # before anything is built
        P.apply_persona(eng, cap.manifest, cap.data_dir, plan, "v1")  # type: ignore[arg-type]
    P.remove_replacement(eng, tr)  # type: ignore[arg-type]
    assert prov.removed == ["fake-replacement"] and prov.vms == [] and tr.rolled_back


def test_vm_engine_rolls_back_a_failed_step_and_keeps_the_trace(tmp_path: Path) -> None:
    cap = _persona(tmp_path)
    prov = FakeProv(FakeImage(_paths(cap.manifest)), fail_on="nf_conntrack.ko")
    eng = provision.VmEngine(prov)  # type: ignore[arg-type]
    with pytest.raises(P.StepFailed, match="nf_conntrack") as e:
        P.apply_persona(eng, cap.manifest, cap.data_dir, captured_order_plan(cap.manifest),
                        "v1")  # type: ignore[arg-type]
    assert e.value.trace.outcome == "failed" and e.value.trace.rolled_back
    assert e.value.trace.steps[-1].outcome == "failed" and prov.vms == []


def test_vm_engine_refuses_container_fault_injection(tmp_path: Path) -> None:
    cap = _persona(tmp_path)
    eng = provision.VmEngine(FakeProv(FakeImage(_paths(cap.manifest))))  # type: ignore[arg-type]
    with pytest.raises(RestoreError, match="cpu_override"):
        P.apply_persona(eng, cap.manifest, cap.data_dir,  # type: ignore[arg-type]
                        captured_order_plan(cap.manifest), "v1",
                        P.ApplyOptions(cpu_override={"demo.process": 1.0}))


def test_vm_cold_start_needs_a_source_and_drops_process_memory(tmp_path: Path) -> None:
    from persona.recovery.source import FolderSource

    cap = _persona(tmp_path / "store" / "fake" / "v1")
    prov = FakeProv(FakeImage(_paths(cap.manifest)))
    with pytest.raises(RestoreError, match="no persona source"):
        P.cold_start(provision.VmEngine(prov), cap.manifest)  # type: ignore[arg-type]
    eng = provision.VmEngine(prov, FolderSource(tmp_path / "store"))  # type: ignore[arg-type]
    tr = P.cold_start(eng, cap.manifest)  # type: ignore[arg-type]
    assert tr.policy == "cold-start" and tr.steps[-1].action.startswith("cold start in cgroup")
    assert not any("criu restore" in s for s in prov.vms[0].scripts)
    P.remove_replacement(eng, tr)  # type: ignore[arg-type]
    tr = P.cold_start(eng, cap.manifest, cap.data_dir, version="disk of v1")  # type: ignore[arg-type]
    assert tr.version == "disk of v1 without process memory" and len(prov.vms) == 1

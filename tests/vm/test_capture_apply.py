"""Capture assembly, apply ordering and verification with a typed fake guest (no QEMU)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from persona.errors import RestoreError, VmError
from persona.model import ComponentKind
from persona.vm import apply, capture, guest
from persona.vm.protocol import Result

MODULES = """brd 20480 0 - Live 0xffffffffc0473000
nf_conntrack 188416 0 - Live 0xffffffffc0444000
nf_defrag_ipv4 16384 1 nf_conntrack, Live 0xffffffffc0438000
libcrc32c 16384 1 nf_conntrack, Live 0xffffffffc0433000
dummy 16384 0 - Live 0xffffffffc042e000
loop 32768 0 - Live 0xffffffffc0425000
"""
PARAMS = ("loop\tmax_loop\t12\nloop\tmax_part\t3\nnf_conntrack\thashsize\t4096\n"
          "nf_conntrack\tacct\tY\nbrd\trd_nr\t2\n")
IP_ADDR = """1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
2: dummy0    inet 10.78.0.2/24 scope global dummy0\\       valid_lft forever preferred_lft forever
2: dummy0    inet6 fe80::c04f:afff:fe26:36ff/64 scope link \\       valid_lft forever
"""
IP_LINK = ("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN qlen 1000\\    "
           "link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
           "2: dummy0: <BROADCAST,NOARP,UP,LOWER_UP> mtu 1500 qdisc noqueue state UNKNOWN qlen "
           "1000\\    link/ether c2:4f:af:26:36:ff brd ff:ff:ff:ff:ff:ff\n")
ROUTE = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
         "dummy0\t00004E0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
         "dummy0\t00014E0A\t01004E0A\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")
TCP = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
       "timeout inode\n   0: 02004E0A:1F90 00000000:0000 0A 00000000:00000000 00:00000000 "
       "00000000     0        0 1001 1 0000000000000000 100 0 0 10 0\n")
CONF = b"greeting=hi\n"
STATE = b"orders=42\n"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for p, data in files.items():
            ti = tarfile.TarInfo(p.lstrip("/"))
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class FakeGuest:
    """Answers the capture's scripts with outputs in the guest's exact formats; records
    every script apply sends (and fails the one containing ``fail_on``)."""

    name: str = "fake"
    scripts: list[str] = field(default_factory=list)
    fail_on: str | None = None
    criu: bool = False  # does the guest have CRIU (and does a dump succeed)?

    def run(self, script: str, timeout: float = 30.0, data: bytes = b"") -> Result:
        self.scripts.append(script)
        if self.fail_on and self.fail_on in script:
            return Result(0, 1, b"", b"insmod: can't insert: File exists\n")
        out = self._answer(script, data)
        return Result(0, 0, out.encode() if isinstance(out, str) else out, b"")

    def _answer(self, s: str, data: bytes) -> str | bytes:
        if s == capture.MODULES_SCRIPT:
            return MODULES + "@@PARAMS\n" + PARAMS
        table: dict[str, str | bytes] = {
            "ip -o addr": IP_ADDR, "ip -o link": IP_LINK, "cat /proc/net/route": ROUTE,
            "cat /proc/net/tcp": TCP, "uname -r": "6.1.0-56-cloud-amd64\n",
            f"cat {guest.BASELINE}": f"{sha(b'root')}  /etc/group\n{sha(b'x')}  /init\n",
            capture.FS_SCRIPT: f"{sha(b'y')}  /init\n{sha(CONF)}  /etc/demo/app.conf\n"
                               f"{sha(STATE)}  /var/lib/demo/state.txt\n",
            "cat /etc/demo/app.conf": CONF,
        }
        if s in table:
            return table[s]
        if s.startswith("tar -cf - "):
            return tar_of({"/etc/demo/app.conf": CONF, "/init": b"y",
                           "/var/lib/demo/state.txt": STATE})
        if s.startswith("command -v criu"):
            return "/bin/criu\n4.2.1\n" if self.criu else ""
        if "criu dump" in s:
            return b"\x1f\x8b fake tar.gz of CRIU images"
        if "criu restore" in s:
            return "125\n128\n"
        if "usage_usec" in s:  # two (usage_usec, uptime) samples 1 s apart
            return "1000\n10.00\n251000\n11.00\n"
        if "nproc" in s:
            return "cpus\t1\nmem_total_kb\t236000\n"
        if "sysctl -n" in s:
            return "net.netfilter.nf_conntrack_max\t5000\n"
        if "cgroup.procs" in s and "printf" in s:
            return ("cpu.max\t20000 100000 \nmemory.max\t67108864 \npids.max\t32 \n"
                    "memory.current\t4096 \ncgroup.procs\t281 \n")
        if "/cmdline" in s:
            return "httpd -f -p 10.78.0.2:8080 -h /srv/www "
        if "sha256sum" in s:  # config write during apply
            return f"{sha(data)}  path\n"
        return ""


def test_capture_builds_model_with_modules_through_capture_parser(tmp_path: Path) -> None:
    cap = capture.capture_vm(FakeGuest(), tmp_path, ("/etc/demo/app.conf",), "demo",
                             ("net.netfilter.nf_conntrack_max",))
    m = cap.manifest
    kmods = [c for c in m.components if c.kind == ComponentKind.KERNEL_MODULE]
    assert [c.name for c in kmods] == ["kmod.loop", "kmod.dummy", "kmod.libcrc32c",
                                       "kmod.nf_defrag_ipv4", "kmod.nf_conntrack", "kmod.brd"]
    assert [c.attributes["load_position"] for c in kmods] == list(range(6))
    assert m.component("kmod.loop").attributes["parameters"] == {"max_loop": "12",
                                                                 "max_part": "3"}
    assert m.component("kmod.nf_conntrack").depends_on == ("kmod.libcrc32c",
                                                           "kmod.nf_defrag_ipv4")
    net = m.component("network")
    assert net.depends_on == ("kmod.dummy",) and net.attributes["links"] == {
        "dummy0": "c2:4f:af:26:36:ff"}
    assert net.attributes["listening"] == ["10.78.0.2:8080"]
    assert m.component("sysctl").depends_on == ("kmod.nf_conntrack",)
    fs = m.component("rootfs.filesystem").attributes
    assert (fs["added"], fs["changed"], fs["deleted"]) == (
        ["/etc/demo/app.conf", "/var/lib/demo/state.txt"], ["/init"], ["/etc/group"])
    proc = m.component("demo.process")
    assert proc.resources is not None and proc.resources.cpu_limit_cores == pytest.approx(0.2)
    assert proc.resources.cpu_usage_cores == pytest.approx(0.25)
    assert m.host.labels["guest_mem_total_kb"] == "236000"
    assert proc.attributes["memory_state"].startswith("cold-start")
    assert (tmp_path / "manifest.json").exists() and (tmp_path / "fs.tar").stat().st_size > 0
    assert apply.plan(m)[:6] == [c.name for c in kmods]


def test_apply_loads_modules_in_captured_order_with_parameters(tmp_path: Path) -> None:
    cap = capture.capture_vm(FakeGuest(), tmp_path, ("/etc/demo/app.conf",), "demo",
                             ("net.netfilter.nf_conntrack_max",))
    paths = {n: f"/lib/modules/k/{n}.ko" for n in
             ("loop", "dummy", "libcrc32c", "nf_defrag_ipv4", "nf_conntrack", "brd")}
    g = FakeGuest(name="replacement")
    tr = apply.apply_vm(g, cap.manifest, tmp_path, paths)
    ins = [s for s in g.scripts if s.startswith("insmod")]
    assert ins[0] == "insmod /lib/modules/k/loop.ko 'max_loop=12' 'max_part=3'"
    assert [s.split()[1].rsplit("/", 1)[1] for s in ins] == [
        "loop.ko", "dummy.ko", "libcrc32c.ko", "nf_defrag_ipv4.ko", "nf_conntrack.ko", "brd.ko"]
    kinds = [s.kind for s in tr.steps]
    assert kinds.index("network") > kinds.index("kernel_module") and kinds[-1] == "process"
    net = next(s for s in g.scripts if "ip addr replace" in s)
    assert "ip link set dummy0 address c2:4f:af:26:36:ff" in net
    assert "ip route replace 10.78.1.0/24 via 10.78.0.1 dev dummy0 metric 0" in net
    with pytest.raises(RestoreError, match=r"kmod\.nf_conntrack: insmod at position 4 failed"):
        apply.apply_vm(FakeGuest(fail_on="nf_conntrack.ko"), cap.manifest, tmp_path, paths)
    with pytest.raises(RestoreError, match="no module 'brd'"):
        apply.apply_vm(FakeGuest(), cap.manifest, tmp_path,
                       {k: v for k, v in paths.items() if k != "brd"})


def test_compare_finds_order_and_parameter_differences(tmp_path: Path) -> None:
    m = capture.capture_vm(FakeGuest(), tmp_path, (), "demo", ()).manifest
    assert apply.compare(m, m) == []
    comps = list(m.components)
    i, j = 0, 1  # swap load positions of loop and dummy
    a, b = comps[i], comps[j]
    from dataclasses import replace
    comps[i] = replace(a, attributes={**a.attributes, "load_position": 1})
    comps[j] = replace(b, attributes={**b.attributes, "load_position": 0})
    swapped = m.with_components(comps)
    assert any("load order" in d for d in apply.compare(m, swapped))
    c = comps[4]
    comps[4] = replace(c, attributes={**c.attributes, "parameters": {"hashsize": "2048",
                                                                     "acct": "Y"}})
    diffs = apply.compare(m, m.with_components(comps))
    assert "kmod.nf_conntrack parameter hashsize: original '4096', replacement '2048'" in diffs
    small = replace(m, host=replace(m.host, labels={**m.host.labels,
                                                    "guest_mem_total_kb": "100000"}))
    assert apply.compare(m, small) == [
        "host guest_mem_total_kb: original '236000', replacement '100000'"]


def test_pure_parsers() -> None:
    assert capture.fs_diff({"/a": "1", "/b": "2"}, {"/a": "1", "/b": "3", "/c": "4"}) == \
        capture.FsDiff(("/c",), ("/b",), (), {"/c": "4", "/b": "3"})
    assert capture.parse_ip_addr(IP_ADDR)[1] == {"iface": "dummy0", "family": "inet",
                                                 "addr": "10.78.0.2", "prefix": "24"}
    assert apply.prefix_len("255.255.255.0") == 24
    assert capture.cpu_rate("0 1.0 500000 2.0") == (0.5, 1.0)
    with pytest.raises(VmError, match="did not advance"):
        capture.cpu_rate("0 2.0 5 2.0")
    mods, params = capture.split_modules_dump(MODULES + "@@PARAMS\n" + PARAMS)
    km, note = capture.read_modules(mods, params)
    assert km[-1].name == "brd" and km[-1].parameters == {"rd_nr": "2"} and "6 modules" in note


def test_policy_plans_get_modules_resequenced_into_load_order(tmp_path: Path) -> None:
    from dataclasses import replace

    from persona.provision.plan import captured_order_plan
    m = capture.capture_vm(FakeGuest(), tmp_path, (), "demo", ()).manifest
    p = captured_order_plan(m)
    steps = list(p.steps)
    steps[0], steps[1] = steps[1], steps[0]  # a policy put dummy before loop
    out = apply.resequence_modules(m, replace(p, steps=tuple(steps)))
    assert out.order[:2] == ("kmod.loop", "kmod.dummy")
    # network depends on kmod.dummy: moving it to the front cannot be repaired
    bad = [s for s in p.steps if s.component == "network"] + [
        s for s in p.steps if s.component != "network"]
    with pytest.raises(RestoreError, match="before its dependencies"):
        apply.resequence_modules(m, replace(p, steps=tuple(bad)))


def test_process_memory_warm_with_guest_criu_cold_without(tmp_path: Path) -> None:
    cold = capture.capture_vm(FakeGuest(), tmp_path / "c", (), "demo", ()).manifest
    proc = cold.component("demo.process")
    assert proc.attributes["memory_state"].startswith("cold-start: the guest image has no CRIU")
    assert proc.data == () and proc.attributes["cmdline"].startswith("httpd")
    warm = capture.capture_vm(FakeGuest(criu=True), tmp_path / "w", (), "demo", ())
    wp = warm.manifest.component("demo.process")
    assert wp.attributes["memory_state"].startswith("warm: CRIU 4.2.1")
    assert wp.data == ("process.criu.tgz",) and wp.size_bytes == wp.attributes["criu"][
        "archive_bytes"]
    g = FakeGuest(name="replacement")
    paths = {c.name.removeprefix("kmod."): "/x.ko" for c in warm.manifest.components
             if c.kind == ComponentKind.KERNEL_MODULE}
    step = apply.apply_vm(g, warm.manifest, warm.data_dir, paths).steps[-1]
    assert step.action.startswith("warm: CRIU restore") and not any(
        "setsid" in s for s in g.scripts)
    g2 = FakeGuest(name="replacement", fail_on="criu restore")
    step = apply.apply_vm(g2, warm.manifest, warm.data_dir, paths).steps[-1]
    assert step.action.startswith("cold start in cgroup (CRIU restore failed")

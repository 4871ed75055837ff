"""The lab's VM host: what the original guest runs, and the narrow guest protocol.

``VM_HOST`` is the original: cloud-kernel modules loaded in a known order with non-default
parameters (defaults measured with ``persona vm defaults``, see docs/vm.md) - among them the
virtio stack that drives its NIC -, its address on that NIC (10.78.0.2/24 on the project's
bridge, :mod:`persona.vm.net`), a ``dummy`` interface with a guest-internal address and route,
a sysctl that only exists once ``nf_conntrack`` is loaded, config files, a state file, and a
service inside a cgroup v2 group with CPU, memory and pids limits: ``vmkv`` (``service.c``, an
HTTP key-value API on 10.78.0.2:8080 whose data lives only in its memory, which the Behavioural
Validation Suite checks from the host) plus a shell counter.

:func:`setup_original` builds that state through the guest agent. The replacement never runs
it: it gets the persona through :mod:`persona.vm.apply` from what was captured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from persona.vm.protocol import Result


class Guest(Protocol):
    """What capture and apply need from a guest: run a script (with optional data)."""

    @property
    def name(self) -> str: ...

    def run(self, script: str, timeout: float = 30.0, data: bytes = b"") -> Result: ...


@dataclass(frozen=True)
class ModuleSpec:
    name: str
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VmHostSpec:
    name: str
    modules: tuple[ModuleSpec, ...]
    address: str  # CIDR on the NIC (eth0, virtio_net): where the service listens
    dummy_address: str  # CIDR on dummy0 (guest-internal)
    routes: tuple[tuple[str, str], ...]  # (destination CIDR, gateway) via dummy0
    sysctls: Mapping[str, str]
    config_files: Mapping[str, str]  # path -> content
    state_files: Mapping[str, str]
    service_cmd: str
    cgroup: str
    cgroup_limits: Mapping[str, str]  # cgroup v2 file -> value


SERVICE_PORT = 8080
# The service: vmkv (its items live in its memory), plus an in-memory counter written to
# /run/demo/count every 0.2 s (a warm restore continues the count, a cold start begins again
# at 1; /run is not in the fs diff).
SERVICE = f"""mkdir -p /run/demo
vmkv 10.78.0.2 {SERVICE_PORT} /etc/demo/app.conf &
n=0
while true; do n=$((n + 1)); echo $n > /run/demo/count; sleep 0.2; done
"""
# the NIC's driver and what it needs, in a valid load order
NIC_MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
               "virtio_pci", "failover", "net_failover", "virtio_net")

VM_HOST = VmHostSpec(
    name="vmhost",
    modules=(
        ModuleSpec("loop", {"max_loop": "12", "max_part": "3", "hw_queue_depth": "64"}),
        ModuleSpec("dummy"),
        ModuleSpec("libcrc32c"),
        ModuleSpec("nf_defrag_ipv4"),
        ModuleSpec("nf_defrag_ipv6"),
        ModuleSpec("nf_conntrack", {"hashsize": "4096", "expect_hashsize": "1024",
                                    "acct": "Y", "tstamp": "Y"}),
        ModuleSpec("brd", {"rd_nr": "2", "rd_size": "8192", "max_part": "2"}),
        ModuleSpec("nfnetlink"),
        ModuleSpec("nf_tables"),  # CRIU's kernel-feature probe needs nftables over netlink
        ModuleSpec("inet_diag"),  # CRIU reads the service's TCP sockets through sock_diag
        ModuleSpec("tcp_diag"),
        *(ModuleSpec(m) for m in NIC_MODULES),
    ),
    address="10.78.0.2/24",
    dummy_address="10.78.1.2/24",
    routes=(("10.78.2.0/24", "10.78.1.1"),),
    sysctls={"net.netfilter.nf_conntrack_max": "5000"},
    config_files={
        "/etc/demo/app.conf": ("greeting=hello from the persona vm host\nitems=2000\n"
                               "value_bytes=32\nwork_rounds=40\nmutate_ms=0\n"
                               "checksum_responses=1\n"),
        "/etc/demo/service.sh": SERVICE,
    },
    state_files={"/var/lib/demo/state.txt": "orders=42\nlast=2026-11-28\n"},
    service_cmd="sh /etc/demo/service.sh",
    cgroup="demo",
    cgroup_limits={"cpu.max": "90000 100000", "memory.max": "67108864", "pids.max": "32"},
)


def service_ip(spec: VmHostSpec) -> str:
    return spec.address.split("/")[0]


def service_url(spec: VmHostSpec) -> str:
    return f"http://{service_ip(spec)}:{SERVICE_PORT}"


def module_names(spec: VmHostSpec) -> list[str]:
    return [m.name for m in spec.modules]


def insmod_line(path: str, params: Mapping[str, str]) -> str:
    """``insmod PATH k=v ...`` (values single-quoted for the guest shell)."""
    args = " ".join(f"'{k}={v}'" for k, v in params.items())
    return f"insmod {path} {args}".rstrip()


def make_cgroup(cgroup: str, limits: Mapping[str, str]) -> list[str]:
    """Shell lines: create the cgroup v2 group ``cgroup`` with ``limits``."""
    lines = ["echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control",
             f"mkdir -p /sys/fs/cgroup/{cgroup}"]
    return lines + [f"echo '{v}' > /sys/fs/cgroup/{cgroup}/{k}" for k, v in limits.items()]


CRIU_IMAGES = "/run/criu/img"
# the root of the service's process tree: the cgroup member whose parent is not a member
TREE_ROOT = ("root=$(for p in $(cat {procs}); do pp=$(cut -d' ' -f4 /proc/$p/stat); "
             "grep -qx \"$pp\" {procs} || echo $p; done | head -1)")


def criu_dump_script(cgroup: str) -> str:
    """Dump the cgroup's process tree with the guest's CRIU, leave it running, tar.gz to stdout.
    ``--network-lock skip``: the service's sockets are listening only (nothing to freeze)."""
    procs = f"/sys/fs/cgroup/{cgroup}/cgroup.procs"
    return "\n".join([
        "set -e", TREE_ROOT.format(procs=procs), f"rm -rf {CRIU_IMAGES}", f"mkdir -p {CRIU_IMAGES}",
        f"criu dump -t \"$root\" -D {CRIU_IMAGES} --leave-running --network-lock skip "
        "-o /run/criu/dump.log -v2 || { tail -3 /run/criu/dump.log >&2; exit 1; }",
        f"tar -czf - -C {CRIU_IMAGES} ."])


def criu_restore_script(cgroup: str, limits: Mapping[str, str]) -> str:
    """Restore the tree from the archive in ``$PERSONA_DATA`` into the (re-created) cgroup."""
    return "\n".join([
        "set -e", *make_cgroup(cgroup, limits), "rm -rf /run/criu/rst", "mkdir -p /run/criu/rst",
        'tar -xzf "$PERSONA_DATA" -C /run/criu/rst',
        "criu restore -D /run/criu/rst -d --network-lock skip -o /run/criu/restore.log -v2 "
        "|| { tail -3 /run/criu/restore.log >&2; exit 1; }",
        f"cat /sys/fs/cgroup/{cgroup}/cgroup.procs"])


def start_in_cgroup(cgroup: str, limits: Mapping[str, str], cmd: str) -> str:
    """Shell text: create the cgroup v2 group with ``limits``, start ``cmd`` inside it."""
    lines = make_cgroup(cgroup, limits)
    lines.append(f"sh -c 'echo $$ > /sys/fs/cgroup/{cgroup}/cgroup.procs; exec setsid {cmd}' "
                 "</dev/null >/dev/null 2>&1 &")
    return "\n".join(lines)


def setup_original(g: Guest, spec: VmHostSpec, module_paths: Mapping[str, str]) -> None:
    """Give a freshly booted guest the VM host's state (the 'life' the persona captures)."""
    script = ["set -e"]
    for m in spec.modules:
        script.append(insmod_line(module_paths[m.name], m.params))
    script += [f"ip addr add {spec.address} dev eth0", "ip link set eth0 up",
               f"ip addr add {spec.dummy_address} dev dummy0", "ip link set dummy0 up"]
    script += [f"ip route add {dst} via {gw} dev dummy0" for dst, gw in spec.routes]
    script += [f"sysctl -w {k}={v}" for k, v in spec.sysctls.items()]
    for path, text in {**spec.config_files, **spec.state_files}.items():
        d = path.rsplit("/", 1)[0]
        script.append(f"mkdir -p {d} && printf '%s' '{text}' > {path}")
    script += ["rm -f /etc/group",  # a deletion for the filesystem diff
               start_in_cgroup(spec.cgroup, spec.cgroup_limits, spec.service_cmd),
               f"for i in $(seq 50); do wget -q -O /dev/null {service_url(spec)}/healthz "
               "&& break; sleep 0.1; done",
               f"wget -q -O /dev/null {service_url(spec)}/healthz"]
    g.run("\n".join(script), timeout=60).check("setting up the VM host")

"""The lab's VM host: what the original guest runs, and the narrow guest protocol.

``VM_HOST`` is the original: cloud-kernel modules loaded in a known order with non-default
parameters (defaults measured with ``persona vm defaults``, see docs/vm.md), a ``dummy``
interface holding a project-owned address (10.78.0.2/24, nothing leaves the guest: the VM
has no network device), a sysctl that only exists once ``nf_conntrack`` is loaded, config
files, a state file, and a small service (busybox ``httpd`` on 10.78.0.2:8080) inside a
cgroup v2 group with CPU, memory and pids limits.

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
    address: str  # CIDR on dummy0
    routes: tuple[tuple[str, str], ...]  # (destination CIDR, gateway) via dummy0
    sysctls: Mapping[str, str]
    config_files: Mapping[str, str]  # path -> content
    state_files: Mapping[str, str]
    service_cmd: str
    cgroup: str
    cgroup_limits: Mapping[str, str]  # cgroup v2 file -> value


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
    ),
    address="10.78.0.2/24",
    routes=(("10.78.1.0/24", "10.78.0.1"),),
    sysctls={"net.netfilter.nf_conntrack_max": "5000"},
    config_files={
        "/etc/demo/httpd.conf": "A:127.0.0.1\nA:10.78.0.0/24\nD:*\n.txt:text/plain\n",
        "/etc/demo/app.conf": "greeting=hello from the persona vm host\nworkers=3\n",
    },
    state_files={"/var/lib/demo/state.txt": "orders=42\nlast=2026-11-28\n"},
    service_cmd="httpd -f -p 10.78.0.2:8080 -h /srv/www -c /etc/demo/httpd.conf",
    cgroup="demo",
    cgroup_limits={"cpu.max": "20000 100000", "memory.max": "67108864", "pids.max": "32"},
)


def module_names(spec: VmHostSpec) -> list[str]:
    return [m.name for m in spec.modules]


def insmod_line(path: str, params: Mapping[str, str]) -> str:
    """``insmod PATH k=v ...`` (values single-quoted for the guest shell)."""
    args = " ".join(f"'{k}={v}'" for k, v in params.items())
    return f"insmod {path} {args}".rstrip()


def start_in_cgroup(cgroup: str, limits: Mapping[str, str], cmd: str) -> str:
    """Shell text: create the cgroup v2 group with ``limits``, start ``cmd`` inside it."""
    lines = ["echo '+cpu +memory +pids' > /sys/fs/cgroup/cgroup.subtree_control",
             f"mkdir -p /sys/fs/cgroup/{cgroup}"]
    lines += [f"echo '{v}' > /sys/fs/cgroup/{cgroup}/{k}" for k, v in limits.items()]
    lines.append(f"sh -c 'echo $$ > /sys/fs/cgroup/{cgroup}/cgroup.procs; exec setsid {cmd}' "
                 "</dev/null >/dev/null 2>&1 &")
    return "\n".join(lines)


def setup_original(g: Guest, spec: VmHostSpec, module_paths: Mapping[str, str]) -> None:
    """Give a freshly booted guest the VM host's state (the 'life' the persona captures)."""
    script = ["set -e"]
    for m in spec.modules:
        script.append(insmod_line(module_paths[m.name], m.params))
    script += [f"ip addr add {spec.address} dev dummy0", "ip link set dummy0 up"]
    script += [f"ip route add {dst} via {gw} dev dummy0" for dst, gw in spec.routes]
    script += [f"sysctl -w {k}={v}" for k, v in spec.sysctls.items()]
    for path, text in {**spec.config_files, **spec.state_files}.items():
        d = path.rsplit("/", 1)[0]
        script.append(f"mkdir -p {d} && printf '%s' '{text}' > {path}")
    script += ["mkdir -p /srv/www",
               "sed -n 's/^greeting=//p' /etc/demo/app.conf > /srv/www/index.html",
               "rm -f /etc/group",  # a deletion for the filesystem diff
               start_in_cgroup(spec.cgroup, spec.cgroup_limits, spec.service_cmd),
               "sleep 0.3", f"wget -q -O /dev/null http://{spec.address.split('/')[0]}:8080/"]
    g.run("\n".join(script), timeout=60).check("setting up the VM host")

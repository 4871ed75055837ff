"""The VM lab's network: one project bridge on 10.78.0.0/24 and one tap device per guest.

The host side of the bridge is ``10.78.0.1``; a guest's NIC (virtio-net on its tap) only works
once the guest has loaded ``virtio_net`` (the VM host loads it as part of its persona, and the
replacement gets it in captured order) and configured the captured address. Nothing is routed:
two FORWARD rules drop anything entering or leaving the bridge towards another interface, so
the guests reach the host's bridge address and nothing else. Everything :class:`VmNetwork`
creates (bridge, taps, rules) it records and removes again on :meth:`VmNetwork.close`; it never
touches an interface or rule it did not create, and it refuses to start when the subnet is
already in use on this machine (a leftover or a second VM lab).
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass, field
from types import TracebackType

from persona.errors import VmError

SUBNET = ipaddress.IPv4Network("10.78.0.0/24")
HOST_ADDRESS = "10.78.0.1"
BRIDGE = "pvmbr0"
TAP_PREFIX = "pvmtap"
# rules that keep the guests on the bridge (iptables -I/-D FORWARD <rule>)
FORWARD_RULES = (("-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"),
                 ("-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP"))


def _ip(*args: str, what: str) -> str:
    try:
        r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VmError(f"{what}: {e}") from e
    if r.returncode != 0:
        raise VmError(f"{what} failed: ip {' '.join(args)}: {r.stderr.strip()[-300:]}")
    return r.stdout


def _iptables(*args: str, what: str) -> None:
    try:
        r = subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VmError(f"{what}: {e}; iptables is needed to keep the VM bridge unrouted") from e
    if r.returncode != 0:
        raise VmError(f"{what} failed: iptables {' '.join(args)}: {r.stderr.strip()[-300:]}")


def users_of_subnet(ip_o_addr: str, subnet: ipaddress.IPv4Network = SUBNET) -> list[str]:
    """``ip -o -4 addr`` text -> ["iface addr/prefix", ...] inside ``subnet`` (pure)."""
    out = []
    for line in ip_o_addr.splitlines():
        f = line.split()
        if len(f) >= 4 and f[2] == "inet":
            iface = ipaddress.ip_interface(f[3])
            if iface.network.overlaps(subnet):
                out.append(f"{f[1]} {f[3]}")
    return out


def tap_name(index: int) -> str:
    return f"{TAP_PREFIX}{index}"


def guest_mac(index: int) -> str:
    """A locally administered MAC per tap (QEMU's 52:54:00 prefix, the subnet's 78)."""
    return f"52:54:00:78:00:{index:02x}"


@dataclass
class VmNetwork:
    """Create with :meth:`up`; :meth:`tap` adds a tap per guest; :meth:`close` removes it all."""

    taps: list[str] = field(default_factory=list)
    bridge_created: bool = False
    rules: list[tuple[str, ...]] = field(default_factory=list)
    _next: int = 0

    @classmethod
    def up(cls) -> VmNetwork:
        used = users_of_subnet(_ip("-o", "-4", "addr", "show", what="listing addresses"))
        if used:
            raise VmError(
                f"{SUBNET} (the VM lab's subnet) is already in use here: {', '.join(used)}; "
                f"another VM lab is running or one was left behind (remove it: ip link del "
                f"{BRIDGE}, and its {TAP_PREFIX}N taps)")
        net = cls()
        try:
            _ip("link", "add", BRIDGE, "type", "bridge", what=f"creating bridge {BRIDGE}")
            net.bridge_created = True
            _ip("addr", "add", f"{HOST_ADDRESS}/{SUBNET.prefixlen}", "dev", BRIDGE,
                what=f"addressing {BRIDGE}")
            _ip("link", "set", BRIDGE, "up", what=f"bringing {BRIDGE} up")
            for rule in FORWARD_RULES:
                _iptables("-I", "FORWARD", *rule, what="adding the bridge's FORWARD rule")
                net.rules.append(rule)
        except BaseException:
            net.close()
            raise
        return net

    def tap(self) -> tuple[str, str]:
        """A new tap on the bridge: (tap name, the MAC its guest's NIC gets)."""
        i = self._next
        self._next += 1
        name = tap_name(i)
        _ip("tuntap", "add", "dev", name, "mode", "tap", what=f"creating tap {name}")
        self.taps.append(name)
        _ip("link", "set", name, "master", BRIDGE, "up", what=f"attaching {name} to {BRIDGE}")
        return name, guest_mac(i)

    def remove_tap(self, name: str) -> None:
        if name in self.taps:
            _ip("link", "del", name, what=f"removing tap {name}")
            self.taps.remove(name)

    def close(self) -> list[str]:
        """Remove every tap, rule and the bridge this object created; returns problems."""
        problems = []
        for t in list(self.taps):
            try:
                self.remove_tap(t)
            except VmError as e:
                problems.append(str(e))
        for rule in list(self.rules):
            try:
                _iptables("-D", "FORWARD", *rule, what="removing the bridge's FORWARD rule")
                self.rules.remove(rule)
            except VmError as e:
                problems.append(str(e))
        if self.bridge_created:
            try:
                _ip("link", "del", BRIDGE, what=f"removing bridge {BRIDGE}")
                self.bridge_created = False
            except VmError as e:
                problems.append(str(e))
        return problems

    def __enter__(self) -> VmNetwork:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def leftovers() -> list[str]:
    """Interfaces of a VM lab on this machine (the bridge and taps), for tests' teardown."""
    out = _ip("-o", "link", "show", what="listing links")
    names = [ln.split(":")[1].strip().split("@")[0] for ln in out.splitlines() if ":" in ln]
    return [n for n in names if n == BRIDGE or n.startswith(TAP_PREFIX)]


def forward_rules_present() -> list[str]:
    """Our FORWARD rules still in the table (iptables -S FORWARD), for tests' teardown."""
    r = subprocess.run(["iptables", "-w", "5", "-S", "FORWARD"], capture_output=True, text=True,
                       timeout=20)
    return [ln for ln in r.stdout.splitlines() if BRIDGE in ln]

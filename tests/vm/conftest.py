"""Live VM fixtures: prerequisites checked (and installed where the project can: QEMU, gcc, the
image), and nothing left behind (guests, taps, bridge, FORWARD rules, temp folders)."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from persona.errors import VmError
from persona.vm import host, image, net


def _fail(msg: str) -> None:
    pytest.fail(f"VM lab missing: {msg}\n  fix: as root, .venv/bin/persona vm build "
                "(installs qemu-system-x86 and gcc, downloads Debian's cloud kernel, builds the "
                "image)", pytrace=False)


@pytest.fixture(scope="session")
def vm_image() -> image.Image:
    if os.geteuid() != 0:
        _fail("the VM live tests need root (apt-get, taps, /var/cache/persona/vm)")
    if not os.path.exists("/dev/net/tun"):
        _fail("/dev/net/tun is missing: the guests' NICs are tap devices")
    if shutil.which("iptables") is None:
        _fail("iptables is missing (apt-get install iptables): it keeps the VM bridge unrouted")
    try:
        image.ensure_qemu()
        return image.build_image(host.module_names(host.VM_HOST))
    except VmError as e:
        _fail(str(e))
        raise


def _guest_dirs() -> set[str]:
    return set(glob.glob("/tmp/persona-vm-*"))


@pytest.fixture
def clean_vm_lab(vm_image: image.Image) -> Iterator[None]:
    """Requires a free VM subnet before, and asserts nothing of the VM lab is left after."""
    used = net.users_of_subnet(net._ip("-o", "-4", "addr", "show", what="listing addresses"))
    if used:
        _fail(f"{net.SUBNET} is in use here ({', '.join(used)}): a leftover or another VM lab")
    before = _guest_dirs()
    yield
    assert net.leftovers() == [], "bridge or taps left behind"
    assert net.forward_rules_present() == [], "FORWARD rules left behind"
    assert _guest_dirs() - before == set(), "guest temp folders left behind"
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            assert not (cmd and cmd[0].endswith(b"qemu-system-x86_64")
                        and any(b"persona-vm-" in c for c in cmd)), f"QEMU {pid} still running"

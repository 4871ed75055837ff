"""Pure image-building helpers: .modinfo parsing, dependency closure, newc cpio."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from persona.errors import VmError
from persona.vm import image


def tiny_ko(modinfo: bytes) -> bytes:
    """An ELF64 relocatable with sections: null, .shstrtab, .modinfo."""
    shstr = b"\0.shstrtab\0.modinfo\0"
    body_off = 64
    shstr_off, mi_off = body_off, body_off + len(shstr)
    shoff = mi_off + len(modinfo)
    shoff += -shoff % 8
    hdr = bytearray(64)
    hdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", hdr, 0x28, shoff)
    struct.pack_into("<HHH", hdr, 0x3A, 64, 3, 1)
    data = bytes(hdr) + shstr + modinfo
    data += b"\0" * (shoff - len(data))

    def sh(name: int, off: int, size: int) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, 3, 0, 0, off, size, 0, 0, 1, 0)
    return data + sh(0, 0, 0) + sh(1, shstr_off, len(shstr)) + sh(11, mi_off, len(modinfo))


def test_modinfo_reads_depends_and_name() -> None:
    ko = tiny_ko(b"license=GPL\0depends=nf_defrag_ipv4,libcrc32c\0name=nf_conntrack\0")
    info = image.modinfo(ko)
    assert info["depends"] == "nf_defrag_ipv4,libcrc32c" and info["name"] == "nf_conntrack"
    with pytest.raises(VmError, match="ELF64"):
        image.modinfo(b"not an elf")
    assert image.module_name("dm-mod.ko.xz") == "dm_mod"


def test_closure_puts_dependencies_first_and_names_missing_ones() -> None:
    deps = {"nf_conntrack": ("nf_defrag_ipv4", "libcrc32c"), "nf_defrag_ipv4": (),
            "libcrc32c": (), "loop": ()}
    order = image.module_closure(["loop", "nf_conntrack"], deps)
    assert order == ["loop", "nf_defrag_ipv4", "libcrc32c", "nf_conntrack"]
    with pytest.raises(VmError, match=r"'ghost' is not shipped.*needed by loop"):
        image.module_closure(["loop"], {"loop": ("ghost",)})
    with pytest.raises(VmError, match="cycle"):
        image.module_closure(["a"], {"a": ("b",), "b": ("a",)})


@pytest.mark.skipif(shutil.which("cpio") is None and shutil.which("busybox") is None,
                    reason="needs cpio or busybox to read the archive back")
def test_cpio_newc_round_trips_through_cpio(tmp_path: Path) -> None:
    arc = image.cpio_newc([image.CpioEntry("etc", 0o040755),
                           image.CpioEntry("etc/a.txt", 0o100644, b"hello\n"),
                           image.CpioEntry("init", 0o100755, b"#!/bin/sh\n")])
    tool = ["cpio"] if shutil.which("cpio") else ["busybox", "cpio"]
    subprocess.run([*tool, "-i", "-d"], input=arc, cwd=tmp_path, check=True,
                   capture_output=True)
    assert (tmp_path / "etc" / "a.txt").read_bytes() == b"hello\n"
    assert (tmp_path / "init").stat().st_mode & 0o777 == 0o755
    assert len(gzip.compress(arc)) > 0 and len(arc) % 4 == 0


def test_recipe_hash_changes_with_any_part() -> None:
    a = image.recipe_hash({"kernel": "k1", "modules": "loop"})
    assert a == image.recipe_hash({"modules": "loop", "kernel": "k1"})
    assert a != image.recipe_hash({"kernel": "k1", "modules": "loop,brd"})

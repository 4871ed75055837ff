"""Build the VM image from Debian packages: the cloud kernel + a busybox initramfs.

Nothing prebuilt is downloaded: ``apt-get download`` fetches Debian's ``linux-image-*-cloud-amd64``
and ``busybox-static`` packages, ``dpkg -x`` unpacks them into a cache folder (never into the
host's ``/`` or ``/boot``), and the initramfs is written here by a small ``newc`` cpio writer:
busybox, the guest's ``/init`` and agent, and only the kernel modules the VM host uses plus
their dependency closure (read from each ``.ko``'s ``.modinfo`` section). The result is cached
under ``/var/cache/persona/vm/images/<recipe hash>/`` so a second build is a lookup.

Pure parts (``modinfo``, ``module_closure``, ``cpio_newc``, ``recipe_hash``) are unit-tested.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from persona.errors import VmError
from persona.vm import guest

CACHE = Path(os.environ.get("PERSONA_VM_CACHE", "/var/cache/persona/vm"))
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX_PKG = "busybox-static"
BUILDER_VERSION = "4"
SERVICE_SRC = Path(__file__).with_name("service.c")  # the VM host's service (vmkv)
SERVICE_PATH = "bin/vmkv"  # where the image carries it


# ---------------------------------------------------------------- pure helpers
def modinfo(ko: bytes) -> dict[str, str]:
    """The ``.modinfo`` section of an ELF64 kernel module as a dict (``name``, ``depends``...)."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise VmError("not an ELF64 kernel module")
    endian = "<" if ko[5] == 1 else ">"
    shoff, = struct.unpack_from(endian + "Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", ko, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _t, _f, _a, off, size = struct.unpack_from(endian + "IIQQQQ", ko, shoff + i * shentsize)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = ko.index(b"\0", stroff + name)
        if ko[stroff + name:end] == b".modinfo":
            out: dict[str, str] = {}
            for entry in ko[off:off + size].split(b"\0"):
                if b"=" in entry:
                    k, v = entry.decode("utf-8", "replace").split("=", 1)
                    out.setdefault(k, v)
            return out
    raise VmError("kernel module has no .modinfo section")


def module_name(filename: str) -> str:
    """``nf_conntrack.ko`` / ``dm-mod.ko.xz`` -> the kernel's name (dashes become underscores)."""
    return filename.split(".ko")[0].replace("-", "_")


def module_closure(wanted: Iterable[str], depends: Mapping[str, tuple[str, ...]]) -> list[str]:
    """``wanted`` plus everything they depend on, dependencies first (a valid insmod order)."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(m: str, path: tuple[str, ...]) -> None:
        if state.get(m) == 2:
            return
        if state.get(m) == 1:
            raise VmError(f"module dependency cycle: {' -> '.join((*path, m))}")
        if m not in depends:
            raise VmError(f"kernel module {m!r} is not shipped by this kernel package"
                          + (f" (needed by {path[-1]})" if path else ""))
        state[m] = 1
        for d in depends[m]:
            visit(d, (*path, m))
        state[m] = 2
        order.append(m)

    for w in wanted:
        visit(w, ())
    return order


@dataclass(frozen=True)
class CpioEntry:
    path: str  # without leading '/'
    mode: int  # full st_mode (type bits included)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def cpio_newc(entries: Iterable[CpioEntry]) -> bytes:
    """An uncompressed ``newc`` cpio archive (what the kernel unpacks as initramfs), uid/gid 0,
    mtime 0 (reproducible)."""
    buf = io.BytesIO()

    def pad() -> None:
        buf.write(b"\0" * (-buf.tell() % 4))

    def one(ino: int, path: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        name = path.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name), 0)
        buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        buf.write(name)
        pad()
        buf.write(data)
        pad()

    for i, e in enumerate(entries, 1):
        one(i, e.path.lstrip("/"), e.mode, e.data, e.rdev)
    one(0, "TRAILER!!!", 0, b"", (0, 0))
    return buf.getvalue()


def recipe_hash(parts: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(parts):
        h.update(f"{k}={parts[k]}\n".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- side effects
@dataclass(frozen=True)
class Image:
    """A built image: kernel, initramfs and what is in it."""

    dir: Path
    kernel: Path
    initrd: Path
    kernel_release: str
    kernel_package: str
    modules: Mapping[str, str]  # name -> path inside the guest
    depends: Mapping[str, tuple[str, ...]]
    criu: str  # CRIU version in the guest, "" when none
    build_s: float
    cached: bool


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VmError(f"{what}: {e}") from e
    if r.returncode != 0:
        raise VmError(f"{what} failed (exit {r.returncode}): {r.stderr.strip()[-600:]}")
    return r.stdout


def ensure_qemu(install: bool = True) -> str:
    """The path of qemu-system-x86_64; installs Debian's ``qemu-system-x86`` (no recommends)
    when missing and we are root. Raises VmError with the fixing command otherwise."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu:
        return qemu
    fix = "apt-get install --no-install-recommends qemu-system-x86"
    if not install or os.geteuid() != 0:
        raise VmError(f"qemu-system-x86_64 is missing; run as root: {fix}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-system-x86"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:  # stale package lists on a fresh machine: update once, retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    qemu = shutil.which("qemu-system-x86_64")
    if r.returncode != 0 or not qemu:
        raise VmError(f"installing qemu-system-x86 failed: {r.stderr.strip()[-400:]}; try: {fix}")
    return qemu


def ensure_compiler(install: bool = True) -> str:
    """The path of gcc able to link statically (Debian's ``gcc`` + ``libc6-dev``); installs them
    when missing and we are root. Raises VmError with the fixing command otherwise."""
    fix = "apt-get install --no-install-recommends gcc libc6-dev"
    gcc = shutil.which("gcc")
    if gcc and Path("/usr/lib/x86_64-linux-gnu/libc.a").exists():
        return gcc
    if not install or os.geteuid() != 0:
        raise VmError(f"gcc with a static libc is missing; run as root: {fix}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "gcc", "libc6-dev"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:  # stale package lists on a fresh machine: update once, retry
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    gcc = shutil.which("gcc")
    if r.returncode != 0 or not gcc:
        raise VmError(f"installing gcc failed: {r.stderr.strip()[-400:]}; try: {fix}")
    return gcc


def build_service(cache: Path = CACHE) -> tuple[str, bytes]:
    """(recipe id, static binary) of the VM host's service, compiled from ``service.c`` with
    Debian's gcc and cached under ``cache/service/<hash>/vmkv`` (the guest has no libc)."""
    src = SERVICE_SRC.read_bytes()
    gcc = ensure_compiler()
    version = _run([gcc, "-dumpfullversion"], "gcc -dumpfullversion").strip()
    key = hashlib.sha256(src + version.encode()).hexdigest()[:16]
    out = cache / "service" / key / "vmkv"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".vmkv.tmp")
        _run([gcc, "-static", "-O2", "-Wall", "-o", str(tmp), str(SERVICE_SRC)],
             "compiling the VM host's service (persona/vm/service.c)")
        tmp.rename(out)
    return f"{key} gcc {version}", out.read_bytes()


def resolve_kernel_package() -> str:
    """The versioned package the cloud-kernel metapackage points at (apt's candidate)."""
    out = _run(["apt-cache", "depends", "--important", KERNEL_META], "apt-cache depends")
    for line in out.splitlines():
        f = line.split()
        if len(f) == 2 and f[0] == "Depends:" and f[1].startswith("linux-image-"):
            return f[1]
    raise VmError(f"apt knows no {KERNEL_META}; run `apt-get update` (Debian sources needed)")


def _kernel_package_or_cached(cache: Path) -> str:
    """apt's current cloud kernel; if apt cannot say (no lists, offline), the newest one
    already in the cache."""
    try:
        return resolve_kernel_package()
    except VmError:
        have = sorted((cache / "debs").glob("linux-image-*-cloud-amd64_*.deb"))
        if not have:
            raise
        return have[-1].name.split("_")[0]


def fetch_package(pkg: str, cache: Path = CACHE) -> Path:
    """``apt-get download`` into ``cache/debs`` once; ``dpkg -x`` into ``cache/pkgs/<pkg>``."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{pkg}_*.deb"))
    if not have:
        _run(["apt-get", "download", "-q", pkg], f"apt-get download {pkg}", cwd=debs)
        have = sorted(debs.glob(f"{pkg}_*.deb"))
        if not have:
            raise VmError(f"apt-get download {pkg} left no .deb in {debs}")
    deb = have[-1]
    dest = cache / "pkgs" / deb.stem
    if not (dest / ".unpacked").exists():
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache))
        try:
            _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}")
            (tmp / ".unpacked").write_text(deb.name + "\n")
            if dest.exists():
                shutil.rmtree(dest)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return dest


def _module_index(tree: Path) -> tuple[str, dict[str, Path]]:
    mdir = tree / "lib" / "modules"
    releases = [p for p in mdir.iterdir() if p.is_dir()] if mdir.is_dir() else []
    if len(releases) != 1:
        raise VmError(f"expected one kernel release under {mdir}, found {len(releases)}")
    rel = releases[0]
    return rel.name, {module_name(p.name): p for p in rel.rglob("*.ko*")}


CRIU_PREFIX = Path("/opt/persona-criu")  # the lab's CRIU 4.2 + its glibc (scripts/lab-install.sh)


def parse_ld_list(text: str) -> list[str]:
    """``ld.so --list`` output -> absolute paths of the libraries it resolved."""
    out = []
    for line in text.splitlines():
        f = line.split()
        if "=>" in f and len(f) > f.index("=>") + 1 and f[f.index("=>") + 1].startswith("/"):
            out.append(f[f.index("=>") + 1])
    return out


def criu_files(prefix: Path = CRIU_PREFIX) -> tuple[str, dict[str, bytes]]:
    """(version, {path in guest: bytes}) of the lab's CRIU with its loader and libraries, or
    ("", {}) when the lab has not installed it (the guest then has no CRIU: cold starts)."""
    lib = prefix / "usr/lib/x86_64-linux-gnu"
    loader, binary = lib / "ld-linux-x86-64.so.2", prefix / "usr/sbin/criu"
    if not (loader.exists() and binary.exists()):
        return "", {}
    libpath = f"{lib}:{prefix / 'lib/x86_64-linux-gnu'}"
    try:
        listed = _run([str(loader), "--library-path", libpath, "--list", str(binary)], "criu libs")
        version = _run([str(loader), "--library-path", libpath, str(binary), "--version"],
                       "criu --version").split()[1]
    except (VmError, IndexError):
        return "", {}
    files = {str(p).lstrip("/"): Path(p).read_bytes()
             for p in {*parse_ld_list(listed), str(loader), str(binary)}}
    files["bin/criu"] = (f"#!/bin/sh\nexec {loader} --library-path {libpath} {binary} "
                         '"$@"\n').encode()
    return version, files


def build_image(modules: Iterable[str], cache: Path = CACHE, kernel_package: str | None = None,
                with_criu: bool = True) -> Image:
    """Build (or find in the cache) an image whose initramfs holds ``modules`` + dependencies
    (and the lab's CRIU, when installed and ``with_criu``)."""
    t0 = time.monotonic()
    wanted = sorted(set(modules))
    kpkg = kernel_package or _kernel_package_or_cached(cache)
    ktree = fetch_package(kpkg, cache)
    btree = fetch_package(BUSYBOX_PKG, cache)
    criu_version, criu = criu_files() if with_criu else ("", {})
    service_id, service = build_service(cache)
    parts = {"service": service_id, "kernel": (ktree / ".unpacked").read_text().strip(),
             "busybox": (btree / ".unpacked").read_text().strip(),
             "modules": ",".join(wanted), "init": guest.INIT, "agent": guest.AGENT,
             "builder": BUILDER_VERSION, "criu": criu_version or "none"}
    out = cache / "images" / recipe_hash(parts)
    meta = out / "image.json"
    if meta.exists():
        return _load(out, time.monotonic() - t0, cached=True)
    release, index = _module_index(ktree)
    depends: dict[str, tuple[str, ...]] = {}
    todo = list(wanted)
    while todo:
        m = todo.pop()
        if m in depends:
            continue
        if m not in index:
            raise VmError(f"kernel module {m!r} is not in {kpkg} (release {release})")
        info = modinfo(index[m].read_bytes())
        depends[m] = tuple(d for d in info.get("depends", "").split(",") if d)
        todo.extend(depends[m])
    order = module_closure(wanted, depends)
    busybox = btree / "bin" / "busybox"
    if not busybox.exists():
        raise VmError(f"{BUSYBOX_PKG} has no bin/busybox under {btree}")
    dirs = ["bin", "sbin", "dev", "etc", "etc/persona", "proc", "sys", "tmp", "run", "root",
            "var", "srv", f"lib/modules/{release}"]
    files: dict[str, tuple[int, bytes]] = {
        "init": (0o100755, guest.INIT.encode()),
        "bin/busybox": (0o100755, busybox.read_bytes()),
        "etc/persona/agent.sh": (0o100755, guest.AGENT.encode()),
        SERVICE_PATH: (0o100755, service),
        "etc/passwd": (0o100644, b"root:x:0:0:root:/root:/bin/sh\n"),
        "etc/group": (0o100644, b"root:x:0:\n"),
    }
    for path, data in criu.items():
        files[path] = (0o100755, data)
        parts_of = Path(path).parts
        for i in range(1, len(parts_of)):
            d = str(Path(*parts_of[:i]))
            if d not in dirs:
                dirs.append(d)
    paths: dict[str, str] = {}
    for m in order:
        rel = index[m].relative_to(ktree)
        paths[m] = "/" + str(rel)
        for i in range(1, len(rel.parts)):
            d = str(Path(*rel.parts[:i]))
            if d not in dirs:
                dirs.append(d)
        files[str(rel)] = (0o100644, index[m].read_bytes())
    baseline = "".join(f"{hashlib.sha256(data).hexdigest()}  /{p}\n"
                       for p, (_, data) in sorted(files.items()))
    files[guest.BASELINE.lstrip("/")] = (0o100644, baseline.encode())
    entries = [CpioEntry(d, 0o040755) for d in sorted(set(dirs))]
    entries.append(CpioEntry("dev/console", 0o020600, rdev=(5, 1)))
    entries += [CpioEntry(p, mode, data) for p, (mode, data) in sorted(files.items())]
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        (tmp / "initrd.img").write_bytes(gzip.compress(cpio_newc(entries), compresslevel=6,
                                                       mtime=0))
        kernels = sorted((ktree / "boot").glob("vmlinuz-*"))
        if not kernels:
            raise VmError(f"{kpkg} has no boot/vmlinuz-*")
        try:  # the kernel stays in the package tree: a hard link costs no space
            os.link(kernels[0], tmp / "vmlinuz")
        except OSError:
            shutil.copy2(kernels[0], tmp / "vmlinuz")
        (tmp / "image.json").write_text(json.dumps({
            "kernel_release": release, "kernel_package": parts["kernel"],
            "busybox_package": parts["busybox"], "modules": paths, "criu": criu_version,
            "depends": {m: list(depends[m]) for m in order},
            "initrd_bytes": (tmp / "initrd.img").stat().st_size,
            "kernel_bytes": (tmp / "vmlinuz").stat().st_size,
            "build_s": round(time.monotonic() - t0, 2), "recipe": parts | {"init": "...",
                                                                          "agent": "..."},
        }, indent=2) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp.rename(out)
        except OSError:  # another process published the same recipe first: use theirs
            if not (out / "image.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    prune_images(cache / "images", keep=out)
    return _load(out, time.monotonic() - t0, cached=False)


def prune_images(images: Path, keep: Path, n: int = 3) -> list[Path]:
    """Remove all but the ``n`` newest images (``keep`` always stays). Returns what went."""
    dirs = sorted((d for d in images.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    gone = [d for d in dirs[n:] if d != keep]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone


def _load(out: Path, build_s: float, cached: bool) -> Image:
    meta = json.loads((out / "image.json").read_text())
    return Image(dir=out, kernel=out / "vmlinuz", initrd=out / "initrd.img",
                 kernel_release=meta["kernel_release"], kernel_package=meta["kernel_package"],
                 modules=dict(meta["modules"]),
                 depends={k: tuple(v) for k, v in meta["depends"].items()},
                 criu=str(meta.get("criu", "")),
                 build_s=build_s, cached=cached)

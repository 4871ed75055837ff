"""Build the lab's images locally (no registry): a busybox pause image, a debootstrap base
(python3 + redis) and the demo app on top. Built images and the base rootfs are cached."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from persona.errors import LabError
from persona.lab import spec


def debian_mirror(sources: Path = Path("/etc/apt/sources.list.d/debian.sources"),
                  legacy: Path = Path("/etc/apt/sources.list")) -> str:
    """The Debian mirror this machine already uses (never a hard-coded host)."""
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                return next(p for p in parts[1:] if "://" in p)
    raise LabError(f"no Debian mirror configured in {sources} or {legacy}; add one and rerun")


def has_image(client: Any, ref: str) -> bool:
    try:
        client.inspect_image(ref)
        return True
    except Exception:
        return False


def build_pause(client: Any, busybox: Path = Path("/bin/busybox")) -> str:
    if has_image(client, spec.PAUSE_IMAGE):
        return spec.PAUSE_IMAGE
    if not busybox.exists():
        raise LabError(f"{busybox} missing: apt-get install busybox-static")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat", "ls"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
    repo, tag = spec.PAUSE_IMAGE.split(":")
    client.import_image_from_data(buf.getvalue(), repository=repo, tag=tag)
    return spec.PAUSE_IMAGE


def base_rootfs_tar(cache: Path = spec.CACHE_DIR) -> Path:
    """debootstrap minbase rootfs as a tar, cached by recipe."""
    tar_path = cache / (spec.base_tag().split(":")[1] + ".rootfs.tar")
    if tar_path.exists():
        return tar_path
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap missing: apt-get install debootstrap (or: persona lab up)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        root = Path(tmp) / "root"
        cmd = ["debootstrap", "--variant=minbase", "--include=" + ",".join(spec.DEBIAN_INCLUDE),
               spec.DEBIAN_SUITE, str(root), debian_mirror()]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise LabError(f"debootstrap failed ({' '.join(cmd)}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        part = tar_path.with_suffix(".part")
        subprocess.run(["tar", "-C", str(root), "-cf", str(part), "."], check=True)
        os.replace(part, tar_path)
    return tar_path


def build_base(client: Any) -> str:
    tag = spec.base_tag()
    if has_image(client, tag):
        return tag
    tar_path = base_rootfs_tar()
    repo, t = tag.split(":")
    client.import_image_from_file(str(tar_path), repository=repo, tag=t)
    return tag


def build_demo(client: Any) -> str:
    tag = spec.demo_tag()
    if has_image(client, tag):
        return tag
    base = build_base(client)
    try:
        for _ in client.build(path=str(spec.APP_DIR), tag=tag, buildargs={"BASE": base},
                              rm=True, forcerm=True, decode=True):
            pass
    except Exception as e:
        raise LabError(f"building {tag} failed: {e}") from e
    if not has_image(client, tag):
        raise LabError(f"building {tag} produced no image; run: docker build --build-arg BASE={base} {spec.APP_DIR}")
    return tag


def build_all(client: Any) -> list[str]:
    return [build_pause(client), build_base(client), build_demo(client)]

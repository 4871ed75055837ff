"""Fixtures for the store tests: backends of every kind, a real moto S3 server on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from persona.store.backend import Backend
from persona.store.local import LocalBackend
from persona.store.memory import MemoryBackend
from persona.store.synth import ImageModel, make_image, next_version
from persona.store.wrappers import LockingBackend, LoggingBackend, RetryBackend

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real moto S3 server process on 127.0.0.1 (stopped in teardown)."""
    port = _free_port()
    env = {**os.environ, **S3_ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("moto server did not start (is moto[server] installed?)")
            time.sleep(0.1)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def s3_url(moto_endpoint: str, s3_env: None) -> str:
    return f"s3://b-{uuid.uuid4().hex[:12]}/persona?endpoint={moto_endpoint}"


def _s3_backend(endpoint: str) -> Backend:
    from persona.store.s3 import S3Backend

    b = S3Backend(f"conf-{uuid.uuid4().hex[:12]}", "pfx", endpoint=endpoint)
    b.create_bucket()
    return b


@pytest.fixture(params=["local", "memory", "s3", "wrapped-local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind = request.param
    b: Backend
    if kind == "local":
        b = LocalBackend(tmp_path / "blobs")
    elif kind == "memory":
        b = MemoryBackend()
    elif kind == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        request.getfixturevalue("s3_env")
        b = _s3_backend(endpoint)
    else:
        b = RetryBackend(LoggingBackend(LockingBackend(LocalBackend(tmp_path / "w"), 2)))
    yield b
    b.close()


@pytest.fixture(params=["local", "memory", "s3"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    if request.param == "memory":
        return f"memory://{uuid.uuid4().hex}"
    return str(request.getfixturevalue("s3_url"))


def write_image_dir(
    d: Path, img_pages: bytes, pagemap: bytes, extra: dict[str, bytes] | None = None
) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "pages-1.img").write_bytes(img_pages)
    (d / "pagemap-1.img").write_bytes(pagemap)
    for name, data in (extra or {}).items():
        p = d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return d


@pytest.fixture
def image_versions(tmp_path: Path) -> list[Path]:
    """Three small (4 MiB) page-image versions, 1 % / 5 % pages dirtied, plus a tar-like file."""
    rng = np.random.default_rng(7)
    img = make_image(ImageModel(npages=1024, vmas=6, seed=3))
    tar = rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    out = []
    for i, frac in enumerate([0.0, 0.01, 0.05]):
        if frac:
            img = next_version(img, frac, rng)
            tar = tar[:1000] + rng.integers(0, 256, 500, dtype=np.uint8).tobytes() + tar[1500:]
        d = write_image_dir(
            tmp_path / f"v{i}",
            img.pages_bytes(),
            img.pagemap_bytes(),
            {"fs/rootfs-diff.tar": tar, "fs/empty": b""},
        )
        (d / "fs" / "sub").mkdir(exist_ok=True)
        if not (d / "link").is_symlink():
            (d / "link").symlink_to("fs/rootfs-diff.tar")
        out.append(d)
    return out


def tree_bytes(root: Path) -> dict[str, tuple[str, bytes | str, int]]:
    """Everything a restore must reproduce: type, content/target, permission bits."""
    out: dict[str, tuple[str, bytes | str, int]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = ("symlink", os.readlink(p), 0)
        elif p.is_dir():
            out[rel] = ("dir", b"", p.stat().st_mode & 0o7777)
        else:
            out[rel] = ("file", p.read_bytes(), p.stat().st_mode & 0o7777)
    return out

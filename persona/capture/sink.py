"""Where a capture's version goes. A version is staged in a hidden folder and published with
one rename, so a failed or interrupted capture never leaves a visible partial version."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Protocol

from persona.errors import CaptureError

DEFAULT_STORE = Path(os.environ.get("PERSONA_CAPTURE_STORE", "/var/lib/persona/captures"))


class VersionSink(Protocol):
    def begin(self, host: str) -> Path: ...
    def publish(self, host: str, staging: Path, version: str) -> str: ...
    def abort(self, staging: Path) -> None: ...
    def versions(self, host: str) -> list[str]: ...
    @property
    def url(self) -> str: ...


class FolderSink:
    """Plain folder store: <root>/<host>/<version>/ (the [store] package replaces it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def begin(self, host: str) -> Path:
        d = self.root / host / f".staging-{secrets.token_hex(6)}"
        try:
            d.mkdir(parents=True)
        except OSError as e:
            raise CaptureError(f"cannot create {d}: {e.strerror}; check --store") from e
        return d

    def publish(self, host: str, staging: Path, version: str) -> str:
        try:
            fd = os.open(staging, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
            os.rename(staging, self.root / host / version)
        except OSError as e:
            self.abort(staging)
            raise CaptureError(f"cannot publish version of {host}: {e.strerror}") from e
        return version

    def abort(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def versions(self, host: str) -> list[str]:
        d = self.root / host
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def new_version_id() -> str:
    """Sortable, unique: UTC time plus a random suffix."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def open_sink(url: str | None) -> VersionSink:
    if url is None:
        return FolderSink(DEFAULT_STORE)
    if url.startswith("file://"):
        return FolderSink(Path(url[len("file://"):]))
    if "://" in url:
        raise CaptureError(f"store URL {url!r}: capture writes to a folder (file:///path or a "
                           "plain path) until the [store] package's repository API lands")
    return FolderSink(Path(url).resolve())

"""Where a capture's version goes: one new version of the host in a persona store.

A capture is assembled in a private local temp folder (``PERSONA_CAPTURE_TMP``, default
``/var/tmp/persona-capture``; Docker writes the CRIU images there, so it must be a local
path the engine can reach) and then written with :func:`persona.store.put`. The store's
ordered writes (packs, index, snapshot, then the ref) make the version visible only when
everything it needs is durable, so a failed or interrupted capture never leaves a visible
partial version; the temp folder is removed in every path.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from persona.errors import CaptureError, StoreError

if TYPE_CHECKING:
    from persona.store.backend import Backend

DEFAULT_STORE = os.environ.get("PERSONA_STORE", "/var/lib/persona/store")
DEFAULT_TMP = Path(os.environ.get("PERSONA_CAPTURE_TMP", "/var/tmp/persona-capture"))


@dataclass(frozen=True)
class VersionInfo:
    """What the store records about a capture besides its files (queryable with
    ``persona store ls --meta KEY=VALUE`` / ``--tag``)."""

    time_ns: int
    tags: tuple[str, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)


class VersionSink(Protocol):
    def begin(self, host: str) -> Path: ...
    def publish(self, host: str, staging: Path, info: VersionInfo) -> str: ...
    def abort(self, staging: Path) -> None: ...
    def versions(self, host: str) -> list[str]: ...
    @property
    def url(self) -> str: ...


def new_capture_id() -> str:
    """Sortable, unique: UTC time plus a random suffix (recorded as meta ``capture_id``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


new_version_id = new_capture_id  # old name, kept for callers


class StoreSink:
    """Writes each capture as the next version of its host in a persona store (path or s3://)."""

    def __init__(self, url: str | Backend, tmp_root: Path | None = None) -> None:
        from persona.store import Repository
        from persona.store.backend import ObjectNotFound
        from persona.store.url import open_backend

        self._url = url if isinstance(url, str) else url.location
        self.tmp_root = tmp_root or DEFAULT_TMP
        try:
            backend = open_backend(url) if isinstance(url, str) else url
            try:
                backend.stat("config")
                exists = True
            except ObjectNotFound:
                exists = False
            if not exists:
                try:
                    self.repo = Repository.init(backend)
                except StoreError as e:  # a concurrent capture created it first
                    if "already exists" not in str(e):
                        raise
                    self.repo = Repository.open(backend)
            else:
                self.repo = Repository.open(backend)
        except StoreError as e:
            raise CaptureError(f"store {url}: {e}") from e

    @property
    def url(self) -> str:
        return self._url

    def begin(self, host: str) -> Path:
        try:
            self.tmp_root.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=f"{host}-", dir=self.tmp_root))
        except OSError as e:
            raise CaptureError(f"cannot create a temp folder under {self.tmp_root}: {e.strerror}; "
                               "set PERSONA_CAPTURE_TMP to a writable local folder") from e

    def publish(self, host: str, staging: Path, info: VersionInfo) -> str:
        from persona.store import PutOptions, put

        try:
            v = put(self.repo, staging, host,
                    PutOptions(tags=info.tags, meta=dict(info.meta), time_ns=info.time_ns))
        except StoreError as e:
            raise CaptureError(f"cannot write the version of {host} to {self.url}: {e}; "
                               "no version was added") from e
        finally:
            self.abort(staging)
        return str(v.version)

    def abort(self, staging: Path) -> None:
        shutil.rmtree(staging, ignore_errors=True)

    def versions(self, host: str) -> list[str]:
        return [str(v.version) for v in self.repo.list_versions(host)]


def open_sink(url: str | None, tmp_root: Path | None = None) -> StoreSink:
    """The store at ``url`` (a path, ``file://``, ``s3://bucket/prefix?endpoint=...``), created
    when the location is empty. Default: ``$PERSONA_STORE`` or ``/var/lib/persona/store``."""
    return StoreSink(url or DEFAULT_STORE, tmp_root)

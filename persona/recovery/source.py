"""Where recovery finds personas: the capture folder layout or a persona store repository.

``PersonaSource`` is the narrow protocol the workflow needs: list a host's versions (oldest
first), fetch one into a folder, and keep small per-host metadata (the adaptive record and the
validation baseline) next to them. Both implementations only *read* persona versions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from persona.errors import RestoreError, StoreError


class PersonaSource(Protocol):
    @property
    def url(self) -> str: ...
    def versions(self, host: str) -> list[str]: ...
    def fetch(self, host: str, version: str, dest: Path) -> Path: ...
    def read_meta(self, host: str, name: str) -> dict[str, Any] | None: ...
    def write_meta(self, host: str, name: str, data: dict[str, Any]) -> None: ...


class FolderSource:
    """``<root>/<host>/<version>/manifest.json`` (what ``persona capture --store DIR`` writes);
    metadata in ``<root>/<host>/.meta/<name>.json`` (hidden: never taken for a version)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def versions(self, host: str) -> list[str]:
        d = self.root / host
        if not d.is_dir():
            return []
        return sorted(
            p.name
            for p in d.iterdir()
            if not p.name.startswith(".") and (p / "manifest.json").exists()
        )

    def fetch(self, host: str, version: str, dest: Path) -> Path:
        src = self.root / host / version
        if not (src / "manifest.json").exists():
            raise RestoreError(
                f"no persona {host}/{version} in {self.root}; "
                f"known: {', '.join(self.versions(host)) or 'none'}"
            )
        out = dest / version
        try:
            shutil.copytree(src, out, symlinks=True)
        except OSError as e:
            raise RestoreError(f"cannot copy persona {host}/{version}: {e}") from e
        return out

    def _meta(self, host: str, name: str) -> Path:
        return self.root / host / ".meta" / f"{name}.json"

    def read_meta(self, host: str, name: str) -> dict[str, Any] | None:
        p = self._meta(host, name)
        return dict(json.loads(p.read_text())) if p.exists() else None

    def write_meta(self, host: str, name: str, data: dict[str, Any]) -> None:
        p = self._meta(host, name)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, p)


class StoreSource:
    """A persona store repository (``persona.store``): versions are the host's store versions
    (numbers); metadata are the latest version of the store host ``<host>.meta-<name>``."""

    def __init__(self, url: str) -> None:
        from persona.store import Repository

        self._url = url
        try:
            self.repo = Repository.open(url)
        except StoreError as e:
            raise RestoreError(f"cannot open persona store {url}: {e}") from e

    @property
    def url(self) -> str:
        return self._url

    def versions(self, host: str) -> list[str]:
        return [str(v.version) for v in self.repo.list_versions(host)]

    def fetch(self, host: str, version: str, dest: Path) -> Path:
        from persona.store import restore

        try:
            v = self.repo.resolve(host, version)
            out = dest / str(v.version)
            restore(self.repo, v, out)
        except StoreError as e:
            raise RestoreError(f"cannot retrieve {host} version {version}: {e}") from e
        if not (out / "manifest.json").exists():
            raise RestoreError(
                f"{host} version {version} in {self.url} has no manifest.json: "
                "not a persona capture"
            )
        return out

    def read_meta(self, host: str, name: str) -> dict[str, Any] | None:
        from persona.store import restore

        mh = f"{host}.meta-{name}"
        if not self.repo.list_versions(mh):
            return None
        with tempfile.TemporaryDirectory(prefix="persona-meta-") as d:
            restore(self.repo, self.repo.resolve(mh, "latest"), Path(d) / "m")
            return dict(json.loads((Path(d) / "m" / f"{name}.json").read_text()))

    def write_meta(self, host: str, name: str, data: dict[str, Any]) -> None:
        from persona.store import PutOptions, put

        with tempfile.TemporaryDirectory(prefix="persona-meta-") as d:
            f = Path(d) / f"{name}.json"
            f.write_text(json.dumps(data, indent=1, sort_keys=True))
            put(self.repo, [f], f"{host}.meta-{name}", PutOptions(tags=("meta",)))


def is_store(url: str) -> bool:
    if url.startswith(("s3://", "memory://")):
        return True
    p = Path(url[len("file://") :] if url.startswith("file://") else url)
    return (p / "config").is_file()


def open_source(url: str | None) -> PersonaSource:
    """A persona store (the default: where ``persona capture`` writes; s3://, memory:// or a
    folder holding a store ``config``), or a plain folder of capture versions
    (``<root>/<host>/<version>/manifest.json``)."""
    if url is None:
        from persona.capture.sink import DEFAULT_STORE

        url = DEFAULT_STORE
    if is_store(url):
        return StoreSource(url)
    path = Path(url[len("file://") :] if url.startswith("file://") else url)
    if "://" not in url or url.startswith("file://"):
        if path.is_dir():
            return FolderSource(path.resolve())
        raise RestoreError(
            f"no persona store at {url}: capture one first "
            f"(persona capture --host HOST --store {url})"
        )
    raise RestoreError(f"unknown store URL {url!r}: use a folder, file://, s3:// or memory://")

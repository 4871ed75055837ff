"""The backend contract: a dumb named-blob store.

A backend knows nothing about hashing, packing or encryption. It stores opaque bytes under
names such as ``data/ab/abcd...`` and gives them back. Every backend (local directory, S3,
memory) and every wrapper (retry, logging, locking) implements :class:`Backend`, and one
conformance suite (``tests/store/test_backend_conformance.py``) runs against all of them.

Contract:
- ``put`` is atomic: a reader sees either nothing or the whole blob, never a prefix.
  A put to an existing name replaces it (the repository only rewrites identical content).
- ``get`` raises :class:`ObjectNotFound` for a missing name; ``offset``/``length`` read a range.
- ``delete`` of a missing name is not an error (deletes are idempotent).
- ``list(prefix)`` yields :class:`BlobInfo` for every complete blob whose name starts with
  ``prefix``; temporary files of unfinished puts are never listed.
- names are validated by :func:`check_name`: relative, ``/``-separated, from ``[A-Za-z0-9._-]``,
  no empty, ``.`` or ``..`` segments. This keeps path traversal out of every backend.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from persona.errors import StoreError


class ObjectNotFound(StoreError):
    """A named blob does not exist in the backend."""

    def __init__(self, name: str, location: str = "") -> None:
        self.name = name
        where = f" in {location}" if location else ""
        super().__init__(f"object {name!r} not found{where}")


class TransientStoreError(StoreError):
    """A backend operation failed in a way that may succeed when retried (network, throttling)."""


@dataclass(frozen=True)
class BlobInfo:
    """What a backend knows about one stored blob."""

    name: str
    size: int
    mtime: float  # seconds since the epoch, as reported by the backend


_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe blob name, else raise :class:`StoreError`."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise StoreError(
            f"invalid object name {name!r}: use relative '/'-separated names of [A-Za-z0-9._-]"
        )
    if any(part in (".", "..") for part in name.split("/")):
        raise StoreError(f"invalid object name {name!r}: '.' and '..' segments are not allowed")
    return name


def check_prefix(prefix: str) -> str:
    """Validate a listing prefix: empty, or a valid name optionally ending in '/'."""
    if prefix == "":
        return prefix
    check_name(prefix.rstrip("/"))
    return prefix


@runtime_checkable
class Backend(Protocol):
    """A dumb named-blob store. See the module docstring for the contract."""

    @property
    def location(self) -> str:
        """A human-readable location (URL or path) for messages."""
        ...

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def stat(self, name: str) -> BlobInfo: ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]: ...

    def delete(self, name: str) -> None: ...

    def close(self) -> None: ...


def check_range(name: str, offset: int, length: int | None) -> None:
    if offset < 0 or (length is not None and length < 0):
        raise StoreError(f"invalid range for {name!r}: offset={offset} length={length}")

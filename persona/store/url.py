"""Store URLs -> backends.

Accepted forms:
- a filesystem path (``/var/lib/persona/store``, ``./store``) or ``file:///abs/path``
- ``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1``
- ``memory://name`` (process-local, for tests)
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from persona.errors import StoreError
from persona.store.backend import Backend
from persona.store.local import LocalBackend
from persona.store.memory import MemoryBackend
from persona.store.wrappers import LockingBackend, LoggingBackend, RetryBackend

SCHEMES = ("file", "s3", "memory")


def open_backend(url: str, *, wrap: bool = True) -> Backend:
    """Open the backend named by ``url`` (wrapped with retry, logging and a concurrency limit)."""
    if not url or not isinstance(url, str):
        raise StoreError("empty store URL: give a directory path or s3://bucket/prefix")
    backend: Backend
    if "://" not in url:
        backend = LocalBackend(url)
    else:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise StoreError(f"file URL {url!r} names a remote host; use file:///absolute/path")
            if not parts.path:
                raise StoreError(f"file URL {url!r} has no path")
            backend = LocalBackend(parts.path)
        elif scheme == "memory":
            backend = MemoryBackend.named(parts.netloc + parts.path)
        elif scheme == "s3":
            from persona.store.s3 import S3Backend

            query = parse_qs(parts.query)
            unknown = set(query) - {"endpoint", "region"}
            if unknown:
                raise StoreError(
                    f"unknown S3 URL parameter(s) {sorted(unknown)} in {url!r}; allowed: endpoint, region"
                )
            endpoint = query.get("endpoint", [None])[0]
            if endpoint is not None and not endpoint.startswith(("http://", "https://")):
                raise StoreError(f"S3 endpoint {endpoint!r} must start with http:// or https://")
            backend = S3Backend(
                parts.netloc,
                parts.path.lstrip("/"),
                endpoint=endpoint,
                region=query.get("region", [None])[0],
            )
        else:
            raise StoreError(
                f"unknown store URL scheme {parts.scheme!r} in {url!r}; use a path,"
                " file:///path, s3://bucket/prefix?endpoint=... or memory://name"
            )
    if wrap:
        backend = RetryBackend(LoggingBackend(LockingBackend(backend)))
    return backend


def unwrap(backend: Backend) -> Backend:
    """The innermost backend below any wrappers."""
    while hasattr(backend, "inner"):
        backend = backend.inner
    return backend

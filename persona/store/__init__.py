"""Persona storage: versioned, deduplicated, delta-compressed, optionally encrypted.

Layers (like restic): dumb backends (:mod:`~persona.store.local`, :mod:`~persona.store.s3`,
:mod:`~persona.store.memory`) and wrappers (:mod:`~persona.store.wrappers`) below the
:class:`~persona.store.repository.Repository` (content addressing, packs, index, snapshots,
refs). Pure logic (chunking, delta encoding, manifests, retention policy, diff) has no I/O.
See ``docs/store.md`` for the format and the guarantees.
"""

from persona.store.archiver import PutOptions, put
from persona.store.backend import Backend, BlobInfo, ObjectNotFound, TransientStoreError
from persona.store.maintenance import GcResult, PruneResult, VerifyReport, gc, prune, verify
from persona.store.manifest import FileEntry, Snapshot
from persona.store.policy import Policy, Version, parse_duration
from persona.store.repository import Repository
from persona.store.restore import RestoreResult, restore
from persona.store.url import open_backend

__all__ = [
    "Backend",
    "BlobInfo",
    "FileEntry",
    "GcResult",
    "ObjectNotFound",
    "Policy",
    "PruneResult",
    "PutOptions",
    "Repository",
    "RestoreResult",
    "Snapshot",
    "TransientStoreError",
    "VerifyReport",
    "Version",
    "gc",
    "open_backend",
    "parse_duration",
    "prune",
    "put",
    "restore",
    "verify",
]

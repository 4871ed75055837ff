"""The repository layer: content addressing, packs + index, snapshots and per-host refs.

Object layout in the backend (every object is zstd-compressed JSON or pack bytes, sealed by
the codec when the store is encrypted)::

    config                      store parameters (plain JSON; encryption salt + key check)
    data/<pp>/<pack id>         pack files: concatenated sealed blobs; id = BLAKE3(pack bytes)
    index/<id>                  which blob lives where: pack, offset, length, kind, delta base
    snapshots/<id>              snapshot manifests (see manifest.py); id = hash of the JSON
    refs/<host>/<v>-<t>-<snap>  versions: version v of host, taken at t (ns), -> snapshot
    locks/<id>                  lease locks (see locks.py)

Every read is verified: pack blobs are decrypted (authenticated), decoded and re-hashed against
their id; index and snapshot objects are re-hashed against their names. Writes are ordered
(packs, then index, then snapshot, then ref), so a snapshot becomes visible only when
everything it needs is durable.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import zstandard
from blake3 import blake3

from persona.errors import IntegrityError, StoreError
from persona.store.backend import Backend, ObjectNotFound
from persona.store.chunker import CdcChunking, PageChunking
from persona.store.crypto import AesCodec, Codec, load_key_material, new_encryption, open_encryption
from persona.store.delta import DELTA_KINDS, KIND_NAMES, Encoded, decode
from persona.store.manifest import (
    ExtentMap,
    Snapshot,
    check_host,
    decode_extent_map,
    decode_snapshot,
)
from persona.store.policy import Version
from persona.store.url import open_backend

STORE_FORMAT = 1
DEFAULT_PACK_SIZE = 16 * 1024 * 1024


@dataclass(frozen=True)
class IndexEntry:
    id: str
    type: str  # "data" | "tree"
    pack: str
    offset: int
    length: int  # stored (sealed) length in the pack
    raw_len: int  # plaintext length
    kind: int  # delta.RAW / ZSTD / DELTA / XDELTA
    base: str | None

    def to_row(self) -> list[Any]:
        return [self.id, self.type, self.offset, self.length, self.raw_len, self.kind, self.base]


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def _zc() -> zstandard.ZstdCompressor:
    return zstandard.ZstdCompressor(level=3)


class Repository:
    """An opened store. Thread-safe for concurrent readers and writers in one process."""

    def __init__(
        self,
        backend: Backend,
        codec: Codec,
        config: dict[str, Any],
        *,
        pack_cache_bytes: int = 128 * 1024 * 1024,
    ) -> None:
        self.backend = backend
        self.codec = codec
        self.config = config
        self.pack_size = int(config.get("pack_size", DEFAULT_PACK_SIZE))
        pc = config.get("chunking", {})
        self.page_chunking = PageChunking(**pc.get("pages", {}))
        self.cdc_chunking = CdcChunking(**pc.get("cdc", {}))
        self.index: dict[str, IndexEntry] = {}
        self.index_files: dict[str, list[str]] = {}  # index object name -> pack ids
        self.pack_entries: dict[str, list[IndexEntry]] = {}  # every indexed copy, per pack
        self._lock = threading.RLock()
        self._pack_cache: OrderedDict[str, bytes] = OrderedDict()
        self._pack_cache_bytes = 0
        self._pack_cache_max = pack_cache_bytes

    # ---------------------------------------------------------------- opening
    @classmethod
    def init(
        cls,
        url: str | Backend,
        *,
        encrypt: bool = False,
        key: str | None = None,
        key_file: str | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        page_chunking: PageChunking | None = None,
        cdc_chunking: CdcChunking | None = None,
    ) -> Repository:
        backend = open_backend(url) if isinstance(url, str) else url
        from persona.store.s3 import S3Backend
        from persona.store.url import unwrap

        inner = unwrap(backend)
        if isinstance(inner, S3Backend):
            inner.create_bucket()
        try:
            backend.stat("config")
            raise StoreError(f"a store already exists at {backend.location}; nothing was changed")
        except ObjectNotFound:
            pass
        if any(True for _ in backend.list("")):
            raise StoreError(
                f"{backend.location} is not empty and has no store config; use an empty location"
            )
        config: dict[str, Any] = {
            "format": "persona-store",
            "version": STORE_FORMAT,
            "id": secrets.token_hex(16),
            "created_ns": time.time_ns(),
            "pack_size": pack_size,
            "chunking": {
                "pages": (page_chunking or PageChunking()).to_json(),
                "cdc": (cdc_chunking or CdcChunking()).to_json(),
            },
            "encryption": None,
        }
        codec: Codec = Codec()
        material = load_key_material(key, key_file)
        if encrypt or key is not None or key_file is not None:
            if material is None:
                raise StoreError("--encrypt needs a key: set PERSONA_STORE_KEY or pass --key-file")
            config["encryption"], codec = new_encryption(material)
        backend.put("config", json.dumps(config, indent=1, sort_keys=True).encode())
        return cls(backend, codec, config)

    @classmethod
    def open(
        cls, url: str | Backend, *, key: str | None = None, key_file: str | None = None
    ) -> Repository:
        backend = open_backend(url) if isinstance(url, str) else url
        try:
            raw = backend.get("config")
        except ObjectNotFound as e:
            raise StoreError(
                f"no persona store at {backend.location}; create one with `persona store init {backend.location}`"
            ) from e
        try:
            config = json.loads(raw)
            if not isinstance(config, dict) or config.get("format") != "persona-store":
                raise ValueError("not a persona store config")
        except ValueError as e:
            raise StoreError(f"malformed store config at {backend.location}: {e}") from e
        if config.get("version") != STORE_FORMAT:
            raise StoreError(
                f"store format {config.get('version')} is not supported; upgrade persona"
            )
        codec: Codec = Codec()
        enc = config.get("encryption")
        if enc:
            codec = open_encryption(enc, load_key_material(key, key_file), backend.location)
        return cls(backend, codec, config)

    def close(self) -> None:
        self.backend.close()

    @property
    def encrypted(self) -> bool:
        return isinstance(self.codec, AesCodec)

    # ---------------------------------------------------- small verified objects
    def put_object(self, directory: str, payload: bytes) -> str:
        oid = self.codec.id_of(payload)
        self.backend.put(f"{directory}/{oid}", self.codec.seal(_zc().compress(payload)))
        return oid

    def get_object(self, directory: str, oid: str) -> bytes:
        name = f"{directory}/{oid}"
        raw = self.backend.get(name)
        plain = self.codec.open(raw, name)
        try:
            payload = zstandard.ZstdDecompressor().decompress(plain, max_output_size=1 << 31)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{name}: cannot decompress ({e})") from e
        if self.codec.id_of(payload) != oid:
            raise IntegrityError(f"{name}: content does not match its id (corrupted)")
        return payload

    # ------------------------------------------------------------------ index
    def load_index(self) -> None:
        """(Re)load every index file. Unreadable index files raise IntegrityError."""
        index: dict[str, IndexEntry] = {}
        files: dict[str, list[str]] = {}
        pack_entries: dict[str, list[IndexEntry]] = {}
        for info in self.backend.list("index/"):
            oid = info.name.split("/", 1)[1]
            try:
                doc = json.loads(self.get_object("index", oid))
                packs = []
                for p in doc["packs"]:
                    pid = p["id"]
                    packs.append(pid)
                    es = pack_entries.setdefault(pid, [])
                    for row in p["blobs"]:
                        bid, typ, off, ln, raw_len, kind, base = row
                        e = IndexEntry(bid, typ, pid, off, ln, raw_len, kind, base)
                        es.append(e)
                        index.setdefault(bid, e)
            except ObjectNotFound:
                continue  # removed by a concurrent gc after listing
            except (ValueError, KeyError, TypeError) as e:
                raise IntegrityError(f"index file {info.name} is malformed: {e}") from e
            files[info.name] = packs
        with self._lock:
            self.index = index
            self.index_files = files
            self.pack_entries = pack_entries

    def write_index(self, packs: list[tuple[str, int, list[IndexEntry]]]) -> str | None:
        """Write one index file describing ``packs`` and merge it into the loaded index."""
        if not packs:
            return None
        doc = {
            "packs": [
                {"id": pid, "size": size, "blobs": [e.to_row() for e in es]}
                for pid, size, es in packs
            ]
        }
        oid = self.put_object("index", json.dumps(doc, separators=(",", ":")).encode())
        with self._lock:
            for pid, _size, es in packs:
                self.pack_entries.setdefault(pid, []).extend(es)
                for e in es:
                    self.index.setdefault(e.id, e)
            self.index_files[f"index/{oid}"] = [p[0] for p in packs]
        return oid

    def has_blob(self, bid: str) -> bool:
        return bid in self.index

    # ------------------------------------------------------------------ blobs
    def _pack_bytes(self, pack: str) -> bytes:
        with self._lock:
            data = self._pack_cache.get(pack)
            if data is not None:
                self._pack_cache.move_to_end(pack)
                return data
        try:
            data = self.backend.get(pack_name(pack))
        except ObjectNotFound as e:
            raise IntegrityError(f"pack {pack} is missing from the store") from e
        with self._lock:
            self._pack_cache[pack] = data
            self._pack_cache_bytes += len(data)
            while self._pack_cache_bytes > self._pack_cache_max and len(self._pack_cache) > 1:
                _, old = self._pack_cache.popitem(last=False)
                self._pack_cache_bytes -= len(old)
        return data

    def drop_cache(self) -> None:
        with self._lock:
            self._pack_cache.clear()
            self._pack_cache_bytes = 0

    def read_stored(self, e: IndexEntry) -> bytes:
        data = self._pack_bytes(e.pack)
        if e.offset + e.length > len(data):
            raise IntegrityError(f"blob {e.id}: pack {e.pack} is truncated")
        return self.codec.open(
            data[e.offset : e.offset + e.length], f"blob {e.id} in pack {e.pack}"
        )

    def entry(self, bid: str) -> IndexEntry:
        e = self.index.get(bid)
        if e is None:
            raise IntegrityError(f"blob {bid} is not in any index (missing object)")
        return e

    def read_blob(self, bid: str, _depth: int = 0) -> bytes:
        """The verified plaintext of blob ``bid`` (resolving a depth-1 delta)."""
        e = self.entry(bid)
        stored = self.read_stored(e)
        base = None
        if e.kind in DELTA_KINDS:
            if _depth > 0 or e.base is None:
                raise IntegrityError(f"blob {bid} in pack {e.pack}: delta chain deeper than 1")
            try:
                base = self.read_blob(e.base, 1)
            except IntegrityError as err:
                raise IntegrityError(
                    f"blob {bid} in pack {e.pack}: its delta base failed: {err}"
                ) from err
        try:
            plain = decode(stored, base, raw_len=e.raw_len)
        except IntegrityError as err:
            raise IntegrityError(f"blob {bid} in pack {e.pack}: {err}") from err
        if len(plain) != e.raw_len or self.codec.id_of(plain) != bid:
            raise IntegrityError(
                f"blob {bid} in pack {e.pack}: content does not match its id (corrupted)"
            )
        return plain

    def full_base(self, bid: str) -> str:
        """The non-delta blob to delta-compress against when ``bid`` is the positional parent."""
        e = self.entry(bid)
        return e.base if e.kind in DELTA_KINDS and e.base else bid

    def read_extent_map(self, map_id: str) -> ExtentMap:
        return decode_extent_map(self.read_blob(map_id), f"extent map {map_id}")

    # -------------------------------------------------------------- snapshots
    def save_snapshot(self, snap: Snapshot) -> str:
        return self.put_object("snapshots", snap.encode())

    def load_snapshot(self, sid: str) -> Snapshot:
        try:
            data = self.get_object("snapshots", sid)
        except ObjectNotFound as e:
            raise IntegrityError(f"snapshot {sid} is missing") from e
        except IntegrityError as e:
            raise IntegrityError(f"snapshot {sid}: {e}") from e
        return decode_snapshot(data, f"snapshot {sid}")

    def list_snapshot_ids(self) -> list[str]:
        return [b.name.split("/", 1)[1] for b in self.backend.list("snapshots/")]

    # ------------------------------------------------------------------- refs
    def _refs(self, host: str | None = None) -> list[Version]:
        prefix = f"refs/{check_host(host)}/" if host else "refs/"
        out = []
        for b in self.backend.list(prefix):
            v = parse_ref(b.name)
            if v is not None:
                out.append(v)
        return out

    def list_versions(self, host: str | None = None) -> list[Version]:
        """Visible versions (one per host and number; racing duplicates resolve to the oldest)."""
        best: dict[tuple[str, int], Version] = {}
        for v in self._refs(host):
            k = (v.host, v.version)
            cur = best.get(k)
            if cur is None or (v.time_ns, v.snapshot) < (cur.time_ns, cur.snapshot):
                best[k] = v
        return sorted(best.values())

    def hosts(self) -> list[str]:
        return sorted({v.host for v in self.list_versions()})

    def add_ref(self, host: str, snapshot: str, time_ns: int) -> Version:
        """Give ``snapshot`` the next version number of ``host`` (safe against racing writers)."""
        check_host(host)
        for attempt in range(100):
            existing = self._refs(host)
            n = max((v.version for v in existing), default=0) + 1
            mine = Version(host, n, time_ns, snapshot)
            self.backend.put(mine.ref_name, b"")
            rivals = [v for v in self._refs(host) if v.version == n and v != mine]
            if not rivals:
                return mine
            self.backend.delete(mine.ref_name)
            time.sleep(0.01 * (1 + attempt) * (0.5 + secrets.randbelow(1000) / 1000))
        raise StoreError(f"could not allocate a version number for host {host!r}; retry")

    def resolve(self, host: str, version: str | int) -> Version:
        vs = self.list_versions(host)
        if not vs:
            raise StoreError(f"host {host!r} has no versions in {self.backend.location}")
        if version == "latest":
            return vs[-1]
        try:
            n = int(version)
        except (TypeError, ValueError) as e:
            raise StoreError(f"invalid version {version!r}: use a number or 'latest'") from e
        for v in vs:
            if v.version == n:
                return v
        raise StoreError(
            f"host {host!r} has no version {n}; available: {', '.join(str(v.version) for v in vs)}"
        )

    def forget(self, version: Version) -> None:
        """Remove a version's ref (its data is reclaimed by gc). The snapshot object goes too."""
        self.backend.delete(version.ref_name)
        self.backend.delete(f"snapshots/{version.snapshot}")

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        self.load_index()
        versions = self.list_versions()
        packs = list(self.backend.list("data/"))
        logical = 0
        per_host: dict[str, int] = {}
        for v in versions:
            per_host[v.host] = per_host.get(v.host, 0) + 1
        latest_sizes = {}
        for v in versions:
            try:
                s = self.load_snapshot(v.snapshot)
            except IntegrityError:
                continue
            logical += s.size
            latest_sizes[v.host] = s.size
        stored = sum(p.size for p in packs)
        kinds: dict[str, int] = {}
        for e in self.index.values():
            name = KIND_NAMES.get(e.kind, "?")
            kinds[name] = kinds.get(name, 0) + 1
        return {
            "location": self.backend.location,
            "encrypted": self.encrypted,
            "hosts": per_host,
            "versions": len(versions),
            "packs": len(packs),
            "stored_bytes": stored,
            "blobs": len(self.index),
            "blob_kinds": kinds,
            "unique_plain_bytes": sum(e.raw_len for e in self.index.values()),
            "logical_bytes": logical,
            "dedup_ratio": (logical / stored) if stored else None,
            "latest_size": latest_sizes,
        }


def parse_ref(name: str) -> Version | None:
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "refs":
        return None
    fields = parts[2].split("-")
    if len(fields) != 3 or len(fields[2]) != 64:
        return None
    try:
        return Version(parts[1], int(fields[0]), int(fields[1]), fields[2])
    except ValueError:
        return None


class PackSession:
    """Accumulates new blobs into packs for one writer; ``commit`` writes the index file."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.buf = bytearray()
        self.entries: list[IndexEntry] = []
        self.packs: list[tuple[str, int, list[IndexEntry]]] = []
        self.known: set[str] = set()
        self.added_bytes = 0
        self.new_blobs = 0
        self.delta_blobs = 0

    def has(self, bid: str) -> bool:
        return bid in self.known or self.repo.has_blob(bid)

    def add(self, bid: str, typ: str, enc: Encoded, raw_len: int) -> None:
        if bid in self.known:
            return
        sealed = self.repo.codec.seal(enc.payload)
        # pack is unknown until flush: store offsets now, fill in the pack id later
        self.entries.append(
            IndexEntry(bid, typ, "", len(self.buf), len(sealed), raw_len, enc.kind, enc.base)
        )
        self.buf += sealed
        self.known.add(bid)
        self.added_bytes += len(sealed)
        self.new_blobs += 1
        self.delta_blobs += enc.kind in DELTA_KINDS
        if len(self.buf) >= self.repo.pack_size:
            self.flush()

    def flush(self) -> None:
        if not self.entries:
            return
        data = bytes(self.buf)
        pid = blake3(data).hexdigest()
        self.repo.backend.put(pack_name(pid), data)
        es = [
            IndexEntry(e.id, e.type, pid, e.offset, e.length, e.raw_len, e.kind, e.base)
            for e in self.entries
        ]
        self.packs.append((pid, len(data), es))
        self.buf = bytearray()
        self.entries = []

    def commit(self) -> str | None:
        self.flush()
        oid = self.repo.write_index(self.packs)
        self.packs = []
        return oid

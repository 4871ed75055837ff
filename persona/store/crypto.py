"""Content ids and optional encryption at rest.

Without encryption an object's id is ``BLAKE3(plaintext)``. With encryption the id is the
*keyed* BLAKE3 of the plaintext (key derived from the store key), so ids reveal nothing about
contents, and every stored object is ``nonce(12) || AES-256-GCM(ciphertext || tag)``.

The store key comes from ``PERSONA_STORE_KEY`` (a passphrase) or a key file
(``PERSONA_STORE_KEY_FILE`` / ``--key-file``); it is stretched with scrypt using a salt kept in
the store's ``config`` object, together with a check value that detects a wrong key up front.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from blake3 import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from persona.errors import IntegrityError, StoreError

ENV_KEY = "PERSONA_STORE_KEY"
ENV_KEY_FILE = "PERSONA_STORE_KEY_FILE"
NONCE = 12
TAG = 16
_CHECK_PLAINTEXT = b"persona-store key check v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(frozen=True)
class KdfParams:
    salt: bytes
    n: int = 2**14
    r: int = 8
    p: int = 1

    def to_json(self) -> dict[str, object]:
        return {"name": "scrypt", "salt": b64(self.salt), "n": self.n, "r": self.r, "p": self.p}

    @staticmethod
    def from_json(d: dict[str, object]) -> KdfParams:
        try:
            if d["name"] != "scrypt":
                raise StoreError(f"unsupported key derivation {d['name']!r}")
            return KdfParams(unb64(str(d["salt"])), int(d["n"]), int(d["r"]), int(d["p"]))  # type: ignore[call-overload]
        except (KeyError, ValueError, TypeError) as e:
            raise StoreError(f"malformed encryption parameters in store config: {e}") from e


def load_key_material(key: str | None = None, key_file: str | None = None) -> bytes | None:
    """The passphrase bytes from an explicit value, a key file, or the environment (or None)."""
    if key is not None:
        return key.encode()
    path = key_file or os.environ.get(ENV_KEY_FILE)
    if path:
        try:
            with open(path, "rb") as f:
                data = f.read().strip()
        except OSError as e:
            raise StoreError(f"cannot read key file {path!r}: {e}") from e
        if not data:
            raise StoreError(f"key file {path!r} is empty")
        return data
    env = os.environ.get(ENV_KEY)
    return env.encode() if env else None


class Codec:
    """Computes ids and seals/opens stored bytes. The plain codec is the identity."""

    encrypted = False

    def id_of(self, data: bytes | memoryview) -> str:
        return blake3(data).hexdigest()

    def seal(self, data: bytes) -> bytes:
        return data

    def open(self, data: bytes, what: str) -> bytes:
        return data


class AesCodec(Codec):
    encrypted = True

    def __init__(self, master: bytes) -> None:
        self._id_key = blake3(master, derive_key_context="persona-store 2026 object ids").digest()
        enc_key = blake3(master, derive_key_context="persona-store 2026 aes-256-gcm").digest()
        self._aead = AESGCM(enc_key)

    def id_of(self, data: bytes | memoryview) -> str:
        return blake3(data, key=self._id_key).hexdigest()

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, data, None)

    def open(self, data: bytes, what: str) -> bytes:
        if len(data) < NONCE + TAG:
            raise IntegrityError(f"{what}: encrypted object truncated ({len(data)} bytes)")
        try:
            return self._aead.decrypt(data[:NONCE], data[NONCE:], None)
        except InvalidTag as e:
            raise IntegrityError(
                f"{what}: authentication failed (corrupted data or wrong key)"
            ) from e


def derive_master(material: bytes, kdf: KdfParams) -> bytes:
    return hashlib.scrypt(
        material, salt=kdf.salt, n=kdf.n, r=kdf.r, p=kdf.p, dklen=32, maxmem=2**26
    )


def new_encryption(material: bytes) -> tuple[dict[str, object], AesCodec]:
    """Parameters for a new encrypted store's config, and its codec."""
    kdf = KdfParams(os.urandom(16))
    codec = AesCodec(derive_master(material, kdf))
    return {
        "cipher": "aes-256-gcm",
        "kdf": kdf.to_json(),
        "check": b64(codec.seal(_CHECK_PLAINTEXT)),
    }, codec


def open_encryption(params: dict[str, object], material: bytes | None, location: str) -> AesCodec:
    if material is None:
        raise StoreError(
            f"store {location} is encrypted: set {ENV_KEY} or {ENV_KEY_FILE} (or pass --key-file)"
        )
    kdf_raw = params.get("kdf")
    if not isinstance(kdf_raw, dict):
        raise StoreError(f"malformed encryption parameters in the config of {location}")
    codec = AesCodec(derive_master(material, KdfParams.from_json(kdf_raw)))
    try:
        check = unb64(str(params["check"]))
        ok = codec.open(check, "key check") == _CHECK_PLAINTEXT
    except (IntegrityError, KeyError, ValueError):
        ok = False
    if not ok:
        raise StoreError(
            f"wrong encryption key for store {location}: check {ENV_KEY} / the key file"
        )
    return codec

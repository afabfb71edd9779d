"""The encrypted checkpoint format, version 1: keys, file headers, chunk records and the manifest.

Pure: bytes in, bytes out (no files, no clock). :mod:`.folder` does the I/O.

An encrypted checkpoint is a folder with the source's tree, each file ``<path>`` stored as
``<path>.enc``, and ``dso-manifest.json`` at its root. docs/encryption.md describes it for people.

``<path>.enc``::

    header (64 bytes)     magic "DSOENC\\r\\n" | version u16 | cipher u8 | flags u8 | chunk size u32
                          | set id (16) | file id (16) | plaintext size u64 | zeros (8)
    chunk record 0..n-1   nonce (12) | ciphertext (chunk length) | tag (16)

Every chunk is its own AEAD message (AES-256-GCM or SM4-GCM, a fresh random 96-bit nonce each)
whose associated data is ``header | SHA-256(path) | index u64 | final u8``: the header binds the
format version, the cipher, the chunk size, the encryption run (set id), the file (file id) and its
size; the path binds the file's name; the index its place; the final flag its end. So a chunk
cannot be edited, reordered, dropped, moved to another file or another run, or the file cut at a
chunk boundary, without its tag failing. A file has ``max(1, ceil(size / chunk))`` chunks: an empty
file still has one (empty, final) chunk, so that deleting all of them is seen too.

The master key is 32 random bytes. Each cipher uses a key derived from it with HKDF (SM3 for
SM4-GCM, as GB/T 32918's family of national algorithms goes together; SHA-256 for AES) and the
run's random salt, so that every run has keys of its own; the key id (HKDF, no salt) names the
master key in the manifest without revealing it, so that a wrong key is named as such.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from deepseek_operator.errors import OperatorError

FORMAT = "deepseek-operator/encrypted-checkpoint"
VERSION = 1
MAGIC = b"DSOENC\r\n"
HEADER_SIZE = 64
NONCE_SIZE = 12
TAG_SIZE = 16
RECORD_OVERHEAD = NONCE_SIZE + TAG_SIZE
MANIFEST = "dso-manifest.json"
SUFFIX = ".enc"
KEY_SIZE = 32
KEY_PREFIX = "dso-weights-key-v1:"
DEFAULT_CHUNK = 4 << 20  # 4 MiB: 28 bytes of overhead each (0.0007 %), a few MiB in flight per core
MIN_CHUNK, MAX_CHUNK = 16, 1 << 30
CIPHERS = {"sm4-gcm": 1, "aes-256-gcm": 2}
_CIPHER_NAMES = {v: k for k, v in CIPHERS.items()}
_HEADER = struct.Struct("!8sHBBI16s16sQ8x")
_AAD_TAIL = struct.Struct("!QB")


class EncryptionError(OperatorError):
    """An encrypted checkpoint, its key or its manifest cannot be used; the message says which
    file and chunk, and what is wrong."""


# --------------------------------------------------------------------------- keys


def new_key() -> bytes:
    """A fresh random master key."""
    return os.urandom(KEY_SIZE)


def format_key(key: bytes) -> str:
    """The key file's text: ``dso-weights-key-v1:`` and 64 hex digits, one line."""
    return f"{KEY_PREFIX}{key.hex()}\n"


def parse_key(text: str | bytes, where: str) -> bytes:
    """The master key from a key file's text (``where`` names the file in errors)."""
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    value = raw.strip()
    if not value.startswith(KEY_PREFIX) or not re.fullmatch(r"[0-9a-f]{64}", value[len(KEY_PREFIX) :]):
        raise EncryptionError(
            f"{where}: not a weights key: expected one line '{KEY_PREFIX}' and 64 lowercase hex digits "
            "(32 random bytes); make one with 'deepseek-operator keygen'"
        )
    return bytes.fromhex(value[len(KEY_PREFIX) :])


def key_id(key: bytes) -> str:
    """The key's public name: 8 bytes of HKDF-SHA256 of it, hex."""
    return _hkdf(hashes.SHA256(), 8, key, None, b"deepseek-operator weights v1 key id").hex()


def _hkdf(algorithm: hashes.HashAlgorithm, length: int, key: bytes, salt: bytes | None, info: bytes) -> bytes:
    return HKDF(algorithm=algorithm, length=length, salt=salt, info=info).derive(key)


def cipher_key(master: bytes, cipher: str, salt: bytes) -> bytes:
    """The key ``cipher`` uses for the run with ``salt``: 16 bytes (SM4) or 32 (AES-256)."""
    info = b"deepseek-operator weights v1 " + cipher.encode()
    if cipher == "sm4-gcm":
        return _hkdf(hashes.SM3(), 16, master, salt, info)
    return _hkdf(hashes.SHA256(), 32, master, salt, info)


# --------------------------------------------------------------------------- the AEAD


class Aead:
    """One cipher with one key: ``seal`` gives nonce | ciphertext | tag, ``open`` reverses it."""

    def __init__(self, cipher: str, key: bytes) -> None:
        if cipher not in CIPHERS:
            raise EncryptionError(f"cipher {cipher!r} is not one of {', '.join(CIPHERS)}")
        self.cipher = cipher
        self._key = key
        self._aes = AESGCM(key) if cipher == "aes-256-gcm" else None

    def seal(self, plaintext: bytes | memoryview, aad: bytes, nonce: bytes | None = None) -> bytes:
        nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        if self._aes is not None:
            return nonce + self._aes.encrypt(nonce, plaintext, aad)
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        body = enc.update(plaintext) + enc.finalize()
        return nonce + body + enc.tag

    def open(self, record: bytes | memoryview, aad: bytes) -> bytes:
        """The plaintext; :class:`InvalidTag` when the record or its associated data was changed."""
        view = memoryview(record)
        if len(view) < RECORD_OVERHEAD:
            raise InvalidTag
        nonce, body, tag = bytes(view[:NONCE_SIZE]), view[NONCE_SIZE:-TAG_SIZE], bytes(view[-TAG_SIZE:])
        if self._aes is not None:
            return self._aes.decrypt(nonce, view[NONCE_SIZE:], aad)
        dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
        dec.authenticate_additional_data(aad)
        return dec.update(body) + dec.finalize()


# --------------------------------------------------------------------------- file layout


@dataclass(frozen=True)
class Header:
    """The fixed header of one encrypted file."""

    cipher: str
    chunk_size: int
    set_id: bytes  # the encryption run (its salt)
    file_id: bytes
    size: int  # plaintext bytes
    version: int = VERSION

    def pack(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            self.version,
            CIPHERS[self.cipher],
            0,
            self.chunk_size,
            self.set_id,
            self.file_id,
            self.size,
        )

    @property
    def chunks(self) -> int:
        return chunk_count(self.size, self.chunk_size)

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def plain_offset(self, index: int) -> int:
        return index * self.chunk_size

    def record_offset(self, index: int) -> int:
        return HEADER_SIZE + index * (self.chunk_size + RECORD_OVERHEAD)

    @property
    def encrypted_size(self) -> int:
        return HEADER_SIZE + self.chunks * RECORD_OVERHEAD + self.size


def unpack_header(data: bytes, where: str) -> Header:
    """The header of an encrypted file (``where`` names it in errors)."""
    if len(data) < HEADER_SIZE:
        raise EncryptionError(
            f"{where}: truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, version, cipher, _flags, chunk, set_id, file_id, size = _HEADER.unpack(data[:HEADER_SIZE])
    if magic != MAGIC:
        raise EncryptionError(f"{where}: not an encrypted checkpoint file (no {MAGIC!r} header)")
    if version != VERSION:
        raise EncryptionError(
            f"{where}: format version {version} is unknown to this deepseek-operator (it reads version "
            f"{VERSION}); decrypt it with the release that wrote it"
        )
    if cipher not in _CIPHER_NAMES:
        raise EncryptionError(f"{where}: unknown cipher id {cipher} in the header")
    return Header(_CIPHER_NAMES[cipher], chunk, set_id, file_id, size, version)


def chunk_count(size: int, chunk_size: int) -> int:
    """Chunks of a file of ``size`` bytes: at least one (an empty file has one empty chunk)."""
    return max(1, math.ceil(size / chunk_size))


def chunk_aad(header: bytes, path: str, index: int, final: bool) -> bytes:
    """The associated data of chunk ``index`` of the file at ``path``."""
    return header + hashlib.sha256(path.encode()).digest() + _AAD_TAIL.pack(index, 1 if final else 0)


def tree_digest(chunk_digests: Iterable[bytes]) -> str:
    """A file's plaintext digest: SHA-256 over the SHA-256 of each chunk, in order (so that chunks
    hash in parallel)."""
    h = hashlib.sha256()
    for d in chunk_digests:
        h.update(d)
    return "sha256-chunks:" + h.hexdigest()


# --------------------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, '/'-separated
    file_id: bytes
    size: int
    digest: str


@dataclass(frozen=True)
class Manifest:
    cipher: str
    chunk_size: int
    salt: bytes  # the run's salt, also its set id
    key_id: str
    files: tuple[FileEntry, ...]
    version: int = VERSION

    def body(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "cipher": self.cipher,
            "kdf": "hkdf-sm3" if self.cipher == "sm4-gcm" else "hkdf-sha256",
            "chunkSize": self.chunk_size,
            "salt": self.salt.hex(),
            "keyId": self.key_id,
            "files": [
                {"path": f.path, "id": f.file_id.hex(), "size": f.size, "digest": f.digest}
                for f in self.files
            ],
        }

    def header(self, entry: FileEntry) -> Header:
        return Header(self.cipher, self.chunk_size, self.salt, entry.file_id, entry.size, self.version)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


_MANIFEST_AAD = b"deepseek-operator weights v1 manifest\x00"


def seal_manifest(manifest: Manifest, aead: Aead) -> bytes:
    """The manifest file: its body and a GCM tag over it (an empty message, the body as associated
    data), readable by people and authenticated."""
    body = manifest.body()
    record = aead.seal(b"", _MANIFEST_AAD + _canonical(body))
    out = {**body, "auth": {"nonce": record[:NONCE_SIZE].hex(), "tag": record[NONCE_SIZE:].hex()}}
    return (json.dumps(out, indent=1, sort_keys=True) + "\n").encode()


def _safe_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path:
        raise EncryptionError(f"{MANIFEST}: file path {path!r} is not a relative path")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise EncryptionError(f"{MANIFEST}: file path {path!r} leaves the folder or is not normalised")
    return path


def read_manifest(data: bytes, master: bytes) -> tuple[Manifest, Aead]:
    """The manifest, checked: known format and version, the key's id, the tag; and the run's AEAD."""
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise EncryptionError(f"{MANIFEST}: not JSON ({e}); the manifest is damaged") from e
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise EncryptionError(f"{MANIFEST}: not a deepseek-operator encrypted checkpoint manifest")
    if raw.get("version") != VERSION:
        raise EncryptionError(
            f"{MANIFEST}: format version {raw.get('version')!r} is unknown to this deepseek-operator (it "
            f"reads version {VERSION}); decrypt it with the release that wrote it"
        )
    cipher = raw.get("cipher")
    if cipher not in CIPHERS:
        raise EncryptionError(f"{MANIFEST}: cipher {cipher!r} is not one of {', '.join(CIPHERS)}")
    given = key_id(master)
    if raw.get("keyId") != given:
        raise EncryptionError(
            f"wrong key: the checkpoint was encrypted with key id {raw.get('keyId')}, the key given has id "
            f"{given}; mount the key it was encrypted with (or re-encrypt it with 'encrypt --rekey')"
        )
    try:
        salt = bytes.fromhex(raw["salt"])
        auth = raw["auth"]
        record = bytes.fromhex(auth["nonce"]) + bytes.fromhex(auth["tag"])
        body = {k: v for k, v in raw.items() if k != "auth"}
        aead = Aead(cipher, cipher_key(master, cipher, salt))
        aead.open(record, _MANIFEST_AAD + _canonical(body))
    except InvalidTag:
        raise EncryptionError(
            f"{MANIFEST}: its authentication tag does not match: the manifest was changed or replaced"
        ) from None
    except (KeyError, TypeError, ValueError) as e:
        raise EncryptionError(f"{MANIFEST}: malformed ({e!r}); the manifest is damaged") from e
    files = []
    for f in raw["files"]:
        files.append(
            FileEntry(_safe_path(f["path"]), bytes.fromhex(f["id"]), int(f["size"]), str(f["digest"]))
        )
    chunk = raw.get("chunkSize")
    if not isinstance(chunk, int) or not MIN_CHUNK <= chunk <= MAX_CHUNK:
        raise EncryptionError(f"{MANIFEST}: chunk size {chunk!r} is out of range")
    return Manifest(cipher, chunk, salt, given, tuple(files)), aead


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())

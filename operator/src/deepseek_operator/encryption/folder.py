"""Encrypt, decrypt and re-key checkpoint folders in :mod:`.format`, streamed and in parallel.

Memory is bounded by the chunk size: at most ``2 x workers`` chunks are in flight, each read
(``pread``), sealed or opened and written (``pwrite``) by the worker that owns it, so that a
642 GB checkpoint needs a few hundred MiB whatever its files' sizes. Workers are processes by
default (each has its own interpreter: the cipher runs on every core whether or not the binding
releases the GIL) or threads; the parent sends them chunk coordinates, never chunk data.

Encryption is resumable: the run's settings and salt are written first (``.dso-encrypt-state.json``),
each finished file is journaled (``.dso-encrypt-done.jsonl``), and a file being written
(``<path>.enc.partial``) is checked chunk by chunk on restart, keeping the longest prefix whose tags
verify; the manifest is written last.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import fnmatch
import hashlib
import json
import math
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag

from deepseek_operator.encryption import format as fm
from deepseek_operator.encryption.format import EncryptionError

STATE = ".dso-encrypt-state.json"
DONE = ".dso-encrypt-done.jsonl"
DECRYPTED = ".dso-decrypted"  # in a decrypted folder: the manifest tag it was decrypted from
PARTIAL = ".partial"

# A task: ("enc" | "dec" | "rekey" | "check", arguments...); see _run_task.
Task = tuple[Any, ...]


def default_workers() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


# --------------------------------------------------------------------------- chunk work (workers)


def _pread(path: str, length: int, offset: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, length, offset)  # one copy, from the page cache, with the GIL released
        while len(data) < length:
            piece = os.pread(fd, length - len(data), offset + len(data))
            if not piece:
                break
            data += piece
        return data
    finally:
        os.close(fd)


def _pwrite(path: str, data: bytes, offset: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    finally:
        os.close(fd)


def _chunk_error(path: str, index: int, header: fm.Header, what: str) -> EncryptionError:
    return EncryptionError(
        f"{path}{fm.SUFFIX}: chunk {index} of {header.chunks} (plaintext bytes {header.plain_offset(index)}"
        f"..{header.plain_offset(index) + header.chunk_length(index)}): {what}"
    )


def _open_chunk(aead: fm.Aead, src: str, header: fm.Header, hbytes: bytes, path: str, index: int) -> bytes:
    length = header.chunk_length(index)
    record = _pread(src, length + fm.RECORD_OVERHEAD, header.record_offset(index))
    if len(record) < length + fm.RECORD_OVERHEAD:
        raise _chunk_error(path, index, header, "truncated: the file ends inside this chunk")
    aad = fm.chunk_aad(hbytes, path, index, index == header.chunks - 1)
    try:
        return aead.open(record, aad)
    except InvalidTag:
        raise _chunk_error(
            path,
            index,
            header,
            "authentication failed: the chunk was changed, or swapped or moved from another place, "
            "file or encryption run (or the file was cut short)",
        ) from None


def _run_task(task: Task) -> bytes | None:
    """Do one chunk's work; returns the SHA-256 of its plaintext (``check``: None when it does not
    verify; ``dec`` without digests: b"")."""
    op = task[0]
    if op == "enc":
        _, cipher, key, src, dst, header, path, index = task
        aead, hbytes = fm.Aead(cipher, key), header.pack()
        length = header.chunk_length(index)
        plain = _pread(src, length, header.plain_offset(index))
        if len(plain) != length:
            raise EncryptionError(f"{src}: changed while being encrypted (shorter than {header.size} bytes)")
        record = aead.seal(plain, fm.chunk_aad(hbytes, path, index, index == header.chunks - 1))
        _pwrite(dst, record, header.record_offset(index))
        return hashlib.sha256(plain).digest()
    if op == "dec":
        _, cipher, key, src, dst, header, path, index, digest = task
        plain = _open_chunk(fm.Aead(cipher, key), src, header, header.pack(), path, index)
        _pwrite(dst, plain, header.plain_offset(index))
        return hashlib.sha256(plain).digest() if digest else b""
    if op == "rekey":
        _, cipher, key, new_cipher, new_key, src, dst, header, new_header, path, index = task
        plain = _open_chunk(fm.Aead(cipher, key), src, header, header.pack(), path, index)
        final = index == new_header.chunks - 1
        record = fm.Aead(new_cipher, new_key).seal(plain, fm.chunk_aad(new_header.pack(), path, index, final))
        _pwrite(dst, record, new_header.record_offset(index))
        return hashlib.sha256(plain).digest()
    if op == "check":
        _, cipher, key, src, header, path, index = task
        try:
            plain = _open_chunk(fm.Aead(cipher, key), src, header, header.pack(), path, index)
        except EncryptionError:
            return None
        return hashlib.sha256(plain).digest()
    raise ValueError(op)


# --------------------------------------------------------------------------- the runner


@dataclass
class Runner:
    """Runs chunk tasks on ``workers`` processes (or threads), at most ``2 x workers`` in flight,
    results in submission order. ``workers`` 1 runs them in this thread."""

    workers: int = 1
    threads: bool = False
    _pool: cf.Executor | None = field(default=None, init=False)

    def __enter__(self) -> Runner:
        if self.workers > 1:
            if self.threads:
                self._pool = cf.ThreadPoolExecutor(self.workers)
            else:
                ctx = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
                self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def map(self, tasks: Iterable[Task]) -> Iterator[bytes | None]:
        if self._pool is None:
            for t in tasks:
                yield _run_task(t)
            return
        window: deque[cf.Future[bytes | None]] = deque()
        try:
            for t in tasks:
                window.append(self._pool.submit(_run_task, t))
                if len(window) >= 2 * self.workers:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for f in window:
                f.cancel()


# --------------------------------------------------------------------------- helpers


def source_files(src: Path) -> list[tuple[str, Path]]:
    """The regular files under ``src`` (symbolic links to files followed), by relative path."""
    if not src.is_dir():
        raise EncryptionError(f"{src}: not a folder; give the checkpoint folder to encrypt")
    out = []
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in files:
            p = Path(root, name)
            rel = p.relative_to(src).as_posix()
            if p.is_symlink() and not p.exists():
                raise EncryptionError(f"{p}: a broken symbolic link; fix or remove it before encrypting")
            if p.is_file():
                out.append((rel, p))
    return sorted(out)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _create(path: Path, size: int, keep: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "r+b" if keep and path.exists() else "wb") as f:
        f.truncate(size)


@dataclass
class Report:
    files: int = 0
    plaintext_bytes: int = 0
    chunks: int = 0
    resumed_chunks: int = 0
    skipped: bool = False  # decrypt: the folder already held this checkpoint


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- encrypt


def _run_state(
    dst: Path, files: list[tuple[str, Path]], cipher: str, chunk: int, key: bytes
) -> dict[str, Any]:
    """The run's settings, salt and file ids: new, or those of an interrupted run to resume."""
    sizes = {rel: p.stat().st_size for rel, p in files}
    state_path = dst / STATE
    if state_path.exists():
        state: dict[str, Any] = json.loads(state_path.read_text())
        mismatch = []
        if state["cipher"] != cipher:
            mismatch.append(f"cipher {state['cipher']} (now {cipher})")
        if state["chunkSize"] != chunk:
            mismatch.append(f"chunk size {state['chunkSize']} (now {chunk})")
        if state["keyId"] != fm.key_id(key):
            mismatch.append(f"key id {state['keyId']} (now {fm.key_id(key)})")
        if {f["path"]: f["size"] for f in state["files"]} != sizes:
            mismatch.append("another list of files or sizes (the source changed)")
        if mismatch:
            raise EncryptionError(
                f"{dst}: holds an interrupted encryption with {', '.join(mismatch)}: resume it with the "
                "same source and settings, or delete the folder to start again"
            )
        return state
    state = {
        "cipher": cipher,
        "chunkSize": chunk,
        "keyId": fm.key_id(key),
        "salt": os.urandom(16).hex(),
        "files": [{"path": rel, "size": sizes[rel], "id": os.urandom(16).hex()} for rel, _ in files],
    }
    dst.mkdir(parents=True, exist_ok=True)
    _atomic_write(state_path, json.dumps(state).encode())
    return state


def _done_digests(dst: Path) -> dict[str, str]:
    done: dict[str, str] = {}
    path = dst / DONE
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[entry["path"]] = entry["digest"]
            except (ValueError, KeyError):
                continue  # a line cut by the interruption: that file is redone
    return done


def _valid_prefix(
    runner: Runner, cipher: str, key: bytes, part: Path, header: fm.Header, rel: str
) -> list[bytes]:
    """The digests of the chunks at the start of an interrupted ``part`` file that verify."""
    try:
        with open(part, "rb") as f:
            if f.read(fm.HEADER_SIZE) != header.pack():
                return []
        size = part.stat().st_size
    except OSError:
        return []
    present = sum(
        1
        for i in range(header.chunks)
        if header.record_offset(i) + header.chunk_length(i) + fm.RECORD_OVERHEAD <= size
    )
    digests: list[bytes] = []
    tasks = (("check", cipher, key, str(part), header, rel, i) for i in range(present))
    for d in runner.map(tasks):
        if d is None:
            break
        digests.append(d)
    return digests


def _check_settings(src: Path, dst: Path, cipher: str, chunk_size: int) -> None:
    if cipher not in fm.CIPHERS:
        raise EncryptionError(f"--cipher {cipher!r}: give one of {', '.join(fm.CIPHERS)}")
    if not fm.MIN_CHUNK <= chunk_size <= fm.MAX_CHUNK:
        raise EncryptionError(
            f"--chunk-size {chunk_size}: give {fm.MIN_CHUNK} bytes to 1 GiB (4 MiB is good)"
        )
    if (dst / fm.MANIFEST).exists():
        raise EncryptionError(
            f"{dst}: already holds an encrypted checkpoint ({fm.MANIFEST}); give an empty folder"
        )
    if src.resolve() == dst.resolve() or src.resolve() in dst.resolve().parents:
        raise EncryptionError(f"{dst}: the destination must be a folder outside the source {src}")


Pending = list[tuple[str, fm.Header, Path, list[bytes]]]


def _prepare(
    runner: Runner,
    dst: Path,
    state: dict[str, Any],
    cipher: str,
    chunk_size: int,
    ckey: bytes,
    done: dict[str, str],
    entries: list[fm.FileEntry],
    report: Report,
) -> Pending:
    """The files still to encrypt, each with the digests of the chunks an interrupted run left
    verified; the finished ones go to ``entries``."""
    salt = bytes.fromhex(state["salt"])
    pending: Pending = []
    for f in state["files"]:
        rel = f["path"]
        header = fm.Header(cipher, chunk_size, salt, bytes.fromhex(f["id"]), f["size"])
        out = dst / (rel + fm.SUFFIX)
        if rel in done and out.exists() and out.stat().st_size == header.encrypted_size:
            entries.append(fm.FileEntry(rel, header.file_id, header.size, done[rel]))
            report.resumed_chunks += header.chunks
            continue
        part = out.with_name(out.name + PARTIAL)
        prefix = _valid_prefix(runner, cipher, ckey, part, header, rel) if part.exists() else []
        report.resumed_chunks += len(prefix)
        _create(part, header.encrypted_size, keep=bool(prefix))
        if not prefix:
            _pwrite(str(part), header.pack(), 0)
        pending.append((rel, header, part, prefix))
    return pending


def encrypt_folder(
    src: Path,
    dst: Path,
    key: bytes,
    cipher: str = "sm4-gcm",
    chunk_size: int = fm.DEFAULT_CHUNK,
    workers: int = 1,
    threads: bool = False,
    progress: Progress = _quiet,
    if_missing: bool = False,
) -> Report:
    """Encrypt every file under ``src`` into ``dst`` (resuming an interrupted run there);
    ``if_missing``: nothing to do when ``dst`` already holds a checkpoint encrypted with ``key``."""
    if if_missing and (dst / fm.MANIFEST).exists():
        load_manifest(dst, key)  # it must be one of this key's: else the error names the key ids
        return Report(skipped=True)
    _check_settings(src, dst, cipher, chunk_size)
    files = source_files(src)
    state = _run_state(dst, files, cipher, chunk_size, key)
    salt = bytes.fromhex(state["salt"])
    ckey = fm.cipher_key(key, cipher, salt)
    done = _done_digests(dst)
    report = Report()
    entries: list[fm.FileEntry] = []
    by_path = {rel: p for rel, p in files}
    with Runner(workers, threads) as runner, open(dst / DONE, "a") as journal:
        pending = _prepare(runner, dst, state, cipher, chunk_size, ckey, done, entries, report)

        def tasks() -> Iterator[Task]:
            for rel, header, part, prefix in pending:
                for i in range(len(prefix), header.chunks):
                    yield ("enc", cipher, ckey, str(by_path[rel]), str(part), header, rel, i)

        results = runner.map(tasks())
        for rel, header, part, prefix in pending:
            digests = list(prefix)
            for _ in range(len(prefix), header.chunks):
                d = next(results)
                assert d is not None
                digests.append(d)
                report.chunks += 1
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(part, dst / (rel + fm.SUFFIX))
            digest = fm.tree_digest(digests)
            journal.write(json.dumps({"path": rel, "digest": digest}) + "\n")
            journal.flush()
            entries.append(fm.FileEntry(rel, header.file_id, header.size, digest))
            progress(f"encrypted {rel} ({header.size} bytes, {header.chunks} chunks)")
    entries.sort(key=lambda e: e.path)
    manifest = fm.Manifest(cipher, chunk_size, salt, fm.key_id(key), tuple(entries))
    _atomic_write(dst / fm.MANIFEST, fm.seal_manifest(manifest, fm.Aead(cipher, ckey)))
    for name in (STATE, DONE):
        (dst / name).unlink(missing_ok=True)
    report.files = len(entries)
    report.plaintext_bytes = sum(e.size for e in entries)
    return report


# --------------------------------------------------------------------------- decrypt and re-key


def load_manifest(src: Path, key: bytes) -> tuple[fm.Manifest, fm.Aead, bytes]:
    path = src / fm.MANIFEST
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise EncryptionError(
            f"{path}: missing: {src} is not an encrypted checkpoint, or its manifest was deleted "
            "(encrypt the checkpoint again, or restore the manifest from a backup)"
        ) from None
    manifest, aead = fm.read_manifest(data, key)
    return manifest, aead, data


def check_file(src: Path, manifest: fm.Manifest, entry: fm.FileEntry) -> fm.Header:
    """The expected header of ``entry``, after checking the file's header and length."""
    where = f"{entry.path}{fm.SUFFIX}"
    path = src / where
    try:
        with open(path, "rb") as f:
            found = fm.unpack_header(f.read(fm.HEADER_SIZE), where)
        size = path.stat().st_size
    except FileNotFoundError:
        raise EncryptionError(f"{where}: missing: the manifest lists it ({entry.size} bytes)") from None
    want = manifest.header(entry)
    if found.file_id != want.file_id or found.set_id != want.set_id:
        raise EncryptionError(
            f"{where}: its header belongs to another file or another encryption run (file id "
            f"{found.file_id.hex()}, the manifest says {want.file_id.hex()}): files were swapped or "
            "the manifest was replaced"
        )
    if found != want:
        raise EncryptionError(f"{where}: its header does not match the manifest ({found} != {want})")
    if size < want.encrypted_size:
        last = next(i for i in range(want.chunks) if want.record_offset(i + 1) > size)
        raise EncryptionError(
            f"{where}: truncated: {size} of {want.encrypted_size} bytes; chunk {last} of {want.chunks} "
            "and those after it are missing or incomplete"
        )
    if size > want.encrypted_size:
        raise EncryptionError(
            f"{where}: {size - want.encrypted_size} bytes more than its {want.chunks} chunks: data was "
            "appended to it"
        )
    return want


def decrypt_folder(
    src: Path,
    dst: Path,
    key: bytes,
    workers: int = 1,
    threads: bool = False,
    verify_digests: bool = False,
    progress: Progress = _quiet,
    cipher: str | None = None,
    exclude: tuple[str, ...] = (),
) -> Report:
    """Decrypt the checkpoint in ``src`` into ``dst`` (nothing to do when ``dst`` already holds it);
    ``cipher``: refuse a checkpoint encrypted with another one; ``exclude``: leave out the files
    whose path or name matches one of these shell patterns."""
    manifest, _aead, raw = load_manifest(src, key)
    if exclude:
        kept = tuple(
            e
            for e in manifest.files
            if not any(
                fnmatch.fnmatch(e.path, p) or fnmatch.fnmatch(e.path.rsplit("/", 1)[-1], p) for p in exclude
            )
        )
        manifest = dataclasses.replace(manifest, files=kept)
        raw += json.dumps(sorted(exclude)).encode()
    if cipher is not None and manifest.cipher != cipher:
        raise EncryptionError(
            f"{src}: the checkpoint is encrypted with {manifest.cipher}, not {cipher} as asked "
            "(spec.model.encryption.cipher): set the cipher it was encrypted with"
        )
    ckey = fm.cipher_key(key, manifest.cipher, manifest.salt)
    stamp = hashlib.sha256(raw).hexdigest()
    marker = dst / DECRYPTED
    report = Report(files=len(manifest.files), plaintext_bytes=sum(e.size for e in manifest.files))
    if marker.exists() and marker.read_text().strip() == stamp:
        report.skipped = True
        return report
    headers = [check_file(src, manifest, e) for e in manifest.files]
    marker.unlink(missing_ok=True)
    for e in manifest.files:
        _create(dst / e.path, e.size)

    def tasks() -> Iterator[Task]:
        for e, h in zip(manifest.files, headers, strict=True):
            for i in range(h.chunks):
                enc = str(src / (e.path + fm.SUFFIX))
                yield ("dec", manifest.cipher, ckey, enc, str(dst / e.path), h, e.path, i, verify_digests)

    with Runner(workers, threads) as runner:
        results = runner.map(tasks())
        for e, h in zip(manifest.files, headers, strict=True):
            digests = [d or b"" for _, d in zip(range(h.chunks), results, strict=False)]
            report.chunks += h.chunks
            if verify_digests and not fm.same_digest(fm.tree_digest(digests), e.digest):
                raise EncryptionError(
                    f"{e.path}: its plaintext digest does not match the manifest's {e.digest}: the file "
                    "was encrypted again with the same key after the manifest was written"
                )
            progress(f"decrypted {e.path} ({e.size} bytes)")
    marker.write_text(stamp + "\n")
    return report


def rekey_folder(
    src: Path,
    dst: Path,
    old_key: bytes,
    new_key: bytes,
    cipher: str | None = None,
    workers: int = 1,
    threads: bool = False,
    progress: Progress = _quiet,
) -> Report:
    """Re-encrypt the checkpoint in ``src`` with ``new_key`` (and ``cipher``) into ``dst``, chunk by
    chunk in memory: no plaintext is written anywhere."""
    manifest, _aead, _ = load_manifest(src, old_key)
    if (dst / fm.MANIFEST).exists():
        raise EncryptionError(
            f"{dst}: already holds an encrypted checkpoint ({fm.MANIFEST}); give an empty folder"
        )
    new_cipher = cipher or manifest.cipher
    if new_cipher not in fm.CIPHERS:
        raise EncryptionError(f"--cipher {new_cipher!r}: give one of {', '.join(fm.CIPHERS)}")
    old_ckey = fm.cipher_key(old_key, manifest.cipher, manifest.salt)
    salt = os.urandom(16)
    new_ckey = fm.cipher_key(new_key, new_cipher, salt)
    headers = [check_file(src, manifest, e) for e in manifest.files]
    new_headers = [
        fm.Header(new_cipher, manifest.chunk_size, salt, e.file_id, e.size) for e in manifest.files
    ]
    for e, nh in zip(manifest.files, new_headers, strict=True):
        part = dst / (e.path + fm.SUFFIX + PARTIAL)
        _create(part, nh.encrypted_size)
        _pwrite(str(part), nh.pack(), 0)

    def tasks() -> Iterator[Task]:
        for e, h, nh in zip(manifest.files, headers, new_headers, strict=True):
            enc = str(src / (e.path + fm.SUFFIX))
            part = str(dst / (e.path + fm.SUFFIX + PARTIAL))
            for i in range(h.chunks):
                yield ("rekey", manifest.cipher, old_ckey, new_cipher, new_ckey, enc, part, h, nh, e.path, i)

    report = Report(files=len(manifest.files), plaintext_bytes=sum(e.size for e in manifest.files))
    with Runner(workers, threads) as runner:
        results = runner.map(tasks())
        for e, h in zip(manifest.files, headers, strict=True):
            digests = [d or b"" for _, d in zip(range(h.chunks), results, strict=False)]
            report.chunks += h.chunks
            if not fm.same_digest(fm.tree_digest(digests), e.digest):
                raise EncryptionError(
                    f"{e.path}: its plaintext digest does not match the manifest's {e.digest}"
                )
            os.replace(dst / (e.path + fm.SUFFIX + PARTIAL), dst / (e.path + fm.SUFFIX))
            progress(f"re-keyed {e.path}")
    new_manifest = fm.Manifest(new_cipher, manifest.chunk_size, salt, fm.key_id(new_key), manifest.files)
    _atomic_write(dst / fm.MANIFEST, fm.seal_manifest(new_manifest, fm.Aead(new_cipher, new_ckey)))
    return report

"""The ``keygen``, ``encrypt`` (and ``encrypt --rekey``) and ``decrypt`` commands."""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from deepseek_operator.encryption import folder
from deepseek_operator.encryption import format as fm
from deepseek_operator.encryption.format import EncryptionError

_SIZE = re.compile(r"^(\d+)([KMG]i?B?|B)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``4MiB``, ``64KiB``, ``1GiB`` or a plain number."""
    m = _SIZE.match(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size; write e.g. 4MiB, 64KiB or 1048576")
    unit = (m[2] or "B").upper()[0]
    return int(m[1]) * {"B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[unit]


def read_key(path: str) -> bytes:
    try:
        return fm.parse_key(Path(path).read_text(encoding="ascii", errors="replace"), path)
    except FileNotFoundError:
        raise EncryptionError(
            f"--key-file {path}: no such file; make one with 'deepseek-operator keygen'"
        ) from None
    except OSError as e:
        raise EncryptionError(f"--key-file {path}: cannot read it ({e.strerror})") from e


def _say(message: str) -> None:
    print(f"deepseek-operator: {message}", file=sys.stderr, flush=True)


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / 1e9:.3f} GB in {seconds:.1f} s ({nbytes / 1e9 / max(seconds, 1e-9):.2f} GB/s)"


def cmd_keygen(args: argparse.Namespace) -> int:
    key = fm.new_key()
    text = fm.format_key(key)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    _say(f"new weights key, key id {fm.key_id(key)}")
    return 0


def cmd_encrypt(args: argparse.Namespace) -> int:
    workers = args.workers or folder.default_workers()
    start = time.monotonic()
    progress = _say if args.verbose else folder._quiet
    if args.rekey:
        if not args.new_key_file:
            raise EncryptionError("encrypt --rekey: give --new-key-file, the key to encrypt with from now on")
        report = folder.rekey_folder(
            Path(args.src),
            Path(args.dst),
            read_key(args.key_file),
            read_key(args.new_key_file),
            args.cipher,
            workers,
            args.threads,
            progress,
        )
        _say(f"re-keyed {report.files} files, {_rate(report.plaintext_bytes, time.monotonic() - start)}")
        return 0
    report = folder.encrypt_folder(
        Path(args.src),
        Path(args.dst),
        read_key(args.key_file),
        args.cipher or "sm4-gcm",
        args.chunk_size,
        workers,
        args.threads,
        progress,
        args.if_missing,
    )
    if report.skipped:
        _say(f"{args.dst} already holds a checkpoint encrypted with this key: nothing to do")
        return 0
    resumed = (
        f", {report.resumed_chunks} chunks kept from an interrupted run" if report.resumed_chunks else ""
    )
    _say(
        f"encrypted {report.files} files, {_rate(report.plaintext_bytes, time.monotonic() - start)}{resumed}"
    )
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    workers = args.workers or folder.default_workers()
    start = time.monotonic()
    report = folder.decrypt_folder(
        Path(args.src),
        Path(args.dst),
        read_key(args.key_file),
        workers,
        args.threads,
        args.verify_digests,
        _say if args.verbose else folder._quiet,
        args.cipher,
        tuple(args.exclude or ()),
    )
    if report.skipped:
        _say(f"{args.dst} already holds this checkpoint ({report.files} files): nothing to do")
    else:
        _say(
            f"decrypted {report.files} files with {workers} workers, "
            f"{_rate(report.plaintext_bytes, time.monotonic() - start)}"
        )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the folder to read")
    p.add_argument("dst", help="the folder to write")
    p.add_argument("--key-file", required=True, help="the weights key (made by 'deepseek-operator keygen')")
    p.add_argument(
        "--workers", type=int, default=0, help="chunks processed at once (default: the usable cores)"
    )
    p.add_argument("--threads", action="store_true", help="use threads instead of processes for the workers")
    p.add_argument("--verbose", "-v", action="store_true", help="print each file")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``keygen``, ``encrypt`` and ``decrypt`` to the main command's subcommands."""
    keygen = sub.add_parser("keygen", help="make a new weights key (32 random bytes, docs/encryption.md)")
    keygen.add_argument("--output", "-o", help="write the key to this new file (mode 0600); default stdout")
    keygen.set_defaults(func=cmd_keygen)

    enc = sub.add_parser(
        "encrypt",
        help="encrypt a checkpoint folder file by file in authenticated chunks (resumable); "
        "--rekey re-encrypts an encrypted one with a new key",
    )
    _common(enc)
    enc.add_argument(
        "--cipher", choices=sorted(fm.CIPHERS), help="default sm4-gcm (--rekey: keep the cipher)"
    )
    enc.add_argument("--chunk-size", type=parse_size, default=fm.DEFAULT_CHUNK, help="default 4MiB")
    enc.add_argument("--rekey", action="store_true", help="SRC is encrypted with --key-file: re-encrypt it")
    enc.add_argument("--new-key-file", help="with --rekey: the new key")
    enc.add_argument(
        "--if-missing",
        action="store_true",
        help="nothing to do when DST already holds a checkpoint encrypted with this key",
    )
    enc.set_defaults(func=cmd_encrypt)

    dec = sub.add_parser("decrypt", help="decrypt an encrypted checkpoint folder (refuses any tampering)")
    _common(dec)
    dec.add_argument(
        "--verify-digests",
        action="store_true",
        help="also check each file's plaintext SHA-256 digest against the manifest",
    )
    dec.add_argument(
        "--cipher", choices=sorted(fm.CIPHERS), help="refuse a checkpoint encrypted with another cipher"
    )
    dec.add_argument(
        "--exclude",
        action="append",
        metavar="PATTERN",
        help="leave out files whose path or name matches this shell pattern (repeatable), e.g. '*.bin'",
    )
    dec.set_defaults(func=cmd_decrypt)

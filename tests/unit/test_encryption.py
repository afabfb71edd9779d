"""The encrypted checkpoint format: round trips, tampering refused with a message naming what is
wrong, wrong keys, resuming, re-keying, the commands, and SM4's known-answer vector."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from deepseek_operator.__main__ import main
from deepseek_operator.encryption import folder
from deepseek_operator.encryption import format as fm
from deepseek_operator.encryption.format import EncryptionError

pytestmark = pytest.mark.unit

CHUNK = 64  # small chunks: many chunks from small files, quick tests
CIPHERS = sorted(fm.CIPHERS)


def test_sm4_known_answer_vector_of_gb_t_32907_2016() -> None:
    # GB/T 32907-2016, Appendix A, example 1: key = plaintext = 0123456789abcdeffedcba9876543210.
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    assert (enc.update(key) + enc.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"


def test_sm4_gcm_is_sm4_in_counter_mode() -> None:
    # The first GCM data block is E_K(IV || 00000002) XOR plaintext (NIST SP 800-38D, 7.1):
    # the AEAD really runs SM4, checked against the plain block cipher.
    key, nonce, block = os.urandom(16), os.urandom(12), os.urandom(16)
    record = fm.Aead("sm4-gcm", key).seal(block, b"", nonce=nonce)
    ecb = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    keystream = ecb.update(nonce + b"\x00\x00\x00\x02")
    assert record[fm.NONCE_SIZE : fm.NONCE_SIZE + 16] == bytes(
        a ^ b for a, b in zip(block, keystream, strict=True)
    )


def _tree(root: Path, sizes: dict[str, int]) -> Path:
    for rel, size in sizes.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size))
    return root


def _same(a: Path, b: Path) -> None:
    files_a = {p.relative_to(a).as_posix(): p.read_bytes() for p in a.rglob("*") if p.is_file()}
    files_b = {
        p.relative_to(b).as_posix(): p.read_bytes()
        for p in b.rglob("*")
        if p.is_file() and p.name != folder.DECRYPTED
    }
    assert files_a == files_b


SIZES = {
    "config.json": 0,
    "tokenizer.json": 1,
    "a/short.bin": CHUNK - 1,
    "a/exact.bin": CHUNK,
    "a/b/over.bin": CHUNK + 1,
    "a/b/c/several.safetensors": 5 * CHUNK + 7,
    "many/x0": 300,
    "many/x1": 2 * CHUNK,
}


@pytest.mark.parametrize("cipher", CIPHERS)
def test_round_trip_of_a_folder_tree(tmp_path: Path, cipher: str) -> None:
    src = _tree(tmp_path / "src", SIZES)
    key = fm.new_key()
    report = folder.encrypt_folder(src, tmp_path / "enc", key, cipher, CHUNK)
    assert report.files == len(SIZES)
    assert report.chunks == sum(fm.chunk_count(s, CHUNK) for s in SIZES.values())
    enc = tmp_path / "enc"
    for rel, size in SIZES.items():
        encrypted = (enc / (rel + fm.SUFFIX)).read_bytes()
        assert len(encrypted) == fm.HEADER_SIZE + fm.chunk_count(size, CHUNK) * fm.RECORD_OVERHEAD + size
        plain = (src / rel).read_bytes()
        if len(plain) >= 16:
            assert plain[:16] not in encrypted  # no plaintext in the clear
    assert not (enc / folder.STATE).exists() and not (enc / folder.DONE).exists()
    folder.decrypt_folder(enc, tmp_path / "out", key, verify_digests=True)
    _same(src, tmp_path / "out")


@pytest.mark.parametrize(("workers", "threads"), [(2, False), (3, True)])
def test_round_trip_with_parallel_workers(tmp_path: Path, workers: int, threads: bool) -> None:
    src = _tree(tmp_path / "src", {"w.bin": 40 * CHUNK + 3, "x/y.bin": 11 * CHUNK})
    key = fm.new_key()
    folder.encrypt_folder(src, tmp_path / "enc", key, "aes-256-gcm", CHUNK, workers, threads)
    folder.decrypt_folder(tmp_path / "enc", tmp_path / "out", key, workers, threads, verify_digests=True)
    _same(src, tmp_path / "out")


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=4),
    chunk=st.integers(fm.MIN_CHUNK, 200),
    cipher=st.sampled_from(CIPHERS),
)
def test_round_trip_over_sizes_and_chunk_boundaries(sizes: list[int], chunk: int, cipher: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        src = _tree(root / "src", {f"f{i}": s for i, s in enumerate(sizes)})
        key = fm.new_key()
        report = folder.encrypt_folder(src, root / "enc", key, cipher, chunk)
        assert report.chunks == sum(max(1, -(-s // chunk)) for s in sizes)
        folder.decrypt_folder(root / "enc", root / "out", key, verify_digests=True)
        _same(src, root / "out")


# --------------------------------------------------------------------------- tampering


@pytest.fixture(params=CIPHERS)
def encrypted(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes, Path]:
    src = _tree(tmp_path / "src", {"m/w.bin": 4 * CHUNK + 9, "m/v.bin": 4 * CHUNK + 9, "cfg": 5})
    key = fm.new_key()
    folder.encrypt_folder(src, tmp_path / "enc", key, request.param, CHUNK)
    return tmp_path / "enc", key, tmp_path


def _record(h: fm.Header, i: int) -> tuple[int, int]:
    start = h.record_offset(i)
    return start, start + h.chunk_length(i) + fm.RECORD_OVERHEAD


def _header(path: Path) -> fm.Header:
    return fm.unpack_header(path.read_bytes()[: fm.HEADER_SIZE], str(path))


def _refused(enc: Path, key: bytes, out: Path, *words: str) -> str:
    with pytest.raises(EncryptionError) as e:
        folder.decrypt_folder(enc, out, key)
    for w in words:
        assert w in str(e.value), str(e.value)
    return str(e.value)


@pytest.mark.parametrize("index", [0, 2, 4])
@pytest.mark.parametrize("where", ["nonce", "ciphertext", "tag"])
def test_a_flipped_bit_in_any_chunk_is_named(
    encrypted: tuple[Path, bytes, Path], index: int, where: str
) -> None:
    enc, key, tmp = encrypted
    path = enc / "m/w.bin.enc"
    h = _header(path)
    start, end = _record(h, index)
    at = {"nonce": start + 3, "ciphertext": start + fm.NONCE_SIZE + 1, "tag": end - 2}[where]
    data = bytearray(path.read_bytes())
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    _refused(enc, key, tmp / "out", "m/w.bin.enc", f"chunk {index} of 5", "authentication failed")


def test_a_flipped_bit_in_the_header_is_refused(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    path = enc / "cfg.enc"
    data = bytearray(path.read_bytes())
    data[12] ^= 0x01  # chunk size
    path.write_bytes(bytes(data))
    _refused(enc, key, tmp / "out", "cfg.enc", "does not match the manifest")


def test_swapped_chunks_are_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    path = enc / "m/w.bin.enc"
    h = _header(path)
    data = bytearray(path.read_bytes())
    (a0, a1), (b0, b1) = _record(h, 1), _record(h, 2)
    data[a0:a1], data[b0:b1] = data[b0:b1], data[a0:a1]
    path.write_bytes(bytes(data))
    _refused(enc, key, tmp / "out", "m/w.bin.enc", "chunk 1 of 5", "authentication failed")


@pytest.mark.parametrize("cut", ["last chunk", "inside a chunk", "to the header"])
def test_a_truncated_file_is_named(encrypted: tuple[Path, bytes, Path], cut: str) -> None:
    enc, key, tmp = encrypted
    path = enc / "m/w.bin.enc"
    h = _header(path)
    keep = {"last chunk": _record(h, 4)[0], "inside a chunk": _record(h, 2)[0] + 5, "to the header": 64}[cut]
    path.write_bytes(path.read_bytes()[:keep])
    chunk = {"last chunk": 4, "inside a chunk": 2, "to the header": 0}[cut]
    _refused(enc, key, tmp / "out", "m/w.bin.enc", "truncated", f"chunk {chunk} of 5")


def test_appended_data_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    path = enc / "cfg.enc"
    path.write_bytes(path.read_bytes() + b"x" * 44)
    _refused(enc, key, tmp / "out", "cfg.enc", "44 bytes more")


def test_a_chunk_moved_between_files_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    a, b = enc / "m/w.bin.enc", enc / "m/v.bin.enc"  # same sizes: the record fits exactly
    h = _header(a)
    start, end = _record(h, 3)
    data = bytearray(b.read_bytes())
    data[start:end] = a.read_bytes()[start:end]
    b.write_bytes(bytes(data))
    _refused(enc, key, tmp / "out", "m/v.bin.enc", "chunk 3 of 5", "authentication failed")


def test_a_whole_file_swapped_for_another_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    shutil.copy(enc / "m/w.bin.enc", enc / "m/v.bin.enc")
    _refused(enc, key, tmp / "out", "m/v.bin.enc", "another file or another encryption run")


def test_an_edited_manifest_is_refused(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    manifest = json.loads((enc / fm.MANIFEST).read_text())
    manifest["files"][0]["size"] += 1
    (enc / fm.MANIFEST).write_text(json.dumps(manifest))
    _refused(enc, key, tmp / "out", fm.MANIFEST, "authentication tag does not match", "changed or replaced")


def test_a_manifest_replaced_by_another_runs_is_refused(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    # The same files encrypted again with the same key: a valid manifest, but of another run.
    folder.encrypt_folder(
        tmp / "src",
        tmp / "enc2",
        key,
        fm.read_manifest((enc / fm.MANIFEST).read_bytes(), key)[0].cipher,
        CHUNK,
    )
    shutil.copy(tmp / "enc2" / fm.MANIFEST, enc / fm.MANIFEST)
    _refused(enc, key, tmp / "out", "another file or another encryption run", "manifest was replaced")


def test_a_missing_manifest_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    (enc / fm.MANIFEST).unlink()
    _refused(enc, key, tmp / "out", fm.MANIFEST, "missing")


def test_a_missing_file_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    (enc / "cfg.enc").unlink()
    _refused(enc, key, tmp / "out", "cfg.enc", "missing", "manifest lists it")


def test_an_unknown_format_version_is_named(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    manifest = json.loads((enc / fm.MANIFEST).read_text())
    manifest["version"] = 7
    (enc / fm.MANIFEST).write_text(json.dumps(manifest))
    _refused(enc, key, tmp / "out", "format version 7 is unknown")
    header = bytearray((enc / "cfg.enc").read_bytes()[: fm.HEADER_SIZE])
    header[9] = 2  # version u16 big-endian at bytes 8..9
    with pytest.raises(EncryptionError, match=r"cfg\.enc: format version 2 is unknown"):
        fm.unpack_header(bytes(header), "cfg.enc")


def test_the_wrong_key_is_refused_by_name(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    other = fm.new_key()
    message = _refused(enc, other, tmp / "out", "wrong key", fm.key_id(key), fm.key_id(other))
    assert key.hex() not in message and other.hex() not in message
    assert not (tmp / "out").exists()  # nothing written


def test_a_manifest_path_outside_the_folder_is_refused(tmp_path: Path) -> None:
    key = fm.new_key()
    manifest = fm.Manifest(
        "aes-256-gcm",
        CHUNK,
        os.urandom(16),
        fm.key_id(key),
        (fm.FileEntry("../escape", os.urandom(16), 1, "x"),),
    )
    aead = fm.Aead("aes-256-gcm", fm.cipher_key(key, "aes-256-gcm", manifest.salt))
    with pytest.raises(EncryptionError, match="leaves the folder"):
        fm.read_manifest(fm.seal_manifest(manifest, aead), key)


# --------------------------------------------------------------------------- decrypt once, rekey, resume


def test_a_second_decrypt_into_the_same_folder_does_nothing(encrypted: tuple[Path, bytes, Path]) -> None:
    enc, key, tmp = encrypted
    assert not folder.decrypt_folder(enc, tmp / "out", key).skipped
    assert folder.decrypt_folder(enc, tmp / "out", key).skipped
    _same(tmp / "src", tmp / "out")


@pytest.mark.parametrize("new_cipher", CIPHERS)
def test_rekey_without_plaintext_on_disk(encrypted: tuple[Path, bytes, Path], new_cipher: str) -> None:
    enc, key, tmp = encrypted
    new = fm.new_key()
    folder.rekey_folder(enc, tmp / "rekeyed", key, new, new_cipher)
    written = [p for p in (tmp / "rekeyed").rglob("*") if p.is_file()]
    assert all(p.name == fm.MANIFEST or p.name.endswith(fm.SUFFIX) for p in written)
    _refused(tmp / "rekeyed", key, tmp / "old", "wrong key")
    folder.decrypt_folder(tmp / "rekeyed", tmp / "out", new, verify_digests=True)
    _same(tmp / "src", tmp / "out")


def test_an_interrupted_encryption_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _tree(tmp_path / "src", {"a.bin": 6 * CHUNK, "b.bin": 9 * CHUNK + 1, "c.bin": 3})
    key = fm.new_key()
    real = folder._run_task
    calls = {"enc": 0}

    def dying(task: folder.Task) -> bytes | None:
        if task[0] == "enc":
            calls["enc"] += 1
            if calls["enc"] > 10:  # a.bin done, b.bin 4 chunks in
                raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(folder, "_run_task", dying)
    with pytest.raises(KeyboardInterrupt):
        folder.encrypt_folder(src, tmp_path / "enc", key, "sm4-gcm", CHUNK)
    monkeypatch.setattr(folder, "_run_task", real)
    assert not (tmp_path / "enc" / fm.MANIFEST).exists()
    assert (tmp_path / "enc" / "a.bin.enc").exists() and (tmp_path / "enc" / "b.bin.enc.partial").exists()
    # A chunk of the partial file damaged meanwhile (a torn write): redone from there.
    part = tmp_path / "enc" / "b.bin.enc.partial"
    data = bytearray(part.read_bytes())
    data[fm.HEADER_SIZE + 3 * (CHUNK + fm.RECORD_OVERHEAD) + 20] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(EncryptionError, match="interrupted encryption with cipher sm4-gcm"):
        folder.encrypt_folder(src, tmp_path / "enc", key, "aes-256-gcm", CHUNK)
    report = folder.encrypt_folder(src, tmp_path / "enc", key, "sm4-gcm", CHUNK)
    assert report.resumed_chunks == 6 + 3  # a.bin whole, b.bin's first three chunks
    assert report.chunks == (10 - 3) + 1
    folder.decrypt_folder(tmp_path / "enc", tmp_path / "out", key, verify_digests=True)
    _same(src, tmp_path / "out")


def test_memory_in_flight_is_bounded_by_the_window(tmp_path: Path) -> None:
    # The runner keeps at most 2 x workers tasks submitted: a generator of tasks is consumed lazily.
    pulled: list[int] = []
    (tmp_path / "none").write_bytes(bytes(200))  # records that do not verify: "check" gives None

    def tasks() -> folder.Iterator[folder.Task]:
        for i in range(50):
            pulled.append(i)
            yield (
                "check",
                "aes-256-gcm",
                os.urandom(32),
                str(tmp_path / "none"),
                fm.Header("aes-256-gcm", 16, bytes(16), bytes(16), 16),
                "none",
                0,
            )

    with folder.Runner(3, threads=True) as runner:
        results = runner.map(tasks())
        assert next(results) is None
        assert len(pulled) <= 2 * 3 + 1


# --------------------------------------------------------------------------- keys and commands


def test_key_file_format(tmp_path: Path) -> None:
    key = fm.new_key()
    text = fm.format_key(key)
    assert text.startswith("dso-weights-key-v1:") and len(text.strip()) == len("dso-weights-key-v1:") + 64
    assert fm.parse_key(text, "k") == key
    with pytest.raises(EncryptionError, match=r"k: not a weights key.*deepseek-operator keygen"):
        fm.parse_key(key.hex(), "k")


def test_commands_keygen_encrypt_decrypt_rekey(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _tree(tmp_path / "src", {"w.bin": 3000, "d/t.json": 10})
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    assert main(["keygen", "-o", str(k1)]) == 0
    assert main(["keygen", "-o", str(k2)]) == 0
    assert stat.S_IMODE(k1.stat().st_mode) == 0o600
    assert "key id " + fm.key_id(fm.parse_key(k1.read_text(), "k1")) in capsys.readouterr().err
    enc, out = tmp_path / "enc", tmp_path / "out"
    assert (
        main(["encrypt", str(src), str(enc), "--key-file", str(k1), "--chunk-size", "1KiB", "--workers", "1"])
        == 0
    )
    assert (
        fm.read_manifest((enc / fm.MANIFEST).read_bytes(), fm.parse_key(k1.read_text(), "k1"))[0].chunk_size
        == 1024
    )
    assert main(["decrypt", str(enc), str(out), "--key-file", str(k2), "--workers", "1"]) == 2
    assert "wrong key" in capsys.readouterr().err
    assert (
        main(
            [
                "encrypt",
                "--rekey",
                str(enc),
                str(tmp_path / "re"),
                "--key-file",
                str(k1),
                "--new-key-file",
                str(k2),
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "decrypt",
                str(tmp_path / "re"),
                str(out),
                "--key-file",
                str(k2),
                "--verify-digests",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    _same(src, out)
    assert main(["decrypt", str(enc), str(out), "--key-file", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_symbolic_links_to_files_are_encrypted_as_their_content(tmp_path: Path) -> None:
    # A Hugging Face cache snapshot is symbolic links into its blobs folder.
    blobs = _tree(tmp_path / "blobs", {"abc123": 3 * CHUNK + 1})
    src = tmp_path / "snapshot"
    src.mkdir()
    (src / "model.safetensors").symlink_to(blobs / "abc123")
    key = fm.new_key()
    folder.encrypt_folder(src, tmp_path / "enc", key, "aes-256-gcm", CHUNK)
    folder.decrypt_folder(tmp_path / "enc", tmp_path / "out", key)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (blobs / "abc123").read_bytes()
    (src / "gone").symlink_to(tmp_path / "nothing")
    with pytest.raises(EncryptionError, match="gone: a broken symbolic link"):
        folder.encrypt_folder(src, tmp_path / "enc2", key, "aes-256-gcm", CHUNK)


def test_the_destination_must_be_outside_the_source(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"a": 10})
    for dst in (src, src / "enc"):
        with pytest.raises(EncryptionError, match="must be a folder outside the source"):
            folder.encrypt_folder(src, dst, fm.new_key(), "sm4-gcm", CHUNK)


def test_decrypt_can_leave_out_files_and_encrypt_if_missing_is_idempotent(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", {"w/model.safetensors": 300, "tokenizer.json": 20, "config.json": 5})
    key = fm.new_key()
    enc = tmp_path / "enc"
    folder.encrypt_folder(src, enc, key, "sm4-gcm", CHUNK)
    out = tmp_path / "out"
    folder.decrypt_folder(enc, out, key, exclude=("*.safetensors",))
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [
        folder.DECRYPTED,
        "config.json",
        "tokenizer.json",
    ]
    # Another selection into the same folder is not taken for the one already there.
    assert not folder.decrypt_folder(enc, out, key).skipped
    assert (out / "w/model.safetensors").read_bytes() == (src / "w/model.safetensors").read_bytes()
    assert folder.encrypt_folder(src, enc, key, "sm4-gcm", CHUNK, if_missing=True).skipped
    with pytest.raises(EncryptionError, match="wrong key"):
        folder.encrypt_folder(src, enc, fm.new_key(), "sm4-gcm", CHUNK, if_missing=True)

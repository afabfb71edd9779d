"""Decrypt a real SM4-GCM encrypted checkpoint (docs/encryption.md's format) on an NVIDIA GPU, files
to files, and compare with the source: what a GPU decrypt path in the pod would deliver.

Makes a synthetic checkpoint of random data (``--gib`` GiB in 4 GiB files), encrypts it with the
operator's own ``encrypt_folder`` (SM4-GCM, every core), then decrypts it with the kernels of
:mod:`gpu_sm4` (SM4-CTR + GHASH, the tags checked against each record's), batch by batch: records
read with ``pread`` by a thread pool into pinned memory, copied to the GPU, ciphertext gathered on
the GPU, decrypted, copied back and written with ``pwrite`` into ``--out`` (default /dev/shm), while
the next batch is read. Final chunks shorter than the chunk size go through the CPU path. Then
checks every output file against its source and, for reference, times the CPU ``decrypt_folder``.

Usage (a GPU machine with CuPy and ``cryptography``)::

    python3 bench/gpu_decrypt.py --gib 24 --dir /root/b --out /dev/shm
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import cupy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator" / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_sm4 import SOURCE, round_keys, t_table

from deepseek_operator.encryption import folder
from deepseek_operator.encryption import format as fm


class GpuSm4Gcm:
    """SM4-GCM decryption of equal-length chunks, ``batch`` at a time."""

    def __init__(self, key: bytes, chunk: int, aad_len: int, batch: int) -> None:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: PLC0415

        mod = cp.RawModule(code=SOURCE, options=("-std=c++17",))
        self.ctr, self.gh = mod.get_function("sm4_ctr"), mod.get_function("ghash")
        self.rk = cp.asarray(np.array(round_keys(key), dtype=np.uint32))
        self.table = cp.asarray(t_table())
        self.chunk, self.batch = chunk, batch
        self.nblocks, self.ablocks = chunk // 16, (aad_len + 15) // 16
        self.aad_len = aad_len
        h = Cipher(algorithms.SM4(key), modes.ECB()).encryptor().update(bytes(16))
        d_h = cp.asarray(
            np.array([int.from_bytes(h[:8], "big"), int.from_bytes(h[8:], "big")], dtype=np.uint64)
        )
        m = self.ablocks + self.nblocks + 1
        self.powers = cp.empty(2 * m, dtype=np.uint64)
        mod.get_function("h_powers")(((m + 255) // 256,), (256,), (d_h, self.powers, np.int32(m)))
        lens = ((aad_len * 8).to_bytes(8, "big") + (chunk * 8).to_bytes(8, "big")) * batch
        self.lens = cp.asarray(np.frombuffer(lens, dtype=np.uint64))
        rec = chunk + fm.RECORD_OVERHEAD
        self.d_rec = cp.empty((batch, rec), dtype=np.uint8)
        self.d_out = cp.empty((batch, chunk), dtype=np.uint8)
        self.ej0 = cp.empty((batch, 4), dtype=np.uint32)
        self.acc = cp.zeros((batch, 2), dtype=np.uint64)

    def decrypt(self, records: np.ndarray, aads: bytes, n: int, out: np.ndarray) -> list[bool]:
        """Decrypt ``n`` records (rows of ``records``) into ``out``; whether each tag verified."""
        self.d_rec[:n].set(records[:n])
        ct = cp.ascontiguousarray(self.d_rec[:n, fm.NONCE_SIZE : fm.NONCE_SIZE + self.chunk])
        nonces = cp.ascontiguousarray(self.d_rec[:n, : fm.NONCE_SIZE]).view(np.uint32)
        d_aad = cp.asarray(np.frombuffer(aads, dtype=np.uint64))
        self.acc[:n].fill(0)
        threads = 256
        self.gh(
            (64, n),
            (threads,),
            (ct, d_aad, self.lens, self.powers, self.acc, np.int32(self.nblocks), np.int32(self.ablocks)),
        )
        self.ctr(
            (((self.nblocks + 1) * n + threads - 1) // threads,),
            (threads,),
            (ct, self.d_out, nonces, self.ej0, self.rk, self.table, np.int32(self.nblocks), np.int32(n)),
        )
        self.d_out[:n].get(out=out[:n])
        acc, ej0 = self.acc[:n].get(), self.ej0[:n].get()
        ok = []
        for i in range(n):
            x = int(acc[i][0]).to_bytes(8, "big") + int(acc[i][1]).to_bytes(8, "big")
            tag = bytes(a ^ b for a, b in zip(x, ej0[i].tobytes(), strict=True))
            ok.append(tag == records[i, -fm.TAG_SIZE :].tobytes())
        return ok


def gpu_decrypt(enc: Path, dst: Path, key: bytes, batch: int, threads: int) -> float:
    manifest, _aead, _ = folder.load_manifest(enc, key)
    assert manifest.cipher == "sm4-gcm"
    ckey = fm.cipher_key(key, "sm4-gcm", manifest.salt)
    cs = manifest.chunk_size
    jobs, small = [], []
    for e in manifest.files:
        h = folder.check_file(enc, manifest, e)
        out = dst / e.path
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            f.truncate(e.size)
        for i in range(h.chunks):
            (jobs if h.chunk_length(i) == cs else small).append((e, h, i))
    aad_len = len(fm.chunk_aad(manifest.header(manifest.files[0]).pack(), "x", 0, False))
    start = time.perf_counter()
    gpu = GpuSm4Gcm(ckey, cs, aad_len, batch)
    rec = cs + fm.RECORD_OVERHEAD
    pinned = [cp.cuda.alloc_pinned_memory(batch * rec) for _ in range(2)]
    bufs = [np.frombuffer(p, dtype=np.uint8, count=batch * rec).reshape(batch, rec) for p in pinned]
    outs_p = [cp.cuda.alloc_pinned_memory(batch * cs) for _ in range(2)]
    outs = [np.frombuffer(p, dtype=np.uint8, count=batch * cs).reshape(batch, cs) for p in outs_p]
    pool, wpool, writer = (
        cf.ThreadPoolExecutor(threads),
        cf.ThreadPoolExecutor(threads),
        cf.ThreadPoolExecutor(1),
    )

    def read(buf: np.ndarray, group: list) -> None:
        def one(k: int) -> None:
            e, h, i = group[k]
            fd = os.open(enc / (e.path + fm.SUFFIX), os.O_RDONLY)
            try:
                assert os.preadv(fd, [memoryview(buf[k])], h.record_offset(i)) == rec
            finally:
                os.close(fd)

        list(pool.map(one, range(len(group))))

    def write(out: np.ndarray, group: list) -> None:
        def one(k: int) -> None:
            e, h, i = group[k]
            fd = os.open(dst / e.path, os.O_WRONLY)
            try:
                assert os.pwritev(fd, [memoryview(out[k])], h.plain_offset(i)) == cs
            finally:
                os.close(fd)

        list(wpool.map(one, range(len(group))))

    groups = [jobs[i : i + batch] for i in range(0, len(jobs), batch)]
    writing: cf.Future | None = None
    if groups:
        read(bufs[0], groups[0])
    for g, group in enumerate(groups):
        cur = g % 2
        aads = b"".join(
            fm.chunk_aad(h.pack(), e.path, i, i == h.chunks - 1).ljust(gpu.ablocks * 16, b"\0")
            for e, h, i in group
        )
        if writing is not None:
            writing.result()  # the other output buffer is free again
        ok = gpu.decrypt(bufs[cur], aads, len(group), outs[cur])
        for k, good in enumerate(ok):
            if not good:
                e, h, i = group[k]
                raise fm.EncryptionError(
                    f"{e.path}{fm.SUFFIX}: chunk {i} of {h.chunks}: authentication failed"
                )
        writing = writer.submit(write, outs[cur], group)
        if g + 1 < len(groups):
            read(bufs[1 - cur], groups[g + 1])
    if writing is not None:
        writing.result()
    for ex in (pool, wpool, writer):
        ex.shutdown()
    for e, h, i in small:
        folder._run_task(
            ("dec", "sm4-gcm", ckey, str(enc / (e.path + fm.SUFFIX)), str(dst / e.path), h, e.path, i, False)
        )
    return time.perf_counter() - start


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(64 << 20):
            h.update(piece)
    return h.hexdigest()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--gib", type=float, default=24)
    p.add_argument("--dir", default="/root/gpu-decrypt")
    p.add_argument("--out", default="/dev/shm")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=16)
    args = p.parse_args()
    work, out = Path(args.dir), Path(args.out) / "gpu-plain"
    for d in (work, out):
        shutil.rmtree(d, ignore_errors=True)
    src, enc = work / "src", work / "enc"
    src.mkdir(parents=True)
    size = int(args.gib * (1 << 30))
    files = max(1, round(args.gib / 4))
    block = os.urandom(64 << 20)
    for i in range(files):
        with open(src / f"model-{i:05d}.safetensors", "wb") as f:
            left = size // files + (12345 if i == 0 else 0)  # a short last chunk in one file
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))
    (src / "config.json").write_text('{"model_type": "deepseek"}')
    key = fm.new_key()
    t0 = time.perf_counter()
    folder.encrypt_folder(src, enc, key, "sm4-gcm", fm.DEFAULT_CHUNK, folder.default_workers())
    print(f"encrypted {size / 1e9:.1f} GB on the CPU in {time.perf_counter() - t0:.1f} s", flush=True)
    total = sum(e.size for e in folder.load_manifest(enc, key)[0].files)
    gpu_decrypt(enc, out, key, args.batch, args.threads)  # warm-up: module load, page cache
    shutil.rmtree(out)
    took = gpu_decrypt(enc, out, key, args.batch, args.threads)
    print(
        f"GPU decrypt, files to {args.out}: {total / 1e9:.1f} GB in {took:.1f} s = "
        f"{total / 1e9 / took:.2f} GB/s",
        flush=True,
    )
    for f in sorted(src.rglob("*")):
        if f.is_file():
            assert digest(f) == digest(out / f.relative_to(src)), f"{f}: GPU output differs from the source"
    print("every decrypted file equals its source", flush=True)
    shutil.rmtree(out)
    t0 = time.perf_counter()
    folder.decrypt_folder(enc, out, key, folder.default_workers())
    took = time.perf_counter() - t0
    print(
        f"CPU decrypt ({folder.default_workers()} processes), same files: {total / 1e9 / took:.2f} GB/s",
        flush=True,
    )
    # A tampered chunk is refused by the GPU path too.
    target = enc / "model-00000.safetensors.enc"
    with open(target, "r+b") as f:
        f.seek(fm.HEADER_SIZE + 3 * (fm.DEFAULT_CHUNK + fm.RECORD_OVERHEAD) + 100)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    shutil.rmtree(out)
    try:
        gpu_decrypt(enc, out, key, args.batch, args.threads)
        print("TAMPERED CHUNK NOT DETECTED")
        return 1
    except fm.EncryptionError as e:
        print(f"tampered chunk refused on the GPU path: {e}")
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

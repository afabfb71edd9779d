"""SM4-GCM on an NVIDIA GPU (CuPy raw kernels): is the GPU a way to decrypt a checkpoint faster
than the node's cores?

Implements GB/T 32907-2016 SM4 (one 256-entry T-table in shared memory) in counter mode as GCM
uses it (NIST SP 800-38D: J0 = IV || 0^31 || 1, data counters from inc32(J0)) and GHASH as the sum
of each block times a power of H (H^1..H^m precomputed once per key), a block per thread, reduced
with atomicXor. Checks every chunk of a batch, ciphertext and tag, against the ``cryptography``
package's SM4-GCM (OpenSSL), then times:

- the kernels alone on a batch in GPU memory (decrypt = CTR + GHASH of the ciphertext);
- end to end from host memory: pinned host -> GPU, decrypt, GPU -> pinned host.

Usage (on a machine with a GPU, CuPy and ``cryptography``)::

    python3 bench/gpu_sm4.py --chunks 64

The figures are in docs/encryption.md, "Performance".
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import cupy as cp
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SBOX = bytes.fromhex(
    "d690e9fecce13db716b614c228fb2c052b679a762abe04c3aa441326498606999c4250f491ef987a33540b43edcfac62"
    "e4b31ca9c908e89580df94fa758f3fa64707a7fcf37317ba83593c19e6854fa8686b81b27164da8bf8eb0f4b70569d35"
    "1e240e5e6358d1a225227c3b01217887d40046579fd327524c3602e7a0c4c89eeabf8ad240c738b5a3f7f2cef96115a1"
    "e0ae5da49b341a55ad933230f58cb1e31df6e22e8266ca60c02923ab0d534e6fd5db3745defd8e2f03ff6a726d6c5b51"
    "8d1baf92bbddbc7f11d95c411f105ad80ac13188a5cd7bbd2d74d012b8e5b4b08969974a0c96777e65b9f109c56ec684"
    "18f07dec3adc4d2079ee5f3ed7cb3948"
)
FK = (0xA3B1BAC6, 0x56AA3350, 0x677D9197, 0xB27022DC)
CK = tuple(int.from_bytes(bytes(((4 * i + j) * 7) % 256 for j in range(4)), "big") for i in range(32))
M32 = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & M32


def _tau(a: int) -> int:
    return int.from_bytes(bytes(SBOX[b] for b in a.to_bytes(4, "big")), "big")


def round_keys(key: bytes) -> list[int]:
    k = [int.from_bytes(key[4 * i : 4 * i + 4], "big") ^ FK[i] for i in range(4)]
    for i in range(32):
        b = _tau(k[i + 1] ^ k[i + 2] ^ k[i + 3] ^ CK[i])
        k.append(k[i] ^ b ^ _rotl(b, 13) ^ _rotl(b, 23))
    return k[4:]


def t_table() -> np.ndarray:
    def lin(b: int) -> int:
        return b ^ _rotl(b, 2) ^ _rotl(b, 10) ^ _rotl(b, 18) ^ _rotl(b, 24)

    return np.array([lin(SBOX[x] << 24) for x in range(256)], dtype=np.uint32)


SOURCE = r"""
typedef unsigned int u32; typedef unsigned long long u64;
__device__ __forceinline__ u32 rotr(u32 x, int n) { return __funnelshift_r(x, x, n); }
__device__ __forceinline__ u32 bswap(u32 x) { return __byte_perm(x, 0, 0x0123); }
__device__ __forceinline__ void sm4_block(const u32* rk, const u32* T, u32 x[4]) {
  #pragma unroll
  for (int i = 0; i < 32; i++) {
    u32 a = x[1] ^ x[2] ^ x[3] ^ rk[i];
    u32 t = T[a >> 24] ^ rotr(T[(a >> 16) & 0xff], 8) ^ rotr(T[(a >> 8) & 0xff], 16) ^ rotr(T[a & 0xff], 24);
    u32 n = x[0] ^ t; x[0] = x[1]; x[1] = x[2]; x[2] = x[3]; x[3] = n;
  }
  u32 a = x[0], b = x[1]; x[0] = x[3]; x[1] = x[2]; x[2] = b; x[3] = a;
}
// data: chunks x words (u32, the chunk's bytes as stored); nonces: chunks x 3 words (big-endian
// as bytes); out: same shape as data. Block b of chunk c uses counter 2 + b; block -1 (thread
// with b == nblocks) computes E(J0) for the tag.
extern "C" __global__ void sm4_ctr(const u32* __restrict__ data, u32* __restrict__ out,
    const u32* __restrict__ nonces, u32* __restrict__ ej0, const u32* __restrict__ rk_g,
    const u32* __restrict__ T_g, int nblocks, int chunks) {
  __shared__ u32 T[256]; __shared__ u32 rk[32];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) T[i] = T_g[i];
  if (threadIdx.x < 32) rk[threadIdx.x] = rk_g[threadIdx.x];
  __syncthreads();
  long long gid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  long long per = (long long)nblocks + 1;
  if (gid >= per * chunks) return;
  int c = gid / per; int b = gid % per;
  u32 x[4];
  x[0] = bswap(nonces[3 * c]); x[1] = bswap(nonces[3 * c + 1]); x[2] = bswap(nonces[3 * c + 2]);
  x[3] = (b == nblocks) ? 1u : (u32)(b + 2);
  sm4_block(rk, T, x);
  if (b == nblocks) { for (int i = 0; i < 4; i++) ej0[4 * c + i] = bswap(x[i]); return; }
  long long o = ((long long)c * nblocks + b) * 4;
  uint4 d = reinterpret_cast<const uint4*>(data)[o / 4];
  uint4 r; r.x = d.x ^ bswap(x[0]); r.y = d.y ^ bswap(x[1]); r.z = d.z ^ bswap(x[2]); r.w = d.w ^ bswap(x[3]);
  reinterpret_cast<uint4*>(out)[o / 4] = r;
}
__device__ __forceinline__ u64 bswap64(u64 v) {
  return ((u64)bswap((u32)v) << 32) | bswap((u32)(v >> 32));
}
// GF(2^128) product in GCM's bit order (SP 800-38D, Algorithm 1); values as (hi, lo) big-endian.
__device__ __forceinline__ void gmul(u64 xh, u64 xl, u64 yh, u64 yl, u64* zh, u64* zl) {
  u64 h = 0, l = 0, vh = yh, vl = yl;
  #pragma unroll 8
  for (int i = 0; i < 128; i++) {
    u64 bit = (i < 64) ? (xh >> (63 - i)) & 1 : (xl >> (127 - i)) & 1;
    u64 m = 0 - bit; h ^= vh & m; l ^= vl & m;
    u64 lsb = 0 - (vl & 1);
    vl = (vl >> 1) | (vh << 63); vh = (vh >> 1) ^ (0xE100000000000000ULL & lsb);
  }
  *zh = h; *zl = l;
}
// powers[k] = H^(k+1), k < n: thread k by square and multiply.
extern "C" __global__ void h_powers(const u64* hk, u64* powers, int n) {
  int k = blockIdx.x * blockDim.x + threadIdx.x; if (k >= n) return;
  u64 rh = 0, rl = 0, bh = hk[0], bl = hk[1]; bool have = false; unsigned e = k + 1;
  while (e) {
    if (e & 1) { if (have) gmul(rh, rl, bh, bl, &rh, &rl); else { rh = bh; rl = bl; have = true; } }
    e >>= 1; if (e) gmul(bh, bl, bh, bl, &bh, &bl);
  }
  powers[2 * k] = rh; powers[2 * k + 1] = rl;
}
// GHASH of (aad | ciphertext | lengths) per chunk (blockIdx.y): block j times H^(m - j), each
// thread summing a strided share of the chunk's blocks, a warp's sums XOR-reduced, one atomicXor
// per warp into acc.
extern "C" __global__ void ghash(const u64* __restrict__ ct, const u64* __restrict__ aad,
    const u64* __restrict__ lens, const u64* __restrict__ powers, u64* acc, int nblocks, int ablocks) {
  int c = blockIdx.y; int m = ablocks + nblocks + 1;
  int stride = gridDim.x * blockDim.x;
  u64 zh = 0, zl = 0;
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < m; j += stride) {
    const u64* p;
    if (j < ablocks) p = aad + 2 * ((long long)c * ablocks + j);
    else if (j < ablocks + nblocks) p = ct + 2 * ((long long)c * nblocks + (j - ablocks));
    else p = lens + 2 * c;
    u64 ph, pl; int e = m - j;
    gmul(bswap64(p[0]), bswap64(p[1]), powers[2 * (e - 1)], powers[2 * (e - 1) + 1], &ph, &pl);
    zh ^= ph; zl ^= pl;
  }
  for (int off = 16; off; off >>= 1) {
    zh ^= __shfl_down_sync(0xffffffff, zh, off); zl ^= __shfl_down_sync(0xffffffff, zl, off);
  }
  if ((threadIdx.x & 31) == 0) { atomicXor(&acc[2 * c], zh); atomicXor(&acc[2 * c + 1], zl); }
}
"""


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--chunks", type=int, default=64, help="chunks per batch")
    p.add_argument("--chunk-mib", type=int, default=4)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args()
    key = os.urandom(16)
    ecb = Cipher(algorithms.SM4(bytes.fromhex("0123456789abcdeffedcba9876543210")), modes.ECB()).encryptor()
    assert (
        ecb.update(bytes.fromhex("0123456789abcdeffedcba9876543210")).hex()
        == "681edf34d206965e86b3e94f536e4246"
    )
    mod = cp.RawModule(code=SOURCE, options=("-std=c++17",))
    ctr, hpow, gh = mod.get_function("sm4_ctr"), mod.get_function("h_powers"), mod.get_function("ghash")
    rk = cp.asarray(np.array(round_keys(key), dtype=np.uint32))
    table = cp.asarray(t_table())
    size = args.chunk_mib << 20
    nblocks, chunks = size // 16, args.chunks
    aad_len = 105  # the chunk associated data of the format: header 64 + SHA-256 32 + index 8 + flag 1
    ablocks = (aad_len + 15) // 16
    host = np.frombuffer(os.urandom(size * chunks), dtype=np.uint32).reshape(chunks, -1)
    nonces = [os.urandom(12) for _ in range(chunks)]
    aads = [os.urandom(aad_len) for _ in range(chunks)]
    d_nonce = cp.asarray(np.frombuffer(b"".join(nonces), dtype=np.uint32))
    d_aad = cp.asarray(
        np.frombuffer(b"".join(a + bytes(ablocks * 16 - aad_len) for a in aads), dtype=np.uint64)
    )
    lens = b"".join((aad_len * 8).to_bytes(8, "big") + (size * 8).to_bytes(8, "big") for _ in range(chunks))
    d_lens = cp.asarray(np.frombuffer(lens, dtype=np.uint64))
    # H = E_K(0): on the GPU too (a chunk of one zero block through the counter kernel is not it:
    # use the host's SM4 via cryptography ECB).
    enc0 = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    hk = enc0.update(bytes(16))
    d_h = cp.asarray(
        np.array([int.from_bytes(hk[:8], "big"), int.from_bytes(hk[8:], "big")], dtype=np.uint64)
    )
    m = ablocks + nblocks + 1
    powers = cp.empty(2 * m, dtype=np.uint64)
    hpow(((m + 255) // 256,), (256,), (d_h, powers, np.int32(m)))
    d_in = cp.asarray(host)
    d_out = cp.empty_like(d_in)
    ej0 = cp.empty((chunks, 4), dtype=np.uint32)
    acc = cp.zeros((chunks, 2), dtype=np.uint64)
    threads = 256

    def encrypt(src: cp.ndarray, dst: cp.ndarray) -> None:
        ctr(
            (((nblocks + 1) * chunks + threads - 1) // threads,),
            (threads,),
            (src, dst, d_nonce, ej0, rk, table, np.int32(nblocks), np.int32(chunks)),
        )

    def tags(ct: cp.ndarray) -> None:
        acc.fill(0)
        gh((64, chunks), (threads,), (ct, d_aad, d_lens, powers, acc, np.int32(nblocks), np.int32(ablocks)))

    encrypt(d_in, d_out)
    tags(d_out)
    cp.cuda.runtime.deviceSynchronize()
    out, a, e = cp.asnumpy(d_out), cp.asnumpy(acc), cp.asnumpy(ej0)
    for c in range(chunks):
        ref = Cipher(algorithms.SM4(key), modes.GCM(nonces[c])).encryptor()
        ref.authenticate_additional_data(aads[c])
        want = ref.update(host[c].tobytes()) + ref.finalize()
        assert out[c].tobytes() == want, f"chunk {c}: ciphertext differs from OpenSSL's SM4-GCM"
        x = int(a[c][0]).to_bytes(8, "big") + int(a[c][1]).to_bytes(8, "big")
        tag = bytes(p ^ q for p, q in zip(x, e[c].tobytes(), strict=True))
        assert tag == ref.tag, f"chunk {c}: tag differs from OpenSSL's SM4-GCM"
    print(
        f"checked {chunks} chunks of {args.chunk_mib} MiB against OpenSSL SM4-GCM: ciphertext and tags equal"
    )
    # decrypt = GHASH of the ciphertext + CTR of it
    batch = size * chunks
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    for label, fn in (
        ("CTR only", lambda: encrypt(d_out, d_in)),
        ("GHASH only", lambda: tags(d_out)),
        ("decrypt (GHASH + CTR)", lambda: (tags(d_out), encrypt(d_out, d_in))),
    ):
        fn()
        start.record()
        for _ in range(args.repeat):
            fn()
        stop.record()
        stop.synchronize()
        ms = cp.cuda.get_elapsed_time(start, stop) / args.repeat
        print(f"kernels, {label}: {batch / 1e9:.2f} GB in {ms:.2f} ms = {batch / 1e9 / (ms / 1e3):.1f} GB/s")
    pinned_in = cp.cuda.alloc_pinned_memory(batch)
    pinned_out = cp.cuda.alloc_pinned_memory(batch)
    h_in = np.frombuffer(pinned_in, dtype=np.uint32, count=batch // 4).reshape(chunks, -1)
    h_out = np.frombuffer(pinned_out, dtype=np.uint32, count=batch // 4).reshape(chunks, -1)
    h_in[:] = out
    t0 = time.perf_counter()
    for _ in range(args.repeat // 2):
        d_out.set(h_in)
        tags(d_out)
        encrypt(d_out, d_in)
        d_in.get(out=h_out)
    cp.cuda.runtime.deviceSynchronize()
    s = (time.perf_counter() - t0) / (args.repeat // 2)
    assert h_out.tobytes() == host.tobytes(), "end to end: the decrypted data differs"
    print(f"end to end (pinned host -> GPU -> pinned host, one stream): {batch / 1e9 / s:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

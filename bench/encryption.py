"""Throughput of the weights encryption (SM4-GCM, AES-256-GCM) and its memory use, on this machine.

Measures, for each cipher:

- **cipher**: the AEAD alone on one 4 MiB chunk in memory, one core (the ceiling of one worker);
- **encrypt / decrypt, 1 core and all cores**: ``encrypt_folder`` / ``decrypt_folder`` on a synthetic
  checkpoint of random data in a folder (``--dir``, default a temporary folder), files read and
  written as in production, with 1 worker and with ``--workers`` (default: the usable cores), as
  processes and as threads;

then the **peak RSS** of a decryption of one file of ``--rss-gib`` (default 8) GiB of streamed
random data with every worker, in a child process whose address space is capped below the file's
size (``RLIMIT_AS``), so that reading the file whole would fail: the parent's and the largest
worker's peak resident memory; and what the all-core decrypt rate means for a 7B (BF16, 15.2 GB),
70B (BF16, 141 GB) and 671B (FP8, 642 GB) checkpoint.

Usage::

    .venv/bin/python bench/encryption.py                      # about 2 minutes on 16 cores
    .venv/bin/python bench/encryption.py --seconds 2 --rss-gib 2 --dir /mnt/nvme/tmp

Figures: docs/encryption.md, "Performance".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator" / "src"))

from deepseek_operator.encryption import folder
from deepseek_operator.encryption import format as fm

CHECKPOINTS = {"7B BF16": 15.2e9, "70B BF16": 141e9, "671B FP8": 642e9}
CHUNK = fm.DEFAULT_CHUNK


def cipher_rate(cipher: str, seconds: float) -> tuple[float, float]:
    """GB/s of seal and open of one 4 MiB chunk, one core, in memory."""
    aead = fm.Aead(cipher, os.urandom(16 if cipher == "sm4-gcm" else 32))
    data = os.urandom(CHUNK)
    rates = []
    for op in ("seal", "open"):
        record = aead.seal(data, b"aad")
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 2:
            if op == "seal":
                aead.seal(data, b"aad")
            else:
                aead.open(record, b"aad")
            n += 1
        rates.append(n * CHUNK / 1e9 / (time.perf_counter() - start))
    return rates[0], rates[1]


def synthetic(root: Path, total: int, files: int) -> None:
    """``files`` files of random data, ``total`` bytes together, written in 64 MiB pieces."""
    root.mkdir(parents=True, exist_ok=True)
    block = os.urandom(64 << 20)
    per = total // files
    for i in range(files):
        with open(root / f"model-{i:05d}-of-{files:05d}.safetensors", "wb") as f:
            left = per
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= min(left, len(block))


def folder_rates(cipher: str, work: Path, size: int, workers: int, threads: bool) -> tuple[float, float]:
    key = fm.new_key()
    src, enc, dec = work / "src", work / f"enc-{cipher}", work / f"dec-{cipher}"
    for p in (enc, dec):
        shutil.rmtree(p, ignore_errors=True)
    if not src.exists() or sum(f.stat().st_size for f in src.iterdir()) != size:
        shutil.rmtree(src, ignore_errors=True)
        synthetic(src, size, max(1, min(16, size // (256 << 20))))
    start = time.perf_counter()
    folder.encrypt_folder(src, enc, key, cipher, CHUNK, workers, threads)
    e = size / 1e9 / (time.perf_counter() - start)
    start = time.perf_counter()
    folder.decrypt_folder(enc, dec, key, workers, threads)
    d = size / 1e9 / (time.perf_counter() - start)
    shutil.rmtree(enc)
    shutil.rmtree(dec)
    return e, d


def rss_child(args: argparse.Namespace) -> None:
    """In the child: cap the address space, decrypt, print peak RSS of self and workers."""
    cap = int(args.rss_cap_gib * (1 << 30))
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    work = Path(args.dir)
    key = fm.parse_key((work / "key").read_text(), "key")
    if args.rss_whole:
        try:
            (work / "rss-enc" / "big.bin.enc").open("rb").read()
            print("read whole: succeeded (the cap is too high to prove anything)")
        except MemoryError:
            print("read whole: MemoryError, as expected")
        return
    start = time.perf_counter()
    folder.decrypt_folder(work / "rss-enc", work / "rss-dec", key, args.workers, False)
    took = time.perf_counter() - start
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"parent_mib": me, "largest_worker_mib": kids, "seconds": took}))


def rss(work: Path, gib: float, workers: int, cipher: str) -> dict[str, object]:
    size = int(gib * (1 << 30))
    src = work / "one-file"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    with open(src / "big.bin", "wb") as f:  # streamed: 64 MiB at a time
        block = os.urandom(64 << 20)
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    key = fm.new_key()
    (work / "key").write_text(fm.format_key(key))
    for p in ("rss-enc", "rss-dec"):
        shutil.rmtree(work / p, ignore_errors=True)
    folder.encrypt_folder(src, work / "rss-enc", key, cipher, CHUNK, workers)
    shutil.rmtree(src)
    cap_gib = max(1.5, gib / 2)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            "--dir",
            str(work),
            "--workers",
            str(workers),
            "--rss-cap-gib",
            str(cap_gib),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"the RSS child failed: {out.stderr}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    whole = subprocess.run(
        [
            sys.executable,
            __file__,
            "--rss-child",
            "--rss-whole",
            "--dir",
            str(work),
            "--rss-cap-gib",
            str(cap_gib),
        ],
        capture_output=True,
        text=True,
    )
    result["whole"] = whole.stdout.strip() or whole.stderr.strip()[-300:]
    result.update(file_gib=gib, cap_gib=cap_gib, workers=workers, cipher=cipher)
    for p in ("rss-enc", "rss-dec"):
        shutil.rmtree(work / p, ignore_errors=True)
    return result


def end_to_end(args: argparse.Namespace) -> None:
    """The commands a cluster runs: ``deepseek-operator encrypt`` onto the volume, then ``decrypt``
    into a memory folder (``--out``, e.g. /dev/shm, as the pod's emptyDir), warm and with the page
    cache dropped (root only), each in a child process; peak RSS of its largest process."""
    work = Path(args.dir or tempfile.mkdtemp(prefix="dso-bench-e2e-"))
    work.mkdir(parents=True, exist_ok=True)
    size = int(args.end_to_end * (1 << 30))
    files = max(1, int(args.end_to_end // 4))
    key_file = work / "key"
    key_file.write_text(fm.format_key(fm.new_key()))
    here = str(Path(__file__).resolve().parents[1] / "operator" / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)}

    def command(*argv: str) -> tuple[float, float]:
        start = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run([sys.executable, "-m", "deepseek_operator", *argv], check=True, env=env)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        return time.perf_counter() - start, max(peak, before) / 1024

    for cipher in args.ciphers.split(","):
        src, enc, out = work / "e2e-src", work / "e2e-enc", Path(args.out) / "e2e-plain"
        for p in (src, enc, out):
            shutil.rmtree(p, ignore_errors=True)
        synthetic(src, size, files)
        took, rss_mib = command(
            "encrypt", str(src), str(enc), "--key-file", str(key_file), "--cipher", cipher
        )
        print(
            f"e2e {cipher}: encrypt {size / 1e9:.1f} GB ({files} files) in {took:.1f} s = "
            f"{size / 1e9 / took:.2f} GB/s, peak RSS {rss_mib:.0f} MiB",
            flush=True,
        )
        shutil.rmtree(src)
        for cache in ("warm", "cold"):
            if cache == "cold":
                try:
                    os.sync()
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                except OSError as e:
                    print(f"e2e {cipher}: cannot drop the page cache ({e}); skipping the cold run")
                    continue
            shutil.rmtree(out, ignore_errors=True)
            took, rss_mib = command("decrypt", str(enc), str(out), "--key-file", str(key_file))
            print(
                f"e2e {cipher}: decrypt ({cache} page cache) into {args.out}: {took:.1f} s = "
                f"{size / 1e9 / took:.2f} GB/s, peak RSS {rss_mib:.0f} MiB",
                flush=True,
            )
        for p in (enc, out):
            shutil.rmtree(p, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", help="work folder (default: a temporary folder)")
    p.add_argument("--workers", type=int, default=folder.default_workers())
    p.add_argument("--seconds", type=float, default=3.0, help="about how long each folder run takes")
    p.add_argument("--rss-gib", type=float, default=8.0)
    p.add_argument("--ciphers", default="sm4-gcm,aes-256-gcm")
    p.add_argument("--no-threads", action="store_true", help="skip the thread-pool runs")
    p.add_argument(
        "--end-to-end",
        type=float,
        default=0,
        metavar="GIB",
        help="instead: the encrypt and decrypt commands on a checkpoint of GIB GiB",
    )
    p.add_argument("--out", default="/dev/shm", help="--end-to-end: where decrypt writes (default /dev/shm)")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rss-whole", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rss-cap-gib", type=float, default=1.0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        rss_child(args)
        return 0
    if args.end_to_end:
        end_to_end(args)
        return 0
    work = Path(args.dir or tempfile.mkdtemp(prefix="dso-bench-enc-"))
    rows = []
    print(f"cores usable: {args.workers}; chunk {CHUNK >> 20} MiB; folder {work}", flush=True)
    for cipher in args.ciphers.split(","):
        seal, open_ = cipher_rate(cipher, args.seconds)
        print(f"{cipher}: cipher alone, 1 core: seal {seal:.3f} GB/s, open {open_:.3f} GB/s", flush=True)
        modes = [("1 core", 1, False), (f"{args.workers} processes", args.workers, False)]
        if not args.no_threads:
            modes.append((f"{args.workers} threads", args.workers, True))
        for label, workers, threads in modes:
            guess = min(seal, open_) * (workers if not threads else 1)
            size = int(max(256 << 20, min(8 << 30, guess * 1e9 * args.seconds)))
            size -= size % CHUNK
            e, d = folder_rates(cipher, work, size, workers, threads)
            rows.append((cipher, label, size, e, d))
            print(
                f"{cipher}: {label}: {size / 1e9:.2f} GB, encrypt {e:.3f} GB/s, decrypt {d:.3f} GB/s",
                flush=True,
            )
        shutil.rmtree(work / "src", ignore_errors=True)
    r = rss(work, args.rss_gib, args.workers, args.ciphers.split(",")[-1])
    print(
        f"peak RSS decrypting one {r['file_gib']} GiB file, address space capped at {r['cap_gib']} GiB, "
        f"{r['workers']} workers ({r['cipher']}): parent {r['parent_mib']:.0f} MiB, largest worker "
        f"{r['largest_worker_mib']:.0f} MiB; {r['whole']}",
        flush=True,
    )
    print("\n| cipher | workers | GB | encrypt GB/s | decrypt GB/s | " + " | ".join(CHECKPOINTS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(CHECKPOINTS))
    for cipher, label, size, e, d in rows:
        times = " | ".join(f"{b / 1e9 / d / 60:.1f} min" for b in CHECKPOINTS.values())
        print(f"| {cipher} | {label} | {size / 1e9:.2f} | {e:.3f} | {d:.3f} | {times} |")
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

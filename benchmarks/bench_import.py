"""Import throughput against a durable copy of the same file, measured in one run.

    .venv/bin/python benchmarks/bench_import.py [--size-mib 1024] [--dir DIR]

Generates a safetensors file (random data, so nothing compresses or dedupes), then times, each on a cold
destination:
  anchor  `cp SRC DST && sync`                       (a durable copy: what import must approach)
  owl     `owl import SRC` into an existing store    (hash while copying, fsync, rename, catalog row)
  hash    Python hashlib SHA-256 of the file alone   (for information)
and prints owl/anchor as a throughput ratio (target >= 0.8). Then it fills a store with 100 artifacts
and times `owl ls` end to end (target < 0.5 s). The page cache is warm for every reader alike (the
source is read once beforehand), so the ratio compares the write paths.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OWL = str(Path(sys.executable).with_name("owl"))


def make_safetensors(path: Path, size: int) -> None:
    n = size // 4
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, n * 4]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        chunk = 64 * 1024 * 1024
        left = n * 4
        while left:
            k = min(chunk, left)
            f.write(os.urandom(k))
            left -= k


def _hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _library_put(src: Path, home: Path) -> float:
    """The copy-and-hash alone, through the store's own writer, without process start-up."""
    from owlkit.store.blobs import Blobs, Session

    with Session(Blobs(home)) as s:
        seconds = timed(lambda: s.put_file(src))
    shutil.rmtree(home)
    return seconds


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="owl-bench-", dir=args.dir))
    try:
        src = work / "model.safetensors"
        size = args.size_mib * 1024 * 1024
        print(f"generating {args.size_mib} MiB safetensors in {work} …", flush=True)
        make_safetensors(src, size)
        size = src.stat().st_size
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache once

        cp_t, owl_t, hash_t, lib_t = [], [], [], []
        for i in range(args.repeat):
            dst = work / f"copy{i}"
            cp_t.append(
                timed(lambda dst=dst: subprocess.run(f"cp '{src}' '{dst}' && sync", shell=True, check=True))
            )
            dst.unlink()
            env = {**os.environ, "OWL_HOME": str(work / f"home{i}")}
            # an existing store, as a user has: the one-time catalog creation is not import throughput
            subprocess.run([OWL, "upgrade"], env=env, check=True, capture_output=True)
            owl_t.append(
                timed(
                    lambda env=env: subprocess.run(
                        [OWL, "import", str(src), "--name", "big"], env=env, check=True, capture_output=True
                    )
                )
            )
            shutil.rmtree(work / f"home{i}")
            hash_t.append(timed(lambda: _hash(src)))
            subprocess.run(["sync"], check=True)
            lib_t.append(_library_put(src, work / f"lib{i}"))
            subprocess.run(["sync"], check=True)
        gib = size / 2**30
        cp_s, owl_s, hash_s = statistics.median(cp_t), statistics.median(owl_t), statistics.median(hash_t)
        print(f"anchor cp+sync : {gib / cp_s:6.2f} GiB/s  ({cp_s:.2f} s)")
        print(f"owl import     : {gib / owl_s:6.2f} GiB/s  ({owl_s:.2f} s)")
        print(f"hashlib sha256 : {gib / hash_s:6.2f} GiB/s  ({hash_s:.2f} s)")
        lib_s = statistics.median(lib_t)
        print(f"owl blob write : {gib / lib_s:6.2f} GiB/s  ({lib_s:.2f} s, library call: no CLI start-up)")
        print(f"ratio owl/cp+sync throughput: {cp_s / owl_s:.2f}  (target >= 0.8)")
        print(f"ratio owl blob write/cp+sync throughput: {cp_s / lib_s:.2f}  (the copy alone)")
        print(f"ratio owl/hashlib throughput: {hash_s / owl_s:.2f}  (information)")
        src.unlink()

        home = work / "ls-home"
        env = {**os.environ, "OWL_HOME": str(home)}
        code = (
            "from owlkit.store import open_store\nfrom owlkit.store.manifest import FileEntry, Manifest\n"
            "s = open_store(write=True)\n"
            "with s.session() as ses:\n"
            "    for i in range(100):\n"
            "        h = ses.put_bytes(str(i).encode())\n"
            "        s.commit(Manifest('model', 'safetensors', [FileEntry('m.safetensors', len(str(i)), h)],\n"
            "                 facts={'parameters': i, 'dtype': 'float32'}, license='MIT'), {}, name=f'model-{i}')\n"
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
        runs = [
            timed(lambda: subprocess.run([OWL, "ls"], env=env, check=True, capture_output=True))
            for _ in range(5)
        ]
        print(f"owl ls with 100 artifacts: {statistics.median(runs):.3f} s median of 5  (target < 0.5 s)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

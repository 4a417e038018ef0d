"""Import throughput against a durable copy of the same file, and start-up costs, measured in one run.

    .venv/bin/python benchmarks/bench_import.py [--sizes-mib 1024,4096] [--repeat 3] [--dir DIR]

For each size, generates a safetensors file (random data, so nothing compresses or dedupes), warms the
page cache with it once (every reader alike), then times, each on a cold destination after the disk has
settled (sync, then a pause: a deleted copy's discards slow the next writer on this disk), median of
``--repeat``:
  anchor  `cp SRC DST && sync`                         (a durable copy: what import must approach)
  owl     `owl import SRC` into an existing store      (copy, hash what was stored, fsync, rename, catalog row)
  blob    the store's blob write alone, in-process     (no CLI start-up: what is left is fixed cost)
and prints owl/anchor and blob/anchor as throughput ratios (targets: >= 0.65 at 1 GiB, >= 0.8 at 4 GiB).
Then the fixed costs: `owl import` of a 1 MiB file (target < 0.35 s) against `owl --version`, and
`owl ls` over 1,000 artifacts against a bare `python -c pass` (target: at most 0.25 s more).
"""

from __future__ import annotations

import argparse
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


def settle(size_mib: int = 0) -> None:
    """Let the disk finish what the last run left (writeback, and the discards a deleted copy triggers on
    a filesystem mounted with ``discard``) before the next timed run starts: 2 s, and 1 s per GiB."""
    subprocess.run(["sync"], check=True)
    time.sleep(2 + size_mib / 1024)


def median_time(fn, repeat: int) -> float:
    return statistics.median(timed(fn) for _ in range(repeat))


def throughput(work: Path, size_mib: int, repeat: int) -> None:
    src = work / "model.safetensors"
    make_safetensors(src, size_mib * 1024 * 1024)
    size = src.stat().st_size
    subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache once
    cp_t, owl_t, lib_t = [], [], []

    def run_cp(i: int) -> None:
        dst = work / f"copy{i}"
        cp_t.append(timed(lambda: subprocess.run(f"cp '{src}' '{dst}' && sync", shell=True, check=True)))
        dst.unlink()

    def run_owl(i: int) -> None:
        env = {**os.environ, "OWL_HOME": str(work / f"home{i}")}
        # an existing store, as a user has: the one-time catalog creation is not import throughput
        subprocess.run([OWL, "upgrade"], env=env, check=True, capture_output=True)
        settle(size_mib)
        cmd = [OWL, "import", str(src), "--name", "big"]
        owl_t.append(timed(lambda: subprocess.run(cmd, env=env, check=True, capture_output=True)))
        shutil.rmtree(work / f"home{i}")

    def run_blob(i: int) -> None:
        lib_t.append(_library_put(src, work / f"lib{i}"))

    # Each round runs the three in another order: this disk writes slower after sustained writing, so a
    # fixed order would favour whichever comes first.
    runs = [run_cp, run_owl, run_blob]
    for i in range(repeat):
        for run in runs[i % 3 :] + runs[: i % 3]:
            settle(size_mib)
            run(i)
    gib = size / 2**30
    cp_s, owl_s, lib_s = (statistics.median(t) for t in (cp_t, owl_t, lib_t))
    target = 0.8 if size_mib >= 4096 else 0.65
    print(
        f"{size_mib} MiB: cp+sync {gib / cp_s:.2f} GiB/s ({cp_s:.2f} s), owl import {gib / owl_s:.2f} GiB/s "
        f"({owl_s:.2f} s), blob write {gib / lib_s:.2f} GiB/s ({lib_s:.2f} s)  [runs: cp {_fmt(cp_t)}, "
        f"owl {_fmt(owl_t)}, blob {_fmt(lib_t)}]"
    )
    print(f"  ratio owl import / cp+sync throughput: {cp_s / owl_s:.2f}  (target >= {target})")
    print(f"  ratio blob write / cp+sync throughput: {cp_s / lib_s:.2f}  (the copy alone)")
    src.unlink()


def _fmt(ts: list[float]) -> str:
    return "/".join(f"{t:.2f}" for t in ts)


def fixed_costs(work: Path, repeat: int) -> None:
    home = work / "small-home"
    env = {**os.environ, "OWL_HOME": str(home)}
    subprocess.run([OWL, "upgrade"], env=env, check=True, capture_output=True)
    srcs = []
    for i in range(repeat):
        srcs.append(work / f"small{i}.safetensors")
        make_safetensors(srcs[-1], 1024 * 1024)
    version = median_time(lambda: subprocess.run([OWL, "--version"], check=True, capture_output=True), 5)
    small = statistics.median(
        timed(lambda s=s: subprocess.run([OWL, "import", str(s)], env=env, check=True, capture_output=True))
        for s in srcs
    )
    print(
        f"owl import of 1 MiB: {small:.3f} s median of {repeat}  (target < 0.35 s; owl --version {version:.3f} s)"
    )

    home = work / "ls-home"
    env = {**os.environ, "OWL_HOME": str(home)}
    code = (
        "from owlkit.store import open_store\nfrom owlkit.store.manifest import FileEntry, Manifest\n"
        "s = open_store(write=True)\n"
        "with s.session() as ses:\n"
        "    for i in range(1000):\n"
        "        h = ses.put_bytes(str(i).encode())\n"
        "        s.commit(Manifest('model', 'safetensors', [FileEntry('m.safetensors', len(str(i)), h)],\n"
        "                 facts={'parameters': i, 'dtype': 'float32'}, license='MIT'), {}, name=f'model-{i}')\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    bare = median_time(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 5)
    ls = median_time(lambda: subprocess.run([OWL, "ls"], env=env, check=True, capture_output=True), 5)
    print(
        f"owl ls with 1,000 artifacts: {ls:.3f} s, python -c pass {bare:.3f} s: {ls - bare:+.3f} s  "
        "(target: at most +0.25 s)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes-mib", default="1024,4096")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="owl-bench-", dir=args.dir))
    try:
        for size_mib in map(int, args.sizes_mib.split(",")):
            throughput(work, size_mib, args.repeat)
        fixed_costs(work, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""GGUF -> HF conversion: owlkit's direct Llama reader against transformers' GGUF loader, in one run.

    .venv/bin/python benchmarks/bench_convert.py [GGUF]

Default GGUF: ../shared/realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf. Both paths
run in this process after torch and transformers are imported (so imports are not counted), and their
outputs are checked byte-identical. Prints the speed-up (anchor time / owl time).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO.parent / "shared/realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def main() -> None:
    gguf = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    if not gguf.is_file():
        sys.exit(f"{gguf}: not found; pass a GGUF path")
    import torch  # noqa: F401 - imported before timing
    import transformers  # noqa: F401

    from owlkit.runtime.convert import gguf_to_hf

    work = Path(tempfile.mkdtemp(prefix="owl-bench-convert-"))
    try:
        t = time.perf_counter()
        gguf_to_hf(gguf, work / "anchor", direct=False)
        anchor = time.perf_counter() - t
        t = time.perf_counter()
        gguf_to_hf(gguf, work / "owl")
        owl = time.perf_counter() - t
        same = hashes(work / "anchor") == hashes(work / "owl")
        print(f"anchor transformers GGUF loader + save_pretrained: {anchor:6.1f} s")
        print(f"owl    direct Llama reader:                       {owl:6.1f} s")
        print(f"speed-up owl vs anchor: {anchor / owl:.1f}x  (outputs byte-identical: {same})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Keep glibc from holding on to memory freed by a QLoRA training step.

glibc's malloc serves big requests with their own ``mmap`` (returned to the system on ``free``) and
smaller ones from its heaps (kept for reuse). The line between them starts at 128 KiB and moves up
(to at most 32 MiB) each time a mapped block is freed, so after the first large tensor dies, every
later tensor up to 32 MiB (activations, the fp32 weights NF4 layers dequantize for every matmul,
gradients) comes from the heap, and the heap keeps its high-water mark plus fragmentation: resident
memory no live tensor uses. Fixing the threshold (``M_MMAP_THRESHOLD``, which also stops it moving)
returns such blocks on free, at a price: every reuse faults fresh zeroed pages in again.

Measured here (2 shared CPU cores, glibc 2.36), peak RSS / throughput against glibc's moving threshold:

- ``bench_memory.py --layers 8`` QLoRA (hidden 1024, batch 4 x 256): 1.9-2.05 GiB at 8 MiB, 16 MiB and
  glibc's own; 1.03-1.06 GiB at 64 KiB, 1 MiB and 4 MiB, with about 25% fewer tokens/s at 4 MiB.
- SmolLM2-135M LoRA (batch 3 x 256), interleaved runs: 1 MiB and 64 KiB cut peak RSS from 3.4 to
  2.2-2.3 GiB but make steps about 50% slower; 4 MiB saves 0.15 GiB for about 10% slower steps.

So only QLoRA, whose point is memory, gets a fixed threshold: 4 MiB bounds its peak at the bench's shapes
as well as 64 KiB or 1 MiB do, with far fewer blocks mapped and faulted in again. The other methods
keep glibc's behaviour.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h
# Method -> bytes from which blocks get their own mapping; absent or None: glibc's moving threshold.
MMAP_THRESHOLDS: dict[str, int | None] = {"qlora": 4 << 20}
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own variable: a user's choice wins over ours


def bound_heap_retention(method: str) -> bool:
    """Fix glibc's mmap threshold for this process at ``MMAP_THRESHOLDS[method]``. Returns whether it
    was set: not for other methods, off glibc, nor when the user set ``MALLOC_MMAP_THRESHOLD_``."""
    threshold = MMAP_THRESHOLDS.get(method)
    libc = _glibc()
    if threshold is None or libc is None or ENV in os.environ:
        return False
    return bool(libc.mallopt(ctypes.c_int(M_MMAP_THRESHOLD), ctypes.c_int(threshold)))


def trim_heap() -> None:
    """Give the free pages of glibc's heaps back to the system (``malloc_trim``); a no-op off glibc.
    For one-off phases that free much (loading), where refaulting the pages later costs little."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(ctypes.c_size_t(0))


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:  # the C library already loaded in this process
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None

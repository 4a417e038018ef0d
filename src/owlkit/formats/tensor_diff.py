"""Tensor-by-tensor comparison of two safetensors files or two GGUF files (no store: paths in, diffs out).

Tensors are compared straight from the files, after the strict header readers
(formats/safetensors.py, formats/gguf.py) have validated every offset: bytes are read in chunks of at
most ``CHUNK_ELEMENTS`` elements per side, so memory stays bounded by the chunk, never by the tensor
or the model. Chunks whose bytes are equal cost one comparison; only differing chunks are decoded to
float64 (quantized GGUF blocks through gguf-py's ``dequantize``), so two identical 7B files compare at
disk speed.

``compare_weight_files`` and ``first_tensor_difference`` work on any two safetensors or two GGUF files
(``owl rebuild`` uses the latter to name the first tensor that did not reproduce); ``owl diff``
(recipes/diff.py) reads an artifact's weight files with :func:`read_tensors` and compares them with
:func:`compare_tensors`.
"""

from __future__ import annotations

import functools
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from owlkit.errors import InvalidFile, UsageError

# Elements per side decoded at once: 8 MiB of float64 each, whatever the tensor's size.
CHUNK_ELEMENTS = 1 << 20
# Weight files by suffix (a stored blob has none: read_tensors sniffs the magic bytes instead).
WEIGHT_FORMATS = {".safetensors": "safetensors", ".gguf": "gguf"}
_LAYER = re.compile(r"(?:^|\.)(?:layers|blk|h)\.(\d+)\.")

# safetensors and GGUF plain dtypes numpy reads directly (both formats are little-endian).
_NUMPY_DTYPES = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I8": "i1",
    "I16": "<i2",
    "I32": "<i4",
    "I64": "<i8",
    "U8": "u1",
    "U16": "<u2",
    "U32": "<u4",
    "U64": "<u8",
    "BOOL": "u1",
    "C64": "<c8",
}

SAME = "same"
ONLY_A, ONLY_B = "only in A", "only in B"
SHAPE_DIFFERS = "shape differs"
DTYPE_DIFFERS = "dtype differs"
VALUES_DIFFER = "values differ"
BYTES_ONLY = "bytes differ, values equal"  # -0.0 vs 0.0, NaN payloads


@dataclass
class TensorDiff:
    """One tensor compared across two files. ``max_abs``/``mean_abs`` are None where no values were
    compared (missing on one side, shapes differ, or a dtype numpy cannot decode); ``note`` says why.
    Shapes are as each file stores them: numpy order for safetensors, ggml order (ne0 first) for GGUF;
    dtypes are the format's own spelling ("F32", "BF16", "Q8_0")."""

    name: str
    shape_a: list[int] | None
    shape_b: list[int] | None
    dtype_a: str | None
    dtype_b: str | None
    max_abs: float | None = None
    mean_abs: float | None = None
    note: str = SAME

    @property
    def differs(self) -> bool:
        return self.note != SAME

    @property
    def layer(self) -> int | None:
        """The block index in ``model.layers.N.…`` (HF) or ``blk.N.…`` (GGUF) names, else None."""
        m = _LAYER.search(self.name)
        return int(m.group(1)) if m else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LayerSummary:
    """One block index's tensors: how many were compared, how many differ, the largest max abs
    difference (None when no values could be compared)."""

    layer: int
    tensors: int = 0
    differing: int = 0
    max_abs: float | None = None


# ----- reading tensors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """Where one tensor's bytes lie, and how to decode them: ``block`` elements per ``block_bytes``."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    path: Path
    offset: int  # absolute, validated by the header reader
    nbytes: int
    block: int
    block_bytes: int
    ggml_type: int | None = None  # set for GGUF quantized types, decoded by gguf-py

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _sniff(path: Path) -> str:
    """safetensors or gguf, from the magic bytes: stored blobs have no file extension."""
    from owlkit.formats.base import open_untrusted

    with open_untrusted(path, "weights") as f:
        head = f.read(4)
    return "gguf" if head == b"GGUF" else "safetensors"


def _relabel(e: InvalidFile, path: Path, label: str | None) -> InvalidFile:
    """A reader's error names the file it opened; a blob's name is its hash, so name the artifact file."""
    if label is None:
        return e
    return InvalidFile(str(e).replace(path.name, label, 1))


def read_tensors(path: Path, label: str | None = None) -> tuple[str, list[Tensor]]:
    """(format, tensors in file order) of a safetensors or GGUF file, headers validated."""
    path = Path(path)
    fmt = _sniff(path)
    try:
        if fmt == "gguf":
            from owlkit.formats.gguf import GGML_TYPES, read_gguf

            g = read_gguf(path)
            tensors = []
            for t in g.tensors:
                _, block, block_bytes = GGML_TYPES[t.type_id]
                tensors.append(
                    Tensor(
                        t.name,
                        t.shape,
                        t.type_name,
                        path,
                        t.offset,
                        t.nbytes,
                        block,
                        block_bytes,
                        None if t.type_name in _NUMPY_DTYPES or t.type_name == "BF16" else t.type_id,
                    )
                )
            return fmt, tensors
        from owlkit.formats.safetensors import DTYPES, read_safetensors_header

        header = read_safetensors_header(path)
    except InvalidFile as e:
        raise _relabel(e, path, label) from None
    tensors = []
    for t in header.tensors:
        bits = DTYPES[t.dtype][0]
        # sub-byte dtypes (F4, F6) pack several elements per byte: a block is the smallest whole-byte run
        block = 8 // math.gcd(bits, 8)
        tensors.append(Tensor(t.name, t.shape, t.dtype, path, t.begin, t.nbytes, block, block * bits // 8))
    return fmt, tensors


@dataclass
class _Files:
    """Open file descriptors by path, closed together; every read is a bounded ``pread``."""

    fds: dict[Path, int] = field(default_factory=dict)

    def read(self, t: Tensor, e0: int, e1: int) -> bytes:
        fd = self.fds.get(t.path)
        if fd is None:
            fd = self.fds[t.path] = os.open(t.path, os.O_RDONLY)
        b0, b1 = e0 // t.block * t.block_bytes, e1 // t.block * t.block_bytes
        raw = os.pread(fd, b1 - b0, t.offset + b0)
        if len(raw) != b1 - b0:
            raise InvalidFile(f"{t.path.name}: ends inside tensor {t.name}; the file is truncated")
        return raw

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def _decodable(t: Tensor) -> bool:
    if t.numel % t.block:
        return False
    if t.dtype in _NUMPY_DTYPES or t.dtype == "BF16":
        return True
    # F8, F4, F6 (safetensors): numpy has no such floats
    return t.ggml_type is not None and _gguf_decodable(t.ggml_type, t.block, t.block_bytes)


@functools.cache
def _gguf_decodable(type_id: int, block: int, block_bytes: int) -> bool:
    """Whether gguf-py dequantizes this ggml type with the block layout owlkit's reader validated."""
    try:
        import gguf as ggufpy
    except ImportError:
        return False
    if type_id not in set(ggufpy.GGMLQuantizationType):
        return False
    qtype = ggufpy.GGMLQuantizationType(type_id)
    # gguf-py 0.19 sizes Q8_1 blocks differently from ggml: never decode with a layout we did not validate
    if ggufpy.GGML_QUANT_SIZES.get(qtype) != (block, block_bytes):
        return False
    try:  # one all-zero block: gguf-py's public way of saying whether it knows the type
        ggufpy.quants.dequantize(np.zeros((1, block_bytes), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _why(t: Tensor) -> str:
    """Why a tensor's values cannot be compared, with the fix where there is one."""
    if t.ggml_type is not None:
        try:
            import gguf  # noqa: F401
        except ImportError:
            return f"cannot decode {t.dtype} without gguf-py: pip install 'owlkit[ml]'"
    return f"cannot decode {t.dtype}"


def _decode(t: Tensor, raw: bytes) -> np.ndarray:
    """A chunk's bytes as float64 (complex128 for C64), flat."""
    if t.dtype == "BF16":  # bfloat16 is the top half of a float32
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if t.dtype in _NUMPY_DTYPES:
        values = np.frombuffer(raw, _NUMPY_DTYPES[t.dtype])
        return values.astype(np.complex128 if values.dtype.kind == "c" else np.float64)
    import gguf as ggufpy

    # gguf-py walks the rows it is given a few at a time, so one block per row is mostly call overhead:
    # every block decodes on its own, so rows of up to 256 blocks give the same values several times faster
    nblocks = len(raw) // t.block_bytes
    per_row = math.gcd(nblocks, 256)
    blocks = np.frombuffer(raw, np.uint8).reshape(-1, per_row * t.block_bytes)
    qtype = ggufpy.GGMLQuantizationType(t.ggml_type)
    return ggufpy.quants.dequantize(blocks, qtype).reshape(-1).astype(np.float64)


def _abs_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| where equal values (inf and inf, NaN and NaN) count 0 and NaN against a number counts inf."""
    d = np.abs(a - b)
    if np.isnan(d).any():
        both_nan = np.isnan(a) & np.isnan(b)
        d[(a == b) | both_nan] = 0.0
        d[np.isnan(d)] = np.inf
    return d


def _differing_blocks(raw_a: bytes, raw_b: bytes, block_bytes: int) -> tuple[bytes, bytes]:
    blocks_a = np.frombuffer(raw_a, np.uint8).reshape(-1, block_bytes)
    blocks_b = np.frombuffer(raw_b, np.uint8).reshape(-1, block_bytes)
    rows = np.flatnonzero((blocks_a != blocks_b).any(axis=1))
    return blocks_a[rows].tobytes(), blocks_b[rows].tobytes()


def _chunks(numel: int, step: int) -> Iterator[tuple[int, int]]:
    for e0 in range(0, numel, step):
        yield e0, min(numel, e0 + step)


def _compare_pair(files: _Files, a: Tensor, b: Tensor) -> TensorDiff:
    diff = TensorDiff(a.name, list(a.shape), list(b.shape), a.dtype, b.dtype)
    if a.shape != b.shape:
        diff.note = SHAPE_DIFFERS
        return diff
    if a.path == b.path and a.offset == b.offset and a.dtype == b.dtype:
        diff.max_abs = diff.mean_abs = 0.0  # the same bytes of the same (content-addressed) blob
        return diff
    same_dtype = a.dtype == b.dtype
    decodable = _decodable(a) and _decodable(b)
    numel = a.numel
    unit = math.lcm(a.block, b.block)
    step = max(unit, CHUNK_ELEMENTS // unit * unit)
    total, worst, bytes_differ = 0.0, 0.0, False
    for e0, e1 in _chunks(numel, step):
        raw_a, raw_b = files.read(a, e0, e1), files.read(b, e0, e1)
        if same_dtype and raw_a == raw_b:
            continue
        bytes_differ = True
        if not decodable:
            break  # nothing more to learn without values
        if same_dtype:
            # equal blocks hold equal values: decode only the blocks whose bytes differ
            raw_a, raw_b = _differing_blocks(raw_a, raw_b, a.block_bytes)
        d = _abs_diff(_decode(a, raw_a), _decode(b, raw_b))
        worst = max(worst, float(d.max()))
        total += float(d.sum())
    if not decodable:
        if same_dtype and not bytes_differ:
            diff.max_abs = diff.mean_abs = 0.0
        else:
            what = DTYPE_DIFFERS if not same_dtype else "bytes differ"
            diff.note = f"{what} ({_why(a if not _decodable(a) else b)})"
        return diff
    diff.max_abs, diff.mean_abs = worst, (total / numel if numel else 0.0)
    if not same_dtype:
        diff.note = DTYPE_DIFFERS
    elif bytes_differ:
        diff.note = VALUES_DIFFER if worst > 0 else BYTES_ONLY
    return diff


def _missing(t: Tensor, side: str) -> TensorDiff:
    if side == "a":
        return TensorDiff(t.name, list(t.shape), None, t.dtype, None, note=ONLY_A)
    return TensorDiff(t.name, None, list(t.shape), None, t.dtype, note=ONLY_B)


def _tensor_diffs(tensors_a: list[Tensor], tensors_b: list[Tensor]) -> Iterator[TensorDiff]:
    """Every tensor name of either side, in A's order then B's extras, compared one pair at a time
    (lazily: a caller may stop at the first difference; the files close when the generator does)."""
    by_name = {t.name: t for t in tensors_b}
    files = _Files()
    try:
        for t in tensors_a:
            yield _compare_pair(files, t, by_name[t.name]) if t.name in by_name else _missing(t, "a")
    finally:
        files.close()
    names_a = {t.name for t in tensors_a}
    yield from (_missing(t, "b") for t in tensors_b if t.name not in names_a)


def compare_tensors(
    tensors_a: list[Tensor], tensors_b: list[Tensor], advance: Callable[[float], None] | None = None
) -> list[TensorDiff]:
    """One :class:`TensorDiff` per tensor name of either list (read with :func:`read_tensors`), A's order
    first; ``advance(1)`` after each."""
    out = []
    for d in _tensor_diffs(tensors_a, tensors_b):
        out.append(d)
        if advance is not None:
            advance(1)
    return out


def _same_format(a: Path, b: Path) -> tuple[list[Tensor], list[Tensor]]:
    fmt_a, ta = read_tensors(a)
    fmt_b, tb = read_tensors(b)
    if fmt_a != fmt_b:
        raise UsageError(
            f"cannot compare tensors of {a.name} ({fmt_a}) with {b.name} ({fmt_b}): "
            "give two files of one format"
        )
    return ta, tb


def compare_weight_files(a: Path, b: Path) -> list[TensorDiff]:
    """Compare two safetensors files or two GGUF files tensor by tensor: one :class:`TensorDiff` per
    tensor name of either file (``differs`` False for the equal ones), A's file order first.

    InvalidFile for a malformed file, UsageError for a safetensors file against a GGUF one.
    """
    ta, tb = _same_format(Path(a), Path(b))
    return compare_tensors(ta, tb)


def first_tensor_difference(a: Path, b: Path) -> TensorDiff | None:
    """The first tensor, in A's file order, whose bytes, shape or dtype differ (or that B lacks), with
    its max abs difference; then the first tensor only B has. None when every tensor is identical
    (the files may still differ in metadata). Stops at the first difference: cheap for a rebuild."""
    ta, tb = _same_format(Path(a), Path(b))
    diffs = _tensor_diffs(ta, tb)
    try:
        return next((d for d in diffs if d.differs), None)
    finally:
        diffs.close()


def layer_summary(diffs: Iterable[TensorDiff]) -> list[LayerSummary]:
    """Per block index (``layers.N.`` / ``blk.N.``), in index order; tensors outside blocks are left out."""
    layers: dict[int, LayerSummary] = {}
    for d in diffs:
        n = d.layer
        if n is None:
            continue
        row = layers.setdefault(n, LayerSummary(n))
        row.tensors += 1
        row.differing += d.differs
        if d.max_abs is not None:
            row.max_abs = max(row.max_abs or 0.0, d.max_abs)
    return [layers[n] for n in sorted(layers)]

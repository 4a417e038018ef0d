"""A strict, untrusted-by-default reader for safetensors headers.

Written by hand rather than with the ``safetensors`` package because the reference loader accepts
things a validating reader must refuse (measured, see shared/docs/model-file-security.md): duplicate
tensor keys (last wins), whitespace before ``{``, NUL bytes in names, unknown per-tensor fields. It
also needs no torch and never touches the data region: only the 8-byte length and the header are read.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data buffer, which the
tensors' ``data_offsets`` (relative to the buffer) must cover exactly, without holes or overlaps.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from owlkit.errors import InvalidFile
from owlkit.formats.base import open_untrusted

# The reference loader's own limit on the header (bytes).
MAX_HEADER = 100_000_000
MAX_NAME_CHARS = 1024
MAX_RANK = 8
# The smallest possible tensor entry ("a":{"dtype":"F4","shape":[],"data_offsets":[0,0]}) is ~50 bytes,
# so more than one tensor per 10 header bytes cannot be an honest file.
HEADER_BYTES_PER_TENSOR = 10
# JSON containers are the costly Python objects (a dict or list is 56+ bytes for 2 bytes of input).
# An honest header has at most 3 per tensor entry (~50 bytes), so 1 per 8 bytes leaves a wide margin
# while keeping json.loads from blowing a hostile 100 MB header up into gigabytes.
HEADER_BYTES_PER_CONTAINER = 8

# dtype -> (bits per element, torch-style name). The safetensors spec's dtypes as of safetensors 0.6+;
# the sub-byte ones (F4, F6_*) are sized in bits, and a tensor's bit count must fill whole bytes.
DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (8, "bool"),
    "F4": (4, "float4_e2m1"),
    "F6_E2M3": (6, "float6_e2m3"),
    "F6_E3M2": (6, "float6_e3m2"),
    "U8": (8, "uint8"),
    "I8": (8, "int8"),
    "F8_E5M2": (8, "float8_e5m2"),
    "F8_E4M3": (8, "float8_e4m3fn"),
    "F8_E8M0": (8, "float8_e8m0fnu"),
    "I16": (16, "int16"),
    "U16": (16, "uint16"),
    "F16": (16, "float16"),
    "BF16": (16, "bfloat16"),
    "I32": (32, "int32"),
    "U32": (32, "uint32"),
    "F32": (32, "float32"),
    "C64": (64, "complex64"),
    "F64": (64, "float64"),
    "I64": (64, "int64"),
    "U64": (64, "uint64"),
}
TENSOR_FIELDS = frozenset({"dtype", "shape", "data_offsets"})
FIX = "re-download or re-export it"


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry. ``begin``/``end`` are ABSOLUTE file offsets of its bytes."""

    name: str
    dtype: str  # safetensors spelling: "F32", "BF16"...
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass
class SafetensorsHeader:
    """A validated header. ``tensors`` are in data order (by offset), which is the file's byte order."""

    path: Path
    header_len: int
    data_start: int  # 8 + header_len
    metadata: dict[str, str]
    tensors: list[TensorInfo]

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)

    def dtype_summary(self) -> str | None:
        """The dtype holding most elements, named like torch ("float32", "bfloat16"...); ties go to the
        dtype seen first in the file. None when the file holds no elements."""
        counts: dict[str, int] = {}
        for t in self.tensors:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
        if not counts or max(counts.values()) == 0:
            return None
        best = max(counts, key=lambda d: counts[d])  # max() keeps the first of equal keys
        return DTYPES[best][1]


def read_safetensors_header(path: Path, *, max_header: int = MAX_HEADER) -> SafetensorsHeader:
    """Read and validate the header of a ``.safetensors`` file without reading its data.

    Raises :class:`InvalidFile` (one line, naming the file) for anything the format forbids or that
    a validating reader must refuse, and :class:`NotFound` when the path does not exist.
    """
    path = Path(path)
    name = path.name
    f = open_untrusted(path, "safetensors")
    try:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            _bad(name, f"only {size} bytes, too short for the 8-byte header length")
        n = int.from_bytes(f.read(8), "little")
        # Bound the length before reading (or allocating) anything from it.
        if n > max_header:
            _bad(name, f"header length {n} exceeds the {max_header}-byte limit")
        if n > size - 8:
            _bad(name, f"header length {n} exceeds the file size ({size} bytes); the file is truncated")
        raw = f.read(n)
    finally:
        f.close()
    if len(raw) != n:
        _bad(name, "file shrank while being read")
    header = _parse_json(name, raw)
    metadata, tensors = _check_entries(name, header, n, data_len=size - 8 - n, data_start=8 + n)
    return SafetensorsHeader(path=path, header_len=n, data_start=8 + n, metadata=metadata, tensors=tensors)


def _bad(name: str, reason: str) -> NoReturn:
    raise InvalidFile(f"{name}: {reason}; not a valid safetensors file, {FIX}")


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(text: str) -> str:
    """A name as it can appear on one line of an error message (quoted, escaped, shortened)."""
    return _clip(repr(text))


def _parse_json(name: str, raw: bytes) -> dict:
    if not raw.startswith(b"{"):
        # The reference loader skips leading whitespace; a strict reader wants the object at byte 8.
        _bad(name, "header does not start with '{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        _bad(name, f"header is not valid UTF-8 (byte {e.start})")
    containers = raw.count(b"{") + raw.count(b"[")
    if containers > 2 + len(raw) // HEADER_BYTES_PER_CONTAINER:
        _bad(name, f"header has {containers} JSON objects/arrays, far more than tensor entries need")

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):  # the reference loader silently keeps the last one
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    _bad(name, f"duplicate key {_show(key)} in header")
                seen.add(key)
        return obj

    def no_constant(word: str) -> None:
        _bad(name, f"header has non-standard JSON constant {word}")

    try:
        header = json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except InvalidFile:
        raise
    except (ValueError, RecursionError) as e:
        # JSONDecodeError is a ValueError; so is an integer too long to convert.
        reason = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        _bad(name, f"header is not valid JSON ({reason})")
    if not isinstance(header, dict):
        _bad(name, "header is not a JSON object")
    return header


def _check_text(name: str, what: str, value: str, *, is_name: bool) -> None:
    if is_name:
        if not value:
            _bad(name, f"empty {what}")
        if len(value) > MAX_NAME_CHARS:
            _bad(name, f"{what} {_show(value)} is longer than {MAX_NAME_CHARS} characters")
        # NUL and other control characters hide or split names in C-string and terminal tools.
        if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
            _bad(name, f"{what} {_show(value)} contains a control character")
    # JSON \ud800-style escapes decode to lone surrogates, which are not text and break later encoding.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _bad(name, f"{what} {_show(value)} contains a lone surrogate escape")


def _is_int(x: object) -> bool:
    return type(x) is int  # bool is an int subclass; JSON true must not pass as 1


def _check_entries(
    name: str, header: dict, header_len: int, *, data_len: int, data_start: int
) -> tuple[dict[str, str], list[TensorInfo]]:
    metadata: dict[str, str] = {}
    if "__metadata__" in header:
        meta = header["__metadata__"]
        if not isinstance(meta, dict):
            _bad(name, "__metadata__ is not a JSON object of strings")
        for k, v in meta.items():
            if not isinstance(v, str):
                _bad(name, f"__metadata__ value for {_show(k)} is not a string")
            _check_text(name, "__metadata__ key", k, is_name=False)
            _check_text(name, "__metadata__ value", v, is_name=False)
        metadata = dict(meta)
    entries = [(k, v) for k, v in header.items() if k != "__metadata__"]
    limit = max(1, header_len // HEADER_BYTES_PER_TENSOR)
    if len(entries) > limit:
        _bad(name, f"{len(entries)} tensors in a {header_len}-byte header is more than it can describe")

    tensors = [_check_tensor(name, k, v, data_len, data_start) for k, v in entries]
    # The reference writer orders entries by offset, older ones by name: check the layout in offset
    # order (stable, so equal-offset empty tensors keep header order).
    tensors.sort(key=lambda t: (t.begin, t.end))
    _check_layout(name, tensors, data_len, data_start)
    return metadata, tensors


def _check_tensor(name: str, key: str, entry: object, data_len: int, data_start: int) -> TensorInfo:
    _check_text(name, "tensor name", key, is_name=True)
    t = _show(key)
    if not isinstance(entry, dict):
        _bad(name, f"tensor {t} is not a JSON object")
    fields = set(entry)
    if fields != TENSOR_FIELDS:
        extra, missing = sorted(fields - TENSOR_FIELDS), sorted(TENSOR_FIELDS - fields)
        what = f"unknown field {_show(extra[0])}" if extra else f"missing field {missing[0]!r}"
        _bad(name, f"tensor {t} has {what}")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        _bad(name, f"tensor {t} has unknown dtype {_show(str(dtype))}")
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        _bad(name, f"tensor {t} shape is not a list of non-negative integers")
    if len(shape) > MAX_RANK:
        _bad(name, f"tensor {t} has {len(shape)} dimensions (at most {MAX_RANK})")
    offsets = entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
        _bad(name, f"tensor {t} data_offsets is not a pair of non-negative integers")
    begin, end = offsets
    if end < begin:
        _bad(name, f"tensor {t} ends (byte {end}) before it begins (byte {begin})")
    if end > data_len:
        _bad(name, f"tensor {t} ends at byte {end}, past the {data_len}-byte data region")
    # Python ints do not overflow (and the rank is bounded), so the exact product can be compared
    # with the span, which is already capped by the file size.
    nbits = math.prod(shape) * DTYPES[dtype][0]
    if nbits % 8:
        _bad(name, f"tensor {t} of {math.prod(shape)} {dtype} elements does not fill whole bytes")
    if nbits // 8 > data_len:
        _bad(name, f"tensor {t} shape {_clip(str(shape))} needs more bytes than the file holds")
    if nbits // 8 != end - begin:
        _bad(name, f"tensor {t} {dtype}{shape} needs {nbits // 8} bytes but spans {end - begin}")
    return TensorInfo(
        name=key, dtype=dtype, shape=tuple(shape), begin=data_start + begin, end=data_start + end
    )


def _check_layout(name: str, tensors: Iterable[TensorInfo], data_len: int, data_start: int) -> None:
    pos = 0  # relative to the data region
    for t in tensors:
        begin, end = t.begin - data_start, t.end - data_start
        if begin < pos:
            _bad(name, f"tensor {_show(t.name)} (bytes {begin}-{end}) overlaps the previous tensor")
        if begin > pos:
            _bad(name, f"gap of {begin - pos} bytes before tensor {_show(t.name)} in the data region")
        pos = end
    if pos != data_len:
        _bad(name, f"{data_len - pos} trailing bytes after the last tensor")

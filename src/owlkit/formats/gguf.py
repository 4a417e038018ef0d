"""A strict, untrusted-by-default reader for GGUF files (llama.cpp's model format).

Written by hand because the Python ``gguf.GGUFReader`` is not a validator (no bound on n_dims,
``np.prod`` can overflow, counts and lengths trusted), and GGUF parsers have a long CVE record of heap
overflows driven by counts and lengths (shared/docs/model-file-security.md). Every count and length
read from the file is checked against the bytes left before anything is read or allocated from it;
the file is memory-mapped and only the header region (key/values and tensor infos) is touched, never
the tensor data.

Layout (little-endian): magic "GGUF", version u32, tensor_count u64, kv_count u64; kv_count
key/values (u64-length UTF-8 key, u32 value type, value); tensor_count tensor infos (name, n_dims u32,
n_dims u64 dims with ne0 first, ggml type u32, offset u64 relative to the data section); padding to
``general.alignment`` (default 32); the data section.

Limits, beyond "fits in the bytes left" (chosen well above any real model, to bound work and memory):
keys <= 64 KiB; string values <= 64 MiB (chat templates are tens of KB); one string inside an array
<= 1 MiB (tokens); arrays <= 2**24 elements (vocabularies are <= ~300k); <= 2**20 tensors and key/values;
tensor names < 64 bytes (llama.cpp's GGML_MAX_NAME); 1..4 dimensions (GGML_MAX_DIMS), each >= 1 (a zero
dimension is useless and makes some llama.cpp versions divide by zero); <= 2**62 elements per tensor.
Tensor data must be laid out as llama.cpp requires: each offset equal to the previous tensor's end
padded to the alignment; nothing may follow the last tensor's padding.
"""

from __future__ import annotations

import math
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import numpy as np

from owlkit.errors import InvalidFile
from owlkit.formats.base import MODEL_FACT_KEYS, digest_text, open_untrusted

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4
GGML_MAX_NAME = 64  # llama.cpp keeps names NUL-terminated in char[64]: at most 63 bytes
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 64 << 20
MAX_ARRAY_STRING_BYTES = 1 << 20
MAX_ARRAY_LEN = 1 << 24
MAX_NUMEL = 1 << 62
# The fewest bytes one entry can take, to bound counts by the bytes left before looping over them.
MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, 1-byte key, value type, 1-byte value
MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, 1-byte name, n_dims, one dim, type, offset

# ggml type id -> (name, block size in elements, bytes per block). Facts from ggml.h / ggml-common.h
# (type_traits); ids with no entry were removed from ggml (see REMOVED_GGML_TYPES). Q8_1 is 36 bytes
# (two fp16 + 32 int8) in ggml; gguf-py 0.19 still lists the old 40 (two fp32).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}
REMOVED_GGML_TYPES: dict[int, str] = {
    4: "Q4_2",
    5: "Q4_3",
    31: "Q4_0_4_4",
    32: "Q4_0_4_8",
    33: "Q4_0_8_8",
    36: "IQ4_NL_4_4",
    37: "IQ4_NL_4_8",
    38: "IQ4_NL_8_8",
}

# general.file_type (llama.cpp's llama_ftype) -> name, without the ALL_/MOSTLY_ prefix.
LLAMA_FTYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
LLAMA_FTYPE_GUESSED = 1024  # or-ed in by llama.cpp when it guessed the file type

# GGUF value types: id -> (name, struct format for scalars and array elements, size in bytes).
T_STRING, T_ARRAY, T_UINT32 = 8, 9, 4
T_BOOL = 7
VALUE_TYPES: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "<B", 1),
    1: ("INT8", "<b", 1),
    2: ("UINT16", "<H", 2),
    3: ("INT16", "<h", 2),
    4: ("UINT32", "<I", 4),
    5: ("INT32", "<i", 4),
    6: ("FLOAT32", "<f", 4),
    7: ("BOOL", "<B", 1),
    8: ("STRING", "", 8),
    9: ("ARRAY", "", 12),
    10: ("UINT64", "<Q", 8),
    11: ("INT64", "<q", 8),
    12: ("FLOAT64", "<d", 8),
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
FIX = "re-download or re-convert it"


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor info. ``shape`` is as stored (ggml order, ne0 first); ``offset`` is ABSOLUTE."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class GGUFFile:
    """A validated GGUF header. ``metadata`` values are int/float/bool/str, arrays as lists."""

    path: Path
    version: int
    alignment: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensor]
    data_start: int
    warnings: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t.numel for t in self.tensors)


def read_gguf(path: Path) -> GGUFFile:
    """Read and validate a GGUF file's header (metadata and tensor infos), never its tensor data.

    Raises :class:`InvalidFile` (one line, naming the file) for anything malformed or unsafe, and
    :class:`NotFound` when the path does not exist.
    """
    path = Path(path)
    name = path.name
    f = open_untrusted(path, "GGUF")
    try:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        _check_start(name, head, size)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _Parser(name, mm, len(mm)).parse(path)
    finally:
        f.close()


def _bad(name: str, reason: str) -> NoReturn:
    raise InvalidFile(f"{name}: {reason}; not a valid GGUF file, {FIX}")


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _show(text: str) -> str:
    return _clip(repr(text))


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)


def _check_start(name: str, head: bytes, size: int) -> None:
    if size < 4:
        _bad(name, f"only {size} bytes, too short for a GGUF header")
    if head[:4] != MAGIC:
        if head[:4] == MAGIC[::-1]:
            raise InvalidFile(f"{name}: big-endian GGUF not supported; convert it to little-endian")
        _bad(name, f"magic is {head[:4]!r}, not b'GGUF'")
    if size < 24:
        _bad(name, f"only {size} bytes, too short for a GGUF header (24 bytes)")
    (version,) = _U32.unpack_from(head, 4)
    if version in VERSIONS:
        return
    swapped = int.from_bytes(head[4:8], "big")
    if version & 0xFFFF == 0 and swapped in (1, 2, 3):
        # gguf-py writes big-endian files with the magic as-is and everything else byte-swapped.
        raise InvalidFile(
            f"{name}: big-endian GGUF not supported (version {swapped} byte-swapped); "
            "convert it to little-endian with gguf-py's gguf_convert_endian"
        )
    if version == 1:
        _bad(name, "GGUF version 1 is no longer supported by llama.cpp (needs 2 or 3)")
    _bad(name, f"GGUF version {version} is not supported (needs 2 or 3)")


class _Parser:
    """A cursor over the mapped file; every read is checked against the bytes left first."""

    def __init__(self, name: str, mm: mmap.mmap, size: int) -> None:
        self.name, self.mm, self.size, self.pos = name, mm, size, 0
        self.warnings: list[str] = []

    def bad(self, reason: str) -> NoReturn:
        _bad(self.name, reason)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            self.bad(f"{what} needs {n} bytes at offset {self.pos} but the file ends at {self.size}")

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.mm, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.mm, self.pos)
        self.pos += 8
        return v

    def raw_string(self, cap: int, what: str) -> bytes:
        n = self.u64(f"{what} length")
        if n > cap:
            self.bad(f"{what} length {n} exceeds the {cap}-byte limit")
        self.need(n, what)
        raw = self.mm[self.pos : self.pos + n]
        self.pos += n
        return raw

    def text(self, cap: int, what: str) -> str:
        raw = self.raw_string(cap, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad(f"{what} {_clip(repr(raw))} is not valid UTF-8")

    def parse(self, path: Path) -> GGUFFile:
        self.pos = 4
        version = self.u32("version")
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("key/value count")
        if n_tensors > MAX_TENSORS:
            self.bad(f"tensor count {n_tensors} exceeds the limit of {MAX_TENSORS}")
        if n_kv > MAX_KV:
            self.bad(f"key/value count {n_kv} exceeds the limit of {MAX_KV}")
        left = self.size - self.pos
        if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > left:
            self.bad(f"{n_kv} key/values and {n_tensors} tensor infos cannot fit in the {left} bytes left")

        metadata: dict[str, Any] = {}
        alignment = DEFAULT_ALIGNMENT
        for _ in range(n_kv):
            key = self.text(MAX_KEY_BYTES, "metadata key")
            if not key:
                self.bad("empty metadata key")
            if _has_control(key):
                self.bad(f"metadata key {_show(key)} contains a control character")
            if key in metadata:
                self.bad(f"duplicate metadata key {_show(key)}")
            vtype = self.u32(f"type of {key}")
            metadata[key] = self.value(vtype, key)
            if key == "general.alignment":
                alignment = metadata[key]
                if vtype != T_UINT32 or alignment == 0 or alignment & (alignment - 1):
                    self.bad(f"general.alignment {alignment!r} is not a power of two stored as UINT32")

        tensors = [self.tensor_info(i) for i in range(n_tensors)]
        seen: set[str] = set()
        for t in tensors:
            if t.name in seen:
                self.bad(f"duplicate tensor name {_show(t.name)}")
            seen.add(t.name)

        infos_end = self.pos
        data_start = _align(infos_end, alignment)
        placed = self.place(tensors, data_start, alignment)
        end = placed[-1].offset + placed[-1].nbytes if placed else infos_end
        if self.size > _align(end, alignment):
            self.bad(f"{self.size - _align(end, alignment)} trailing bytes after the last tensor")
        return GGUFFile(
            path=path,
            version=version,
            alignment=alignment,
            metadata=metadata,
            tensors=placed,
            data_start=data_start,
            warnings=self.warnings,
        )

    def value(self, vtype: int, key: str) -> Any:
        if vtype not in VALUE_TYPES:
            self.bad(f"value of {_show(key)} has unknown type {vtype} (0-12)")
        if vtype == T_STRING:
            return self.text(MAX_STRING_BYTES, f"value of {_show(key)}")
        if vtype == T_ARRAY:
            return self.array(key)
        _, fmt, size = VALUE_TYPES[vtype]
        self.need(size, f"value of {_show(key)}")
        (v,) = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += size
        if vtype == T_BOOL:
            if v > 1:
                self.bad(f"value of {_show(key)} is a BOOL holding {v}")
            return bool(v)
        return v

    def array(self, key: str) -> list[Any]:
        etype = self.u32(f"element type of {key}")
        if etype == T_ARRAY:
            self.bad(f"array {_show(key)} holds arrays (nested arrays are not allowed)")
        if etype not in VALUE_TYPES:
            self.bad(f"array {_show(key)} has unknown element type {etype} (0-12)")
        count = self.u64(f"length of {key}")
        if count > MAX_ARRAY_LEN:
            self.bad(f"array {_show(key)} length {count} exceeds the limit of {MAX_ARRAY_LEN}")
        _, fmt, size = VALUE_TYPES[etype]
        # Strings take at least their 8-byte length each: bound the count before looping.
        self.need(count * size, f"array {_show(key)} of {count} {VALUE_TYPES[etype][0]}")
        if etype == T_STRING:
            return self.string_array(key, count)
        raw = self.mm[self.pos : self.pos + count * size]
        self.pos += count * size
        values = np.frombuffer(raw, dtype=np.dtype(fmt))
        if etype == T_BOOL:
            if count and int(values.max()) > 1:
                self.bad(f"array {_show(key)} of BOOL holds a value other than 0 or 1")
            return values.astype(bool).tolist()
        return values.tolist()

    def string_array(self, key: str, count: int) -> list[str]:
        # The hot loop for vocabularies (~50k-250k tokens): locals only, one bounds check per element.
        mm, size, pos = self.mm, self.size, self.pos
        unpack = _U64.unpack_from
        out: list[str] = []
        append = out.append
        lossy = 0
        for i in range(count):
            if size - pos < 8:
                self.pos = pos
                self.need(8, f"length of {key}[{i}]")
            (n,) = unpack(mm, pos)
            pos += 8
            if n > MAX_ARRAY_STRING_BYTES or n > size - pos:
                self.pos = pos
                self.bad(f"string {key}[{i}] length {n} exceeds the limit or the bytes left")
            raw = mm[pos : pos + n]
            pos += n
            try:
                append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                # Some converted vocabularies hold byte fragments; keep them readable, and say so.
                append(raw.decode("utf-8", "replace"))
                lossy += 1
        self.pos = pos
        if lossy:
            self.warnings.append(f"{key}: {lossy} strings were not valid UTF-8 (decoded with U+FFFD)")
        return out

    def tensor_info(self, i: int) -> GGUFTensor:
        name = self.text(MAX_KEY_BYTES, f"name of tensor {i}")
        shown = _show(name)
        if not name:
            self.bad(f"tensor {i} has an empty name")
        if len(name.encode("utf-8")) >= GGML_MAX_NAME:
            self.bad(f"tensor name {shown} is longer than llama.cpp's {GGML_MAX_NAME - 1} bytes")
        if _has_control(name):
            self.bad(f"tensor name {shown} contains a control character")
        n_dims = self.u32(f"n_dims of {shown}")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            self.bad(f"tensor {shown} has {n_dims} dimensions (1 to {GGML_MAX_DIMS})")
        self.need(8 * n_dims, f"dimensions of {shown}")
        shape = struct.unpack_from(f"<{n_dims}Q", self.mm, self.pos)
        self.pos += 8 * n_dims
        numel = 1
        for d in shape:
            if d == 0:
                self.bad(f"tensor {shown} has a zero dimension {list(shape)}")
            numel *= d
            # ggml stores dims as int64; checking as we go keeps every product small.
            if numel > MAX_NUMEL:
                self.bad(f"tensor {shown} has more than 2^62 elements")
        type_id = self.u32(f"type of {shown}")
        if type_id not in GGML_TYPES:
            removed = REMOVED_GGML_TYPES.get(type_id)
            why = f"removed ggml type {removed}" if removed else f"unknown ggml type id {type_id}"
            self.bad(f"tensor {shown} has {why}")
        type_name, block, type_size = GGML_TYPES[type_id]
        if shape[0] % block:
            self.bad(f"tensor {shown} row of {shape[0]} is not a multiple of {type_name}'s block of {block}")
        offset = self.u64(f"offset of {shown}")
        return GGUFTensor(name, tuple(shape), type_id, type_name, offset, numel // block * type_size)

    def place(self, tensors: list[GGUFTensor], data_start: int, alignment: int) -> list[GGUFTensor]:
        """Check llama.cpp's layout rule and turn relative offsets into absolute ones."""
        placed = []
        expected = 0
        for t in tensors:
            shown, rel = _show(t.name), t.offset
            if rel % alignment:
                self.bad(f"tensor {shown} offset {rel} is not aligned to {alignment}")
            if rel < expected:
                self.bad(f"tensor {shown} at offset {rel} overlaps the previous tensor (ends {expected})")
            if rel > expected:
                self.bad(f"gap before tensor {shown}: offset {rel}, expected {expected}")
            if data_start + rel + t.nbytes > self.size:
                self.bad(
                    f"tensor {shown} ({t.nbytes} bytes at {data_start + rel}) runs past the end of the "
                    f"file ({self.size} bytes); the file is truncated"
                )
            placed.append(GGUFTensor(t.name, t.shape, t.type_id, t.type_name, data_start + rel, t.nbytes))
            expected = _align(rel + t.nbytes, alignment)
        return placed


def _align(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


# --- facts ------------------------------------------------------------------------------------------


def gguf_type_histogram(g: GGUFFile) -> dict[str, int]:
    """{ggml type name: tensor count}, most common first (then by name)."""
    counts: dict[str, int] = {}
    for t in g.tensors:
        counts[t.type_name] = counts.get(t.type_name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _predominant_type(g: GGUFFile) -> str | None:
    """The ggml type holding most elements; ties go to the type seen first."""
    elements: dict[str, int] = {}
    for t in g.tensors:
        elements[t.type_name] = elements.get(t.type_name, 0) + t.numel
    return max(elements, key=lambda k: elements[k]) if elements else None


def _int(value: Any) -> int | None:
    """An int fact; a per-layer array whose entries are all equal counts as that value."""
    if isinstance(value, list) and value and all(type(v) is int for v in value) and len(set(value)) == 1:
        value = value[0]
    return value if type(value) is int else None


def gguf_facts(g: GGUFFile) -> dict[str, Any]:
    """The model facts (owlkit.formats.base.MODEL_FACT_KEYS) read from a GGUF header."""
    md = g.metadata
    arch = md.get("general.architecture")
    arch = arch if isinstance(arch, str) and arch else None

    def arch_value(key: str) -> Any:
        return md.get(f"{arch}.{key}") if arch else None

    dtype = _predominant_type(g)
    file_type = md.get("general.file_type")
    ftype_name = LLAMA_FTYPES.get(file_type & ~LLAMA_FTYPE_GUESSED) if type(file_type) is int else None
    quant = ftype_name or dtype
    vocab = _int(arch_value("vocab_size"))
    tokens = md.get("tokenizer.ggml.tokens")
    if vocab is None and isinstance(tokens, list):
        vocab = len(tokens)
    heads = _int(arch_value("attention.head_count"))
    kv_heads = _int(arch_value("attention.head_count_kv"))
    template = md.get("tokenizer.chat_template")
    facts: dict[str, Any] = dict.fromkeys(MODEL_FACT_KEYS)
    facts.update(
        architecture=arch,
        parameters=g.parameters,
        dtype=dtype,
        quantization=f"gguf:{quant}" if quant else None,
        vocab_size=vocab,
        context_length=_int(arch_value("context_length")),
        shapes={
            "layers": _int(arch_value("block_count")),
            "hidden": _int(arch_value("embedding_length")),
            "intermediate": _int(arch_value("feed_forward_length")),
            "heads": heads,
            "kv_heads": kv_heads if kv_heads is not None else heads,
        },
        tie_word_embeddings=not any(t.name == "output.weight" for t in g.tensors),
        chat_template_digest=digest_text(template) if isinstance(template, str) else None,
        tokenizer_digest=None,
    )
    return facts


def gguf_license(g: GGUFFile) -> str | None:
    """``general.license`` as given (not normalised to SPDX here), or None."""
    value = g.metadata.get("general.license")
    return value if isinstance(value, str) and value.strip() else None


# Keys that may name the model's own upstream repo, most specific first. (general.base_model.N.* name
# the model it was derived from, which is lineage, not origin.)
ORIGIN_KEYS = (
    "general.source.huggingface.repository",
    "general.source.repo_url",
    "general.source.url",
    "general.repo_url",
    "general.url",
)
_HF_HOSTS = {"huggingface.co", "www.huggingface.co", "hf.co"}
_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_NOT_MODEL_PATHS = {
    "datasets",
    "spaces",
    "models",
    "docs",
    "api",
    "blog",
    "collections",
    "papers",
    "settings",
}


def _hf_repo(value: str, *, bare_ok: bool) -> tuple[str, str | None] | None:
    """(repo_id, revision) from a Hugging Face model URL, or from a bare "org/name" when allowed."""
    value = value.strip()
    if bare_ok and "://" not in value:
        parts = value.split("/")
        if len(parts) == 2 and all(_REPO_PART.match(p) for p in parts):
            return value, None
        return None
    try:
        url = urlsplit(value)
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or (url.hostname or "").lower() not in _HF_HOSTS:
        return None
    parts = [p for p in url.path.split("/") if p]
    if not parts or parts[0] in _NOT_MODEL_PATHS:
        return None
    if len(parts) == 1 or parts[1] in ("tree", "blob", "resolve", "commit"):
        repo, rest = parts[:1], parts[1:]  # a legacy repo without an org ("gpt2")
    else:
        repo, rest = parts[:2], parts[2:]
    if not all(_REPO_PART.match(p) for p in repo):
        return None
    revision = (
        unquote(rest[1]) if len(rest) >= 2 and rest[0] in ("tree", "blob", "resolve", "commit") else None
    )
    return "/".join(repo), revision


def gguf_origin(g: GGUFFile) -> tuple[str | None, str | None, str | None]:
    """(repo_id, revision, via) from the first metadata key naming a Hugging Face model repo."""
    for key in ORIGIN_KEYS:
        value = g.metadata.get(key)
        if not isinstance(value, str):
            continue
        found = _hf_repo(value, bare_ok=key == "general.source.huggingface.repository")
        if found:
            return found[0], found[1], f"GGUF {key}"
    return None, None, None

"""What differs between two stored artifacts: files, tensors, configs, card, facts, recipe and lineage.

Tensors are compared straight from the stored blobs, after the strict header readers
(formats/safetensors.py, formats/gguf.py) have validated every offset: bytes are read in chunks of at
most ``CHUNK_ELEMENTS`` elements per side, so memory stays bounded by the chunk, never by the tensor
or the model. Chunks whose bytes are equal cost one comparison; only differing chunks are decoded to
float64 (quantized GGUF blocks through gguf-py's ``dequantize``), so two identical 7B files compare at
disk speed.

``compare_weight_files`` and ``first_tensor_difference`` work on any two safetensors or two GGUF files
(``owl rebuild`` uses the latter to name the first tensor that did not reproduce).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from owlkit.errors import Corrupt, InvalidFile, UsageError

if TYPE_CHECKING:
    from owlkit.store import Store
    from owlkit.store.store import Record

# Elements per side decoded at once: 8 MiB of float64 each, whatever the tensor's size.
CHUNK_ELEMENTS = 1 << 20
# Config and card files are small by nature; a bigger one is reported rather than read.
MAX_TEXT_BYTES = 16 << 20
CONFIG_FILES = ("config.json", "adapter_config.json", "generation_config.json")
CARD_FILE = "readme.md"
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
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
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
        return {
            "name": self.name,
            "shape_a": list(self.shape_a) if self.shape_a is not None else None,
            "shape_b": list(self.shape_b) if self.shape_b is not None else None,
            "dtype_a": self.dtype_a,
            "dtype_b": self.dtype_b,
            "max_abs": self.max_abs,
            "mean_abs": self.mean_abs,
            "note": self.note,
        }


# ----- reading tensors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
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


def _read_tensors(path: Path, label: str | None = None) -> tuple[str, list[_Tensor]]:
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
                    _Tensor(
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
        tensors.append(_Tensor(t.name, t.shape, t.dtype, path, t.begin, t.nbytes, block, block * bits // 8))
    return fmt, tensors


@dataclass
class _Files:
    """Open file descriptors by path, closed together; every read is a bounded ``pread``."""

    fds: dict[Path, int] = field(default_factory=dict)

    def read(self, t: _Tensor, e0: int, e1: int) -> bytes:
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


def _decodable(t: _Tensor) -> bool:
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


def _why(t: _Tensor) -> str:
    """Why a tensor's values cannot be compared, with the fix where there is one."""
    if t.ggml_type is not None:
        try:
            import gguf  # noqa: F401
        except ImportError:
            return f"cannot decode {t.dtype} without gguf-py: pip install 'owlkit[ml]'"
    return f"cannot decode {t.dtype}"


def _decode(t: _Tensor, raw: bytes) -> np.ndarray:
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


def _compare_pair(files: _Files, a: _Tensor, b: _Tensor) -> TensorDiff:
    diff = TensorDiff(a.name, a.shape, b.shape, a.dtype, b.dtype)
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


def _missing(t: _Tensor, side: str) -> TensorDiff:
    if side == "a":
        return TensorDiff(t.name, t.shape, None, t.dtype, None, note=ONLY_A)
    return TensorDiff(t.name, None, t.shape, None, t.dtype, note=ONLY_B)


def _tensor_diffs(tensors_a: list[_Tensor], tensors_b: list[_Tensor]) -> Iterator[TensorDiff]:
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


def _compare_tensors(tensors_a: list[_Tensor], tensors_b: list[_Tensor]) -> list[TensorDiff]:
    return list(_tensor_diffs(tensors_a, tensors_b))


def _same_format(a: Path, b: Path) -> tuple[list[_Tensor], list[_Tensor]]:
    fmt_a, ta = _read_tensors(a)
    fmt_b, tb = _read_tensors(b)
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
    return _compare_tensors(ta, tb)


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


def layer_summary(diffs: Iterable[TensorDiff]) -> list[dict[str, Any]]:
    """Per block index (``layers.N.`` / ``blk.N.``): tensors compared, how many differ, the largest
    max abs difference (None when no values could be compared)."""
    layers: dict[int, dict[str, Any]] = {}
    for d in diffs:
        n = d.layer
        if n is None:
            continue
        row = layers.setdefault(n, {"layer": n, "tensors": 0, "differing": 0, "max_abs": None})
        row["tensors"] += 1
        row["differing"] += d.differs
        if d.max_abs is not None:
            row["max_abs"] = max(row["max_abs"] or 0.0, d.max_abs)
    return [layers[n] for n in sorted(layers)]


# ----- key-level differences ---------------------------------------------------------------------------


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``rope_scaling.factor``); lists and scalars are leaf values."""
    if not isinstance(obj, dict) or (prefix and not obj):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def key_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any]:
    """``{added: {key: B value}, removed: {key: A value}, changed: {key: {a, b}}}`` over dotted keys."""
    fa, fb = flatten(a or {}), flatten(b or {})
    return {
        "added": {k: fb[k] for k in sorted(fb) if k not in fa},
        "removed": {k: fa[k] for k in sorted(fa) if k not in fb},
        "changed": {k: {"a": fa[k], "b": fb[k]} for k in sorted(fa) if k in fb and not _equal(fa[k], fb[k])},
    }


def _equal(x: Any, y: Any) -> bool:
    # 1 == 1.0 == True in Python, yet a config that turned an int into a float or bool did change
    return type(x) is type(y) and x == y


def is_empty(kd: dict[str, Any]) -> bool:
    return not (kd["added"] or kd["removed"] or kd["changed"])


# ----- artifacts ---------------------------------------------------------------------------------------


@dataclass
class ArtifactDiff:
    """Everything that differs between artifacts A and B (see :func:`diff_artifacts`)."""

    a: dict[str, Any]
    b: dict[str, Any]
    identical: bool
    files: dict[str, Any]
    tensors: dict[str, Any]
    configs: dict[str, dict[str, Any]]
    card: dict[str, Any] | None
    manifest: dict[str, Any]
    facts: dict[str, Any]
    recipe: dict[str, Any]
    lineage: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "identical": self.identical,
            "files": self.files,
            "tensors": self.tensors,
            "configs": self.configs,
            "card": self.card,
            "manifest": self.manifest,
            "facts": self.facts,
            "recipe": self.recipe,
            "lineage": self.lineage,
            "notes": self.notes,
        }


def _side(rec: Record) -> dict[str, Any]:
    m = rec.manifest
    return {"name": rec.name, "digest": rec.digest, "kind": m.kind, "format": m.format}


def diff_artifacts(store: Store, ref_a: str, ref_b: str) -> ArtifactDiff:
    """Compare two stored artifacts (NAME[:TAG] or digest prefix each; NotFound for an unknown one).

    Files by sha256; tensors of the weight files both sides have in one format (paired by path, or
    all of a format's files merged into one tensor namespace when the paths differ, as for
    ``x-q8_0.gguf`` against ``x-q4_0.gguf``); config.json / adapter_config.json / generation_config.json
    and the README.md front matter key by key; manifest kind, format, license and facts; the recipe
    (name, params, inputs, seed); parent edges.
    """
    ra, rb = store.find(ref_a), store.find(ref_b)
    ma, mb = ra.manifest, rb.manifest
    empty_keys = key_diff({}, {})
    if ra.digest == rb.digest:
        return ArtifactDiff(
            _side(ra),
            _side(rb),
            True,
            {"added": [], "removed": [], "changed": [], "same": len(ma.files)},
            {"pairs": [], "compared": 0, "same": 0, "differing": [], "layers": []},
            {},
            None,
            empty_keys,
            empty_keys,
            {"a": ma.recipe is not None, "b": mb.recipe is not None, **empty_keys},
            {"only_a": [], "only_b": [], "same": _parents(store, ra), "direct": []},
        )
    notes: list[str] = []
    files_a = {f.path: f for f in ma.files}
    files_b = {f.path: f for f in mb.files}
    files = {
        "added": [{"path": p, "size": files_b[p].size} for p in sorted(files_b) if p not in files_a],
        "removed": [{"path": p, "size": files_a[p].size} for p in sorted(files_a) if p not in files_b],
        "changed": [
            {
                "path": p,
                "size_a": files_a[p].size,
                "size_b": files_b[p].size,
                "sha256_a": files_a[p].sha256,
                "sha256_b": files_b[p].sha256,
            }
            for p in sorted(files_a)
            if p in files_b and files_a[p].sha256 != files_b[p].sha256
        ],
        "same": sum(p in files_b and files_a[p].sha256 == files_b[p].sha256 for p in files_a),
    }
    return ArtifactDiff(
        _side(ra),
        _side(rb),
        False,
        files,
        _tensor_section(store, ra, rb, notes),
        _config_section(store, ra, rb, notes),
        _card_section(store, ra, rb, notes),
        key_diff(
            {"kind": ma.kind, "format": ma.format, "license": ma.license},
            {"kind": mb.kind, "format": mb.format, "license": mb.license},
        ),
        key_diff(ma.facts, mb.facts),
        {
            "a": ma.recipe is not None,
            "b": mb.recipe is not None,
            **key_diff(ma.recipe.to_json() if ma.recipe else {}, mb.recipe.to_json() if mb.recipe else {}),
        },
        _lineage_section(store, ra, rb),
        notes,
    )


def _blob(store: Store, rec: Record, rel: str) -> Path:
    f = next(f for f in rec.manifest.files if f.path == rel)
    path = store.blobs.path(f.sha256)
    if not path.is_file():
        raise Corrupt(f"{rec.name}: {rel} is missing from the store: run `owl verify {rec.name}`")
    return path


def _weights(store: Store, rec: Record, fmt: str) -> tuple[list[str], list[_Tensor]]:
    """One format's weight files of an artifact, their tensors merged into one namespace (a name two
    shards both hold is qualified by its file, so neither hides the other)."""
    rels = sorted(f.path for f in rec.manifest.files if WEIGHT_FORMATS.get(Path(f.path).suffix) == fmt)
    per_file = []
    for rel in rels:
        found, tensors = _read_tensors(_blob(store, rec, rel), f"{rec.name}: {rel}")
        if found != fmt:
            raise InvalidFile(f"{rec.name}: {rel} is not a {fmt} file despite its name; re-import it")
        per_file.append((rel, tensors))
    counts: dict[str, int] = {}
    for _, tensors in per_file:
        for t in tensors:
            counts[t.name] = counts.get(t.name, 0) + 1
    merged = [t if counts[t.name] == 1 else _qualified(t, rel) for rel, tensors in per_file for t in tensors]
    return rels, merged


def _qualified(t: _Tensor, rel: str) -> _Tensor:
    from dataclasses import replace

    return replace(t, name=f"{rel}:{t.name}")


def _tensor_section(store: Store, ra: Record, rb: Record, notes: list[str]) -> dict[str, Any]:
    pairs, diffs = [], []
    for fmt in sorted(set(WEIGHT_FORMATS.values())):
        rels_a, ta = _weights(store, ra, fmt) if _has(ra, fmt) else ([], [])
        rels_b, tb = _weights(store, rb, fmt) if _has(rb, fmt) else ([], [])
        if not rels_a or not rels_b:
            if rels_a or rels_b:
                side = "A" if rels_a else "B"
                notes.append(f"only {side} has {fmt} weights: no tensors of that format to compare")
            continue
        if not {t.name for t in ta} & {t.name for t in tb}:  # a model against an adapter, say
            notes.append(f"A's and B's {fmt} weights share no tensor name: not compared tensor by tensor")
            continue
        pairs.append({"format": fmt, "a": rels_a, "b": rels_b})
        diffs += _compare_tensors(ta, tb)
    return {
        "pairs": pairs,
        "compared": len(diffs),
        "same": sum(not d.differs for d in diffs),
        "differing": [d.to_dict() for d in diffs if d.differs],
        "layers": layer_summary(diffs),
    }


def _has(rec: Record, fmt: str) -> bool:
    return any(WEIGHT_FORMATS.get(Path(f.path).suffix) == fmt for f in rec.manifest.files)


def _read_text(store: Store, rec: Record, rel: str) -> str | None:
    path = _blob(store, rec, rel)
    if path.stat().st_size > MAX_TEXT_BYTES:
        return None
    return path.read_bytes().decode("utf-8", errors="replace")


def _changed_pairs(ra: Record, rb: Record, wanted: Iterable[str]) -> list[str]:
    """Paths both artifacts hold, whose base name (lower case) is wanted, and whose content differs."""
    names = {w.lower() for w in wanted}
    sha_b = {f.path: f.sha256 for f in rb.manifest.files}
    return sorted(
        f.path
        for f in ra.manifest.files
        if f.path.rsplit("/", 1)[-1].lower() in names and f.path in sha_b and sha_b[f.path] != f.sha256
    )


def _config_section(store: Store, ra: Record, rb: Record, notes: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for rel in _changed_pairs(ra, rb, CONFIG_FILES):
        values = []
        for rec, side in ((ra, "A"), (rb, "B")):
            text = _read_text(store, rec, rel)
            try:
                value = json.loads(text) if text is not None else None
            except ValueError:
                value = None
            if not isinstance(value, dict):
                notes.append(f"{rel} of {side} is not a JSON object of at most {MAX_TEXT_BYTES >> 20} MiB")
                break
            values.append(value)
        else:
            out[rel] = key_diff(values[0], values[1])
    return out


def _card_section(store: Store, ra: Record, rb: Record, notes: list[str]) -> dict[str, Any] | None:
    """The README.md front matter's key differences; None when the cards are the same or absent."""
    from owlkit.formats.card import parse_card_checked

    rels = [r for r in _changed_pairs(ra, rb, [CARD_FILE]) if "/" not in r]
    if not rels:
        return None
    metas = []
    for rec, side in ((ra, "A"), (rb, "B")):
        text = _read_text(store, rec, rels[0])
        meta, _body, problem = parse_card_checked(text or "")
        if problem:
            notes.append(f"{rels[0]} of {side}: {problem}")
        metas.append(meta)
    kd = key_diff(metas[0], metas[1])
    if is_empty(kd):
        notes.append(f"{rels[0]} differs in its text, not its metadata")
    return kd


def _parents(store: Store, rec: Record) -> list[dict[str, Any]]:
    up, _ = store.edges_of(rec.digest)
    return [
        {
            "relation": e.relation,
            "digest": e.parent,
            "name": store.label(e.parent) if e.parent else e.parent_ref,
        }
        for e in up
    ]


def _lineage_section(store: Store, ra: Record, rb: Record) -> dict[str, Any]:
    pa, pb = _parents(store, ra), _parents(store, rb)

    def key(p: dict[str, Any]) -> tuple[str, str]:
        return p["relation"], p["digest"] or f"unresolved:{p['name']}"

    ka, kb = {key(p) for p in pa}, {key(p) for p in pb}
    direct = [f"B {p['relation']} A" for p in pb if p["digest"] == ra.digest]
    direct += [f"A {p['relation']} B" for p in pa if p["digest"] == rb.digest]
    return {
        "only_a": [p for p in pa if key(p) not in kb],
        "only_b": [p for p in pb if key(p) not in ka],
        "same": [p for p in pa if key(p) in kb],
        "direct": direct,
    }

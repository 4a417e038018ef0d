"""HF Llama-shaped folder -> GGUF (F32, F16, Q8_0, Q4_0, Q4_1), streamed one tensor at a time.

What llama.cpp's ``convert_hf_to_gguf.py`` writes for a Llama model, without torch: the architecture
keys, the tokenizer (quantize/gguf_vocab.py), the chat template and special ids, ``general.license`` and
the caller's lineage keys; HF names mapped to llama.cpp's (runtime/gguf_llama.py holds the map both
directions use) with q/k rows permuted into llama.cpp's rotary order. Quantization is gguf-py's numpy
code (bit-exact with ggml's reference quantizers for these types; the tests compare with llama.cpp's own
``llama_model_quantize``).

Type map (llama.cpp's converter, and ``llama-quantize --pure`` for Q4_0/Q4_1, since gguf-py cannot write
the K-quants the non-pure mixes put on the output layer):

    1-D tensors (RMS norms)                         F32 always
    2-D weights, --to f32 / f16                     F32 / F16
    2-D weights, --to q8_0 / q4_0 / q4_1            that type; F16 when a row's length is not a
                                                    multiple of the 32-element block

Memory: the source is read with positioned reads (no memory map, whose touched pages would count against
the process until the end) in slabs of rows, and each slab is quantized into the output tensor's buffer,
so the peak is about one output tensor plus one slab's float32 work, not the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from owlkit.errors import FileSystemError, InvalidFile, OwlError, Refused, UsageError
from owlkit.quantize.gguf_vocab import add_vocabulary
from owlkit.runtime.gguf_llama import gguf_name, llama_shapes, permute_qk

GGUF_TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_1")
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")
# Weights llama.cpp recomputes: older checkpoints stored the rotary inverse frequencies.
_IGNORED_SUFFIX = ".rotary_emb.inv_freq"
_SOURCE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_SLAB_ELEMENTS = 1 << 22  # 16 MiB of float32 per quantization slab
_DATA_TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1"}
_FILE_TYPES = {
    "f32": "ALL_F32",
    "f16": "MOSTLY_F16",
    "q8_0": "MOSTLY_Q8_0",
    "q4_0": "MOSTLY_Q4_0",
    "q4_1": "MOSTLY_Q4_1",
}


@dataclass
class ExportReport:
    qtype: str
    parameters: int
    tensor_bytes: int
    file_bytes: int
    types: dict[str, int]  # ggml type name -> number of tensors
    fallbacks: list[str] = field(default_factory=list)  # weights written F16: rows not a block multiple
    tokenizer: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def bits_per_weight(self) -> float:
        """Tensor bits per parameter, as llama.cpp reports BPW (metadata not counted)."""
        return 8 * self.tensor_bytes / self.parameters if self.parameters else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "qtype": self.qtype,
            "parameters": self.parameters,
            "tensor_bytes": self.tensor_bytes,
            "file_bytes": self.file_bytes,
            "bits_per_weight": round(self.bits_per_weight, 4),
            "types": self.types,
            "fallbacks": self.fallbacks,
            "tokenizer": self.tokenizer,
            "notes": self.notes,
        }


@dataclass
class _Source:
    hf: str
    gguf: str
    shape: tuple[int, ...]
    path: Path
    begin: int
    dtype: str


def tensor_type(shape: tuple[int, ...], qtype: str) -> Any:
    """The ggml type a weight of HF ``shape`` is written as for ``--to gguf-<qtype>`` (see the module)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) == 1 or qtype == "f32":
        return GGMLQuantizationType.F32
    wanted = GGMLQuantizationType[_DATA_TYPES[qtype]]
    block, _ = GGML_QUANT_SIZES[wanted]
    return wanted if shape[-1] % block == 0 else GGMLQuantizationType.F16


def _nbytes(shape: tuple[int, ...], ggml_type: Any) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[ggml_type]
    return math.prod(shape) // block * size


def read_config(hf_dir: Path) -> dict[str, Any]:
    from owlkit.formats.hf_folder import read_json

    config = read_json(hf_dir, "config.json")
    if config is None:
        raise InvalidFile(f"{hf_dir.name}: config.json is missing; not a Hugging Face model folder")
    archs = config.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise Refused(
            f"{hf_dir.name}: architecture {', '.join(map(str, archs)) or config.get('model_type')!r} cannot "
            f"be exported to GGUF; owlkit writes {', '.join(SUPPORTED_ARCHITECTURES)} (Llama-shaped) models"
        )
    return config


@dataclass(frozen=True)
class LlamaShape:
    """The config.json values the export needs, read without transformers (whose import, torch included,
    would cost about 300 MiB of the export's memory). Defaults are LlamaConfig's."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope_parameters: dict[str, Any]


def _rope(raw: dict[str, Any]) -> dict[str, Any]:
    """transformers 5's ``rope_parameters``, or the same built from the older rope_theta / rope_scaling."""
    if isinstance(raw.get("rope_parameters"), dict):
        return dict(raw["rope_parameters"])
    scaling = raw.get("rope_scaling") if isinstance(raw.get("rope_scaling"), dict) else {}
    rope = {**scaling, "rope_theta": raw.get("rope_theta", 10000.0)}
    rope["rope_type"] = scaling.get("rope_type") or scaling.get("type") or "default"
    return rope


def _llama_config(hf_dir: Path, raw: dict[str, Any]) -> LlamaShape:
    def positive(key: str, default: int | None) -> int:
        value = raw.get(key, default) if raw.get(key) is not None else default
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidFile(f"{hf_dir.name}/config.json: {key} is {value!r}, not a positive integer")
        return value

    heads = positive("num_attention_heads", 32)
    hidden = positive("hidden_size", 4096)
    eps = raw.get("rms_norm_eps", 1e-6)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
        raise InvalidFile(f"{hf_dir.name}/config.json: rms_norm_eps is {eps!r}, not a positive number")
    config = LlamaShape(
        vocab_size=positive("vocab_size", 32000),
        hidden_size=hidden,
        intermediate_size=positive("intermediate_size", 11008),
        num_hidden_layers=positive("num_hidden_layers", 32),
        num_attention_heads=heads,
        num_key_value_heads=positive("num_key_value_heads", heads),
        head_dim=positive("head_dim", hidden // heads),
        max_position_embeddings=positive("max_position_embeddings", 2048),
        rms_norm_eps=float(eps),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        rope_parameters=_rope(raw),
    )
    rope = config.rope_parameters
    if rope.get("rope_type", "default") not in ("default", "linear"):
        raise Refused(
            f"{hf_dir.name}: rope scaling {rope.get('rope_type')!r} is not exported yet (default and linear "
            "are); use llama.cpp's convert_hf_to_gguf.py for this model"
        )
    if config.head_dim % 2 or config.num_attention_heads % config.num_key_value_heads:
        raise InvalidFile(
            f"{hf_dir.name}/config.json: head width {config.head_dim} or head counts "
            f"{config.num_attention_heads}/{config.num_key_value_heads} are inconsistent"
        )
    return config


def _sources(hf_dir: Path, config: LlamaShape) -> list[_Source]:
    """Every weight the GGUF needs, located in the (validated) safetensors files, in write order."""
    from owlkit.formats.safetensors import read_safetensors_header

    name = hf_dir.name
    files = sorted(hf_dir.glob("*.safetensors"))
    if not files:
        raise InvalidFile(
            f"{name}: no .safetensors weights; import or convert the model to safetensors first"
        )
    expected = llama_shapes(config)
    found: dict[str, _Source] = {}
    for path in files:
        for t in read_safetensors_header(path).tensors:  # InvalidFile for a truncated or malformed file
            if t.name.endswith(_IGNORED_SUFFIX) or (
                t.name == "lm_head.weight" and config.tie_word_embeddings
            ):
                continue
            if t.name not in expected:
                raise Refused(
                    f"{path.name}: tensor {t.name} has no place in a Llama GGUF; the model is not Llama-shaped"
                )
            if t.shape != expected[t.name]:
                raise InvalidFile(
                    f"{path.name}: tensor {t.name} has shape {list(t.shape)}, config.json implies "
                    f"{list(expected[t.name])}; the folder is inconsistent"
                )
            if t.dtype not in _SOURCE_DTYPES:
                raise Refused(
                    f"{path.name}: tensor {t.name} is {t.dtype}; GGUF export reads F32, F16 and BF16"
                )
            g = gguf_name(t.name)
            assert g is not None  # every expected name is mapped
            found[t.name] = _Source(t.name, g, t.shape, path, t.begin, t.dtype)
    missing = [n for n in expected if n not in found]
    if missing:
        raise InvalidFile(f"{name}: weight {missing[0]} is missing; the folder is incomplete")
    return [found[n] for n in expected]


def _read_rows(fd: int, src: _Source, row0: int, rows: int) -> np.ndarray:
    """Rows ``row0 .. row0+rows`` of a 2-D (or the whole 1-D) source tensor as float32."""
    cols = src.shape[-1] if len(src.shape) > 1 else src.shape[0]
    dtype = _SOURCE_DTYPES[src.dtype]
    itemsize = np.dtype(dtype).itemsize
    want = rows * cols * itemsize
    raw = os.pread(fd, want, src.begin + row0 * cols * itemsize)
    if len(raw) != want:
        raise InvalidFile(f"{src.path.name}: tensor {src.hf} is cut short; the file is truncated")
    values = np.frombuffer(raw, dtype=dtype).reshape(rows, cols)
    if src.dtype == "BF16":  # bfloat16 is the top half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


def _convert(fd: int, src: _Source, ggml_type: Any, heads: int | None) -> np.ndarray:
    """One tensor, converted to ``ggml_type`` as the bytes (or floats) GGUFWriter writes."""
    from gguf.quants import quantize

    rows = src.shape[0] if len(src.shape) > 1 else 1
    if heads is not None:  # q/k: the permutation mixes rows across the tensor, so read it whole
        data = permute_qk(_read_rows(fd, src, 0, rows), heads)
        return quantize(data, ggml_type)
    slab = max(1, _SLAB_ELEMENTS // (src.shape[-1]))
    parts = [quantize(_read_rows(fd, src, r, min(slab, rows - r)), ggml_type) for r in range(0, rows, slab)]
    out = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return out.reshape(-1) if len(src.shape) == 1 else out


def _heads(src: _Source, config: LlamaShape) -> int | None:
    if src.hf.endswith(".self_attn.q_proj.weight"):
        return config.num_attention_heads
    if src.hf.endswith(".self_attn.k_proj.weight"):
        return config.num_key_value_heads
    return None


def _add_model_keys(writer: Any, config: LlamaShape, qtype: str) -> None:
    import gguf

    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.head_dim)
    if config.head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    rope = config.rope_parameters or {}
    if rope.get("rope_theta") is not None:
        writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_file_type(gguf.LlamaFileType[_FILE_TYPES[qtype]])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


@contextmanager
def atomic_gguf(out_path: Path, what: str) -> Iterator[Any]:
    """A GGUFWriter on ``out_path.partial``: on success the file is closed, synced and renamed over
    ``out_path``; on any failure it is removed, and an OSError (a full disk) becomes FileSystemError."""
    import gguf

    partial = out_path.with_name(out_path.name + ".partial")
    writer = gguf.GGUFWriter(partial, "llama")  # general.architecture: owlkit writes Llama-shaped files
    try:
        yield writer
        writer.close()
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, out_path)
    except BaseException as e:
        writer.close()
        partial.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OwlError):  # Refused is a PermissionError
            raise FileSystemError(
                f"{out_path.name}: writing the {what} failed ({e.strerror or e}); free disk space"
            ) from None
        raise


def add_metadata(writer: Any, metadata: Mapping[str, Any]) -> None:
    """String, int and bool keys (general.name, general.license, lineage) added to a GGUFWriter."""
    for key, value in metadata.items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            raise UsageError(f"GGUF metadata {key}: {type(value).__name__} values are not supported")


def export_gguf(
    hf_dir: Path,
    out_path: Path,
    qtype: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    advance: Callable[[int], None] | None = None,
) -> ExportReport:
    """Write the Llama-shaped HF folder ``hf_dir`` as a GGUF of ``qtype`` (one of GGUF_TYPES) at
    ``out_path``. ``metadata`` adds string/int/bool keys (general.name, general.license, lineage);
    ``advance(n)`` is called with the source bytes done after each tensor.

    InvalidFile for a truncated, malformed or inconsistent folder; Refused for an architecture, tokenizer
    or tensor type this exporter does not write; FileSystemError when the disk fills. Nothing is left at
    ``out_path`` on failure (the file is written beside it and renamed at the end).
    """

    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if qtype not in GGUF_TYPES:
        raise UsageError(
            f"GGUF type {qtype!r} is not written by owlkit; choose one of {', '.join(GGUF_TYPES)}"
        )
    raw = read_config(hf_dir)
    config = _llama_config(hf_dir, raw)
    sources = _sources(hf_dir, config)
    plan = [(s, tensor_type(s.shape, qtype)) for s in sources]

    with atomic_gguf(out_path, "GGUF") as writer:
        add_metadata(writer, metadata or {})
        _add_model_keys(writer, config, qtype)
        tokenizer, notes = add_vocabulary(writer, hf_dir, config.vocab_size)
        for s, t in plan:
            # GGUF (like ggml) lists dimensions fastest-first; GGUFWriter takes numpy order and reverses it.
            writer.add_tensor_info(s.gguf, s.shape, np.dtype(np.float32), _nbytes(s.shape, t), raw_dtype=t)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        fds: dict[Path, int] = {}
        try:
            for s, t in plan:
                fd = fds.get(s.path) or fds.setdefault(s.path, os.open(s.path, os.O_RDONLY))
                writer.write_tensor_data(_convert(fd, s, t, _heads(s, config)))
                if advance:
                    advance(math.prod(s.shape) * np.dtype(_SOURCE_DTYPES[s.dtype]).itemsize)
        finally:
            for fd in fds.values():
                os.close(fd)

    types: dict[str, int] = {}
    for _, t in plan:
        types[t.name] = types.get(t.name, 0) + 1
    return ExportReport(
        qtype=qtype,
        parameters=sum(math.prod(s.shape) for s in sources),
        tensor_bytes=sum(_nbytes(s.shape, t) for s, t in plan),
        file_bytes=out_path.stat().st_size,
        types=types,
        fallbacks=[
            s.gguf for s, t in plan if len(s.shape) > 1 and qtype not in ("f32", "f16") and t.name == "F16"
        ],
        tokenizer=tokenizer,
        notes=notes,
    )

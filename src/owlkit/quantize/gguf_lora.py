"""PEFT LoRA adapter -> GGUF LoRA adapter, the file llama.cpp applies on top of a base GGUF.

The facts, from llama.cpp's ``convert_lora_to_gguf.py`` and ``src/llama-adapter.cpp``:

- keys: ``general.type`` "adapter", ``general.architecture`` equal to the base's ("llama"),
  ``adapter.type`` "lora", ``adapter.lora.alpha`` (float32);
- tensors: ``<base GGUF tensor name>.lora_a`` holding PEFT's A as it is ([r, in], so ggml's ne is
  [in, r]) and ``.lora_b`` holding B ([out, r], ne [r, out]); llama.cpp checks a.ne[0] and b.ne[1]
  against the base weight and a.ne[1] == b.ne[0];
- q/k: the base's q/k rows are stored in llama.cpp's rotary order, so B's rows get the same
  permutation (with the KV head count for k); A acts on the input and is left alone;
- scale: ``alpha / rank`` with the rank of each tensor (b.ne[0]), and 1 when alpha is 0. PEFT scales by
  ``alpha / r`` too, but with rsLoRA by ``alpha / sqrt(r)`` and per module with ``alpha_pattern``:
  whatever llama.cpp would not compute itself is folded into B, and said in the returned notes.

What llama.cpp cannot apply, or PEFT computes differently, is refused before anything is written: other
PEFT methods, DoRA, bias and embedding / output-head adapters, modules saved whole, and an adapter whose
shapes are not the base's. Tensors are read with owlkit's validating safetensors reader (no torch).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from owlkit.errors import InvalidFile, NotFound, Refused, UsageError
from owlkit.runtime.gguf_llama import gguf_name, llama_shapes, permute_qk

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LORA_TYPES = ("f32", "f16")
PREFIX = "base_model.model."
_LORA_TENSOR = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")
_SOURCE_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
_NOT_LLAMA_CPP = "llama.cpp cannot apply it"
# Config switches of LoRA variants that change the arithmetic (or the modules) in ways a GGUF LoRA
# cannot carry; a false / empty value is plain LoRA.
_VARIANTS = {
    "use_dora": "a DoRA adapter (its magnitude vector has no GGUF form)",
    "lora_bias": "an adapter with a bias on lora_B",
    "target_parameters": "an adapter on parameters rather than modules",
    "trainable_token_indices": "an adapter that trains token embeddings",
    "layer_replication": "an adapter that replicates layers",
    "alora_invocation_tokens": "an activated LoRA (aLoRA)",
    "fan_in_fan_out": "an adapter stored fan_in_fan_out (transposed, for Conv1D layers)",
    "modules_to_save": "an adapter that saves whole modules (modules_to_save)",
}


def export_gguf_lora(
    adapter_dir: Path,
    out_path: Path,
    base_config: dict[str, Any],
    *,
    qtype: Literal["f32", "f16"] = "f32",
    metadata: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Write the PEFT LoRA adapter in ``adapter_dir`` as a GGUF LoRA at ``out_path`` for the Llama base
    whose config.json is ``base_config``; return the notes on conversions applied (scalings folded
    into lora_b). ``qtype`` "f32" (default) or "f16" for the tensors; ``metadata`` adds string / int /
    bool keys (general.name, lineage).

    NotFound for a missing folder or file, InvalidFile for a malformed config or tensor file, Refused
    for what llama.cpp cannot apply as PEFT does (see the module doc) and for an adapter whose shapes
    are not the base's, FileSystemError when writing fails. Nothing is left at ``out_path`` on failure:
    the file is written beside it and renamed at the end.
    """
    from owlkit.formats.safetensors import read_safetensors_header

    say = progress or (lambda _message: None)
    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    if qtype not in LORA_TYPES:
        raise UsageError(f"GGUF LoRA type {qtype!r} is not supported; use one of: {', '.join(LORA_TYPES)}")
    config = _adapter_config(adapter_dir)
    shapes, heads = _base_shapes(base_config)
    if not (adapter_dir / WEIGHTS).is_file():
        if (adapter_dir / "adapter_model.bin").is_file():
            raise Refused(f"{adapter_dir.name}: only a pickle adapter_model.bin; owlkit never loads pickles")
        raise NotFound(f"{adapter_dir.name}: no {WEIGHTS}; the adapter weights are missing")
    header = read_safetensors_header(adapter_dir / WEIGHTS)
    pairs = _pairs(header, shapes, config)

    say(f"converting {len(pairs)} LoRA pairs to {qtype.upper()}")
    alpha = float(8 if config.get("lora_alpha") is None else config["lora_alpha"])  # PEFT's default
    tensors, notes = _lora_tensors(header, pairs, heads, config, alpha, qtype)
    say(f"writing {out_path.name}")
    _write(out_path, tensors, alpha, qtype, metadata or {})
    return notes


def _lora_tensors(
    header: Any,
    pairs: dict[str, tuple[Any, Any]],
    heads: dict[str, int],
    config: dict[str, Any],
    alpha: float,
    qtype: str,
) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """The GGUF tensors (name, array) of every pair, and the notes on what was folded into lora_b."""
    rslora = bool(config.get("use_rslora"))
    dtype = np.float32 if qtype == "f32" else np.float16
    tensors: list[tuple[str, np.ndarray]] = []
    folded: dict[str, int] = {}
    with open(header.path, "rb", buffering=0) as f:
        for module, (a_info, b_info) in pairs.items():
            a, b = _read(f, header.path.name, a_info), _read(f, header.path.name, b_info)
            rank = a.shape[0]
            module_alpha = float(_pattern(config.get("alpha_pattern"), module, alpha))
            peft_scale = module_alpha / (math.sqrt(rank) if rslora else rank)
            llama_scale = alpha / rank if alpha else 1.0  # llama.cpp: alpha 0 means "do not scale"
            if not math.isclose(peft_scale, llama_scale, rel_tol=1e-12):
                b = b * np.float32(peft_scale / llama_scale)
                why = [w for w, on in (("rsLoRA", rslora), ("alpha_pattern", module_alpha != alpha)) if on]
                key = " and ".join(why) or "lora_alpha 0"
                folded[key] = folded.get(key, 0) + 1
            hf = f"{module}.weight"
            if hf in heads:  # the base's rows are in llama.cpp's rotary order: B's must be too
                b = permute_qk(b, heads[hf])
            name = gguf_name(hf)
            assert name is not None  # _pairs admits mapped names only
            tensors += [(f"{name}.lora_a", a.astype(dtype)), (f"{name}.lora_b", b.astype(dtype))]

    notes = [
        f"{why} scaling folded into lora_b of {count} tensor(s), since llama.cpp scales by alpha/r"
        for why, count in folded.items()
    ]
    if isinstance(config.get("rank_pattern"), dict) and config["rank_pattern"]:
        notes.append("rank_pattern kept as per-tensor ranks: llama.cpp divides alpha by each tensor's rank")
    return tensors, notes


def _write(
    out_path: Path,
    tensors: list[tuple[str, np.ndarray]],
    alpha: float,
    qtype: str,
    metadata: Mapping[str, Any],
) -> None:
    """The GGUF written beside ``out_path``, synced, then renamed over it; removed on any failure."""
    import gguf

    from owlkit.quantize.gguf_export import add_metadata, atomic_gguf

    with atomic_gguf(out_path, "GGUF LoRA") as writer:
        add_metadata(writer, metadata)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        for name, array in tensors:
            writer.add_tensor(name, np.ascontiguousarray(array))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()


def _adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """adapter_config.json, checked: a plain LoRA that llama.cpp applies the way PEFT does."""
    from owlkit.formats.hf_folder import read_json
    from owlkit.formats.peft import _check_config

    name = adapter_dir.name
    if not adapter_dir.is_dir():
        raise NotFound(f"{adapter_dir}: no such adapter folder; give the folder of a PEFT adapter")
    if not (adapter_dir / CONFIG).is_file():
        raise InvalidFile(f"{name}: no {CONFIG}, so not a PEFT adapter folder")
    config = read_json(adapter_dir, CONFIG)
    _check_config(config)
    if config["peft_type"] != "LORA":
        raise Refused(f"{name}: a {config['peft_type']} adapter; {_NOT_LLAMA_CPP} (GGUF holds LoRA only)")
    for key, what in _VARIANTS.items():
        if config.get(key):
            raise Refused(f"{name}: {what}; {_NOT_LLAMA_CPP}, merge it into the base instead (owl merge)")
    if config.get("bias", "none") != "none":
        raise Refused(
            f"{name}: trains biases (bias={config['bias']!r}); {_NOT_LLAMA_CPP}, merge it instead (owl merge)"
        )
    targets = config.get("target_modules")
    if isinstance(targets, list) and {"embed_tokens", "lm_head"} & {t.rpartition(".")[2] for t in targets}:
        raise Refused(
            f"{name}: adapts the embeddings or the output head; {_NOT_LLAMA_CPP} (merge it instead)"
        )
    for key in ("rank_pattern", "alpha_pattern"):
        pattern = config.get(key)
        if pattern is not None and not (
            isinstance(pattern, dict)
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in pattern.values())
        ):
            raise InvalidFile(f"{CONFIG}: '{key}' must map module names to numbers; re-save the adapter")
    return config


def _pattern(pattern: object, module: str, default: Any) -> Any:
    """PEFT's per-module override (``rank_pattern`` / ``alpha_pattern``): the value of the first key that
    matches the end of the module path at a dot boundary (peft's ``get_pattern_key``), else ``default``."""
    if isinstance(pattern, dict):
        for key, value in pattern.items():
            try:
                if re.match(rf"(.*\.)?({key})$", module):
                    return value
            except re.error:
                raise InvalidFile(
                    f"{CONFIG}: pattern {key!r} is not a valid regex; re-save the adapter"
                ) from None
    return default


def _base_shapes(base_config: dict[str, Any]) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """The base's HF weight shapes, and the head count each q/k weight's rows are permuted with."""
    from transformers import LlamaConfig

    from owlkit.quantize.gguf_export import SUPPORTED_ARCHITECTURES

    archs = base_config.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise Refused(
            f"base architecture {', '.join(map(str, archs)) or base_config.get('model_type')!r}: GGUF LoRA "
            f"export writes adapters of {', '.join(SUPPORTED_ARCHITECTURES)} (Llama-shaped) models"
        )
    try:
        config = LlamaConfig.from_dict({k: v for k, v in base_config.items() if k != "architectures"})
        shapes = llama_shapes(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise InvalidFile(f"base config.json: not a valid Llama config ({str(e).splitlines()[0]})") from None
    heads = {}
    for layer in range(config.num_hidden_layers):
        heads[f"model.layers.{layer}.self_attn.q_proj.weight"] = config.num_attention_heads
        heads[f"model.layers.{layer}.self_attn.k_proj.weight"] = config.num_key_value_heads
    return shapes, heads


def _pairs(
    header: Any, shapes: dict[str, tuple[int, ...]], config: dict[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """module path -> (A, B) tensor entries, in the base's weight order, every name, dtype and shape
    checked against the base: Refused for what llama.cpp cannot apply or another base's adapter."""
    name = header.path.name
    found: dict[str, dict[str, Any]] = {}
    for t in header.tensors:
        where = f"{name}: tensor {t.name}"
        if "lora_magnitude_vector" in t.name:
            raise Refused(f"{where} is a DoRA magnitude; {_NOT_LLAMA_CPP}, merge it instead (owl merge)")
        if "lora_embedding_" in t.name:
            raise Refused(f"{where} adapts the embeddings; {_NOT_LLAMA_CPP}, merge it instead (owl merge)")
        m = _LORA_TENSOR.fullmatch(t.name)
        if m is None:
            raise Refused(
                f"{where} is not a LoRA A/B weight (a bias or a module saved whole); {_NOT_LLAMA_CPP}"
            )
        module, side = m[1], m[2]
        hf = f"{module}.weight"
        if hf in ("model.embed_tokens.weight", "lm_head.weight"):
            raise Refused(f"{where} adapts {module}; {_NOT_LLAMA_CPP}, merge it instead (owl merge)")
        if hf not in shapes or len(shapes[hf]) != 2:
            raise Refused(f"{where}: the base has no linear layer {module}; an adapter for another base")
        if t.dtype not in _SOURCE_DTYPES:
            raise InvalidFile(f"{where} is {t.dtype}, not a float type (F32, F16, BF16); re-save the adapter")
        found.setdefault(module, {})[side] = t

    if not found:
        raise InvalidFile(f"{name}: holds no LoRA weights; re-save the adapter")
    pairs = {}
    for hf in shapes:  # the base's order: deterministic output
        module = hf.removesuffix(".weight")
        if module not in found:
            continue
        if set(found[module]) != {"A", "B"}:
            missing = ({"A", "B"} - set(found[module])).pop()
            raise InvalidFile(f"{name}: {module} has no lora_{missing}; the adapter is incomplete")
        a, b = found[module]["A"], found[module]["B"]
        out_features, in_features = shapes[hf]
        rank = int(_pattern(config.get("rank_pattern"), module, config.get("r", 8)))
        matrices = len(a.shape) == 2 and len(b.shape) == 2
        if not matrices or a.shape[1] != in_features or b.shape[0] != out_features:
            adapted = f"a [{b.shape[0]}, {a.shape[1]}] weight" if matrices else "no matrix"
            raise Refused(
                f"{name}: {module} (lora_A {list(a.shape)}, lora_B {list(b.shape)}) adapts {adapted}, the "
                f"base's is [{out_features}, {in_features}]; an adapter for another base"
            )
        if a.shape[0] != rank or b.shape[1] != rank:
            raise InvalidFile(
                f"{name}: {module} has rank {a.shape[0]} (A) and {b.shape[1]} (B), {CONFIG} says {rank}; "
                "re-save the adapter"
            )
        pairs[module] = (a, b)
    return pairs


def _read(f: Any, file_name: str, info: Any) -> np.ndarray:
    """One tensor (F32, F16 or BF16) at its validated offset, as float32."""
    f.seek(info.begin)
    raw = f.read(info.nbytes)
    if len(raw) != info.nbytes:
        raise InvalidFile(f"{file_name}: ends inside tensor {info.name}; re-save the adapter")
    values = np.frombuffer(raw, dtype=np.dtype(_SOURCE_DTYPES[info.dtype]).newbyteorder("<"))
    if info.dtype == "BF16":  # bfloat16 is the top half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    values = values.astype(np.float32).reshape(info.shape)
    if not np.isfinite(values).all():
        raise InvalidFile(
            f"{file_name}: tensor {info.name} holds NaN or infinite values; retrain or re-save it"
        )
    return values

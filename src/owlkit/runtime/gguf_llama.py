"""GGUF -> HF folder for Llama-shaped files, without transformers' GGUF loader.

transformers spends most of a conversion outside the arithmetic: its GGUF reader (gguf-py) parses the
whole header, vocabulary included, more than once, and it builds its tensor-name map by running gguf-py's
name mapper over every parameter of an instantiated model (about 20 of 25 s for SmolLM2-135M on two
cores). A Llama file's layout is small and fixed, so this module reads the tensor table owlkit's
validating reader already parsed, slices each tensor's bytes at its checked offset from a memory map,
and dequantizes it with gguf-py's ``dequantize``, the very function transformers calls.

The goal is the folder transformers would write, byte for byte: the same HF names, the same inverse of
llama.cpp's q/k row permutation, the same float32 -> bfloat16 cast (torch's), the same config (built from
the metadata by the rules of ``transformers.modeling_gguf_pytorch_utils.load_gguf_checkpoint``, using
transformers' own key table) and the same writers (``LlamaConfig`` / ``GenerationConfig``
``save_pretrained``, ``safetensors.torch.save_file`` with ``{"format": "pt"}``). The tests compare the
two paths' files by sha256.

Files this path does not recognise completely (another architecture, a Llama file named "mistral",
which transformers loads as Mistral, no per-layer KV head count, a tensor it does not know) go through
transformers as before: see :func:`llama_fast_path`.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from owlkit.errors import InvalidFile
from owlkit.formats.gguf import GGUFFile, GGUFTensor

LLAMA_ARCH = "llama"

# GGUF tensor name -> HF LlamaForCausalLM parameter name (llama.cpp's convert_hf_to_gguf.py, reversed).
_TOP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLOCK = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_BLOCK_NAME = re.compile(r"blk\.(\d+)\.([a-z_]+)\.weight")
# Llama 3 files carry the rotary frequencies llama.cpp precomputes; the HF model has no parameter for
# them (it derives them from the config), and transformers drops the tensor, so we do too.
_DROPPED = frozenset({"rope_freqs.weight"})
# transformers' save_pretrained splits files above 50 GB (its max_shard_size default) and writes an
# index; this path writes one file, so bigger models go through transformers.
_ONE_FILE_LIMIT = 50 * 10**9
_OUT_BYTES = {"float32": 4, "bfloat16": 2}
_BLOCKS_PER_ROW = 256  # see _dequantize
# Metadata every shape below is computed from.
_REQUIRED = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")


def hf_name(gguf_name: str, layers: int) -> str | None:
    """The HF Llama parameter name for a GGUF tensor name, or None when it is not a Llama weight."""
    if gguf_name in _TOP:
        return _TOP[gguf_name]
    m = _BLOCK_NAME.fullmatch(gguf_name)
    if m and m[2] in _BLOCK and int(m[1]) < layers and m[1] == str(int(m[1])):
        return f"model.layers.{m[1]}.{_BLOCK[m[2]]}.weight"
    return None


_GGUF_TOP = {hf: g for g, hf in _TOP.items()}
_GGUF_BLOCK = {hf: g for g, hf in _BLOCK.items()}
_HF_LAYER_NAME = re.compile(r"model\.layers\.(\d+)\.([a-z_.]+)\.weight")


def gguf_name(hf: str) -> str | None:
    """The GGUF tensor name for an HF Llama parameter name (the inverse of :func:`hf_name`), or None."""
    if hf in _GGUF_TOP:
        return _GGUF_TOP[hf]
    m = _HF_LAYER_NAME.fullmatch(hf)
    if m and m[2] in _GGUF_BLOCK:
        return f"blk.{int(m[1])}.{_GGUF_BLOCK[m[2]]}.weight"
    return None


def permute_qk(w: np.ndarray, heads: int) -> np.ndarray:
    """HF's q/k row order to llama.cpp's (the inverse of :func:`_unpermute`): within each head, the
    rotary pairs' first halves, then their second halves. Works on any array whose rows are q/k rows
    (weights, and a LoRA's B matrix)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def llama_fast_path(gguf: GGUFFile, dtype: str = "float32") -> bool:
    """Whether :func:`write_llama_hf` converts this file (else transformers does, as before).

    True for ``general.architecture`` "llama" whose shape keys are present and whose tensors are all
    Llama weights; False for a file transformers treats otherwise (one named exactly "mistral" becomes
    a MistralForCausalLM there), for unknown tensors (biases, experts), and for output above one file.
    """
    meta = gguf.metadata
    if meta.get("general.architecture") != LLAMA_ARCH or meta.get("general.name") == "mistral":
        return False
    if not all(_positive_int(meta.get(f"{LLAMA_ARCH}.{key}")) for key in _REQUIRED):
        return False
    # transformers skips the q/k un-permutation when this key is absent (a broken model, where llama.cpp
    # defaults it to the head count); such files keep going through transformers, unchanged.
    if not _positive_int(meta.get(f"{LLAMA_ARCH}.attention.head_count_kv")):
        return False
    layers = meta[f"{LLAMA_ARCH}.block_count"]
    if any(t.name not in _DROPPED and hf_name(t.name, layers) is None for t in gguf.tensors):
        return False
    return gguf.parameters * _OUT_BYTES.get(dtype, 4) < _ONE_FILE_LIMIT


def llama_config_dict(gguf: GGUFFile) -> dict[str, Any]:
    """The config dict transformers builds from this file's metadata (``load_gguf_checkpoint``'s rules
    for a "llama" file, with its key table ``GGUF_CONFIG_MAPPING``), before the config class sees it."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    meta = gguf.metadata
    config: dict[str, Any] = {
        # llama.cpp writes the output projection only when it is not the embedding matrix.
        "tie_word_embeddings": all(t.name != "output.weight" for t in gguf.tensors),
    }
    for key, value in meta.items():
        prefix, _, rest = key.partition(".")
        # transformers' reader hands every value over as a list and unwraps the one-element ones.
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        renamed = GGUF_CONFIG_MAPPING.get(prefix, {}).get(rest)
        if renamed is not None and renamed != -1:
            config[renamed] = value
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in meta:
        tokens = meta["tokenizer.ggml.tokens"]
        config["vocab_size"] = len(tokens[0] if isinstance(tokens, list) and len(tokens) == 1 else tokens)
    return config


def llama_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """HF name -> HF shape for every weight the Llama model holds (lm_head only when untied)."""
    hidden, ff, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    q_rows = config.num_attention_heads * config.head_dim
    kv_rows = config.num_key_value_heads * config.head_dim
    per_block = {
        "attn_q": (q_rows, hidden),
        "attn_k": (kv_rows, hidden),
        "attn_v": (kv_rows, hidden),
        "attn_output": (hidden, q_rows),
        "ffn_gate": (ff, hidden),
        "ffn_up": (ff, hidden),
        "ffn_down": (hidden, ff),
        "attn_norm": (hidden,),
        "ffn_norm": (hidden,),
    }
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, hidden)
    for i in range(config.num_hidden_layers):
        for short, shape in per_block.items():
            shapes[f"model.layers.{i}.{_BLOCK[short]}.weight"] = shape
    return shapes


@functools.cache
def _dequantizable(type_id: int) -> bool:
    """Whether gguf-py dequantizes this ggml type, with the block layout owlkit's reader validated."""
    import gguf as ggufpy

    from owlkit.formats.gguf import GGML_TYPES

    if type_id not in GGML_TYPES or type_id not in set(ggufpy.GGMLQuantizationType):
        return False
    qtype = ggufpy.GGMLQuantizationType(type_id)
    # gguf-py 0.19 still sizes Q8_1 blocks at 40 bytes where ggml writes 36: refuse a mismatch.
    if ggufpy.GGML_QUANT_SIZES.get(qtype) != GGML_TYPES[type_id][1:]:
        return False
    try:  # one all-zero block: gguf-py's public way of saying whether it knows the type
        ggufpy.quants.dequantize(np.zeros((1, GGML_TYPES[type_id][2]), np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def _qtype(name: str, t: GGUFTensor) -> Any:
    """gguf-py's type for a tensor it can dequantize; else InvalidFile."""
    import gguf as ggufpy

    if not _dequantizable(t.type_id):
        raise InvalidFile(
            f"{name}: tensor {t.name} is {t.type_name}, which gguf-py cannot dequantize; "
            "requantize the model to a common type (Q4_K_M, Q8_0, F16) with llama.cpp"
        )
    return ggufpy.GGMLQuantizationType(t.type_id)


def _dequantize(raw: np.ndarray, qtype: Any) -> np.ndarray:
    """gguf-py's ``dequantize`` of one tensor's bytes (a slice of the map, at a validated offset), flat.

    gguf-py works through the rows it is given 16 at a time; a real row is a few dozen blocks, so most
    of the time goes to numpy call overhead. Every block dequantizes on its own, so we hand it rows of
    up to 256 blocks (a count that divides the tensor): the same values, bit for bit, 3-4x faster.
    """
    import gguf as ggufpy

    block_bytes = ggufpy.GGML_QUANT_SIZES[qtype][1]
    per_row = math.gcd(raw.size // block_bytes, _BLOCKS_PER_ROW)
    return ggufpy.quants.dequantize(raw.reshape(-1, per_row * block_bytes), qtype).reshape(-1)


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order: within each head it stores the rotary pairs' first halves, then
    their second halves; HF interleaves them. The inverse of (head, 2, half) -> (head, half, 2)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_hf(
    gguf: GGUFFile,
    out_dir: Path,
    dtype: str = "float32",
    progress: Callable[[str], None] | None = None,
) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``generation_config.json`` for a file
    :func:`llama_fast_path` accepts into ``out_dir`` (created). Tokenizer files are the caller's.

    InvalidFile for a tensor type gguf-py cannot dequantize, a missing or misshapen weight. Peak memory
    is the output plus one tensor's float32 buffers (the file itself is memory-mapped).
    """
    import torch
    from safetensors.torch import save_file
    from transformers import GenerationConfig, LlamaConfig

    say = progress or (lambda _message: None)
    name = gguf.path.name
    torch_dtype = getattr(torch, dtype)
    try:
        config = LlamaConfig.from_dict(llama_config_dict(gguf), dtype=torch_dtype)
    except (ValueError, TypeError) as e:  # transformers validates the values' types and ranges
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidFile(f"{name}: its Llama metadata is not a valid model config ({first})") from None
    if config.head_dim % 2:  # the rotary pairs that llama.cpp's q/k row order splits need an even width
        raise InvalidFile(f"{name}: attention head width {config.head_dim} is odd; the file is inconsistent")
    layers = config.num_hidden_layers
    expected = llama_shapes(config)
    found = {hf_name(t.name, layers): t for t in gguf.tensors if t.name not in _DROPPED}
    missing = [n for n in expected if n not in found]
    if missing:
        raise InvalidFile(f"{name}: the Llama weight {missing[0]} is missing; the file is incomplete")
    qtypes = {hf: _qtype(name, t) for hf, t in found.items()}  # every type checked before any work
    for hf, t in found.items():
        shape = tuple(reversed(t.shape))  # ggml lists dimensions fastest-moving first
        if shape != expected[hf]:
            raise InvalidFile(
                f"{name}: tensor {t.name} has shape {list(shape)}, the metadata implies "
                f"{list(expected[hf])}; the file is inconsistent"
            )

    mapped = np.memmap(gguf.path, dtype=np.uint8, mode="r")
    tensors: dict[str, Any] = {}
    for hf, t in found.items():
        shape = expected[hf]
        values = _dequantize(mapped[t.offset : t.offset + t.nbytes], qtypes[hf]).reshape(shape)
        if ".self_attn.q_proj." in hf:
            values = _unpermute(values, config.num_attention_heads)
        elif ".self_attn.k_proj." in hf:
            values = _unpermute(values, config.num_key_value_heads)
        if not values.flags.writeable:  # F32 comes back as a view of the read-only map
            values = np.array(values)
        tensor = torch.from_numpy(values)
        tensors[hf] = tensor.to(torch_dtype) if torch_dtype != torch.float32 else tensor
    del mapped

    say(f"writing safetensors to {out_dir.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    # What LlamaForCausalLM.save_pretrained records about the model it saved.
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = dtype
    config.save_pretrained(str(out_dir))
    GenerationConfig.from_model_config(config).save_pretrained(str(out_dir))

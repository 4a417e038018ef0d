"""The direct Llama GGUF reader writes, byte for byte, the folder transformers' GGUF loader writes.

Each comparison converts the same file twice, ``direct=False`` (transformers, the reference) and the
default (owlkit's reader), and compares every file's sha256. The tiny GGUFs come from test_convert's
writer, re-encoded here into a mix of quantized types; SmolLM2 (Q4_1) checks the real thing and its time.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pytest

from owlkit.errors import InvalidFile
from owlkit.formats.gguf import GGUFTensor, read_gguf
from owlkit.runtime.convert import gguf_to_hf
from owlkit.runtime.gguf_llama import _dequantize, hf_name, llama_config_dict, llama_fast_path
from owlkit.runtime.load import load_causal_lm
from owltest import SMOLLM_GGUF, need
from runtime.test_convert import file_hashes, logits, write_tiny_gguf

# One ggml type per kind of weight, covering every block type gguf-py can also write.
MIXED_TYPES = {
    "token_embd": "Q8_0",
    "attn_q": "Q4_0",
    "attn_k": "Q4_1",
    "attn_v": "Q5_0",
    "attn_output": "Q5_1",
    "ffn_gate": "BF16",
    "ffn_up": "F16",
    "ffn_down": "MXFP4",
    "output": "Q4_1",
}


def rewrite_gguf(
    src: Path,
    dst: Path,
    *,
    types: dict[str, str] | None = None,
    drop: tuple[str, ...] = (),
    metadata: dict[str, object] | None = None,
    extra: dict[str, np.ndarray] | None = None,
) -> Path:
    """A copy of an F32 GGUF with tensors re-encoded (``types``: short name -> ggml type), some dropped,
    metadata values replaced and tensors added, written with gguf-py as llama.cpp would write them."""
    import gguf

    reader = gguf.GGUFReader(str(src))
    writer = gguf.GGUFWriter(str(dst), reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue  # the writer writes these itself
        value = (metadata or {}).get(field.name, field.contents())
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    for t in reader.tensors:
        if t.name in drop:
            continue
        values = np.array(t.data, dtype=np.float32)
        short = t.name.split(".")[-2]
        qtype = gguf.GGMLQuantizationType[(types or {}).get(short, "F32")]
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(t.name, values)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(t.name, values.astype(np.float16))
        else:
            writer.add_tensor(t.name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    for name, values in (extra or {}).items():
        writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_llama, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def mixed_gguf(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return rewrite_gguf(tiny_gguf, tmp_path_factory.mktemp("mixed") / "mixed.gguf", types=MIXED_TYPES)


def convert_both(gguf: Path, out: Path, dtype: str = "float32") -> tuple[Path, Path]:
    """(direct folder, transformers folder) for one GGUF."""
    messages: list[str] = []
    gguf_to_hf(gguf, out / "transformers", dtype=dtype, direct=False)
    gguf_to_hf(gguf, out / "direct", dtype=dtype, progress=messages.append)
    assert any("dequantizing" in m for m in messages) and any("tokenizer" in m for m in messages)
    return out / "direct", out / "transformers"


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_direct_path_writes_the_transformers_files(mixed_gguf: Path, tmp_path: Path, dtype: str) -> None:
    assert llama_fast_path(read_gguf(mixed_gguf), dtype)
    direct, reference = convert_both(mixed_gguf, tmp_path, dtype)
    assert file_hashes(direct) == file_hashes(reference)
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in direct.iterdir()
    }


def test_tied_embeddings_when_the_file_has_no_output(tiny_gguf: Path, tmp_path: Path) -> None:
    import json

    tied = rewrite_gguf(tiny_gguf, tmp_path / "tied.gguf", types=MIXED_TYPES, drop=("output.weight",))
    direct, reference = convert_both(tied, tmp_path)
    assert file_hashes(direct) == file_hashes(reference)
    assert json.loads((direct / "config.json").read_text())["tie_word_embeddings"] is True


def test_direct_conversion_has_the_logits_of_the_gguf(mixed_gguf: Path, tmp_path: Path) -> None:
    import torch

    out = tmp_path / "hf"
    gguf_to_hf(mixed_gguf, out)
    model, _ = load_causal_lm(mixed_gguf.parent, gguf_file=mixed_gguf.name)
    ids = [0, 5, 17, 42, 3, 64, 9]
    with torch.no_grad():
        direct = model(torch.tensor([ids])).logits
    assert torch.equal(direct, logits(out, ids))


def test_rope_frequencies_are_dropped_as_transformers_drops_them(tiny_gguf: Path, tmp_path: Path) -> None:
    # Llama 3 files carry llama.cpp's precomputed rotary frequencies; the HF model derives its own.
    freqs = rewrite_gguf(
        tiny_gguf, tmp_path / "freqs.gguf", extra={"rope_freqs.weight": np.ones(4, np.float32)}
    )
    assert llama_fast_path(read_gguf(freqs))
    direct, reference = convert_both(freqs, tmp_path)
    assert file_hashes(direct) == file_hashes(reference)


def test_dequantize_matches_gguf_row_by_row() -> None:
    """Larger rows than gguf-py's own give the same bits, for every block type it reads."""
    import gguf

    from owlkit.runtime.gguf_llama import _dequantizable

    rng = np.random.default_rng(0)
    readable = [q for q in gguf.GGMLQuantizationType if q in gguf.GGML_QUANT_SIZES and _dequantizable(q)]
    assert {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K", "IQ4_XS"} <= {
        q.name for q in readable
    }
    assert not {"Q8_1", "F64", "I32"} & {q.name for q in readable}
    for qtype in readable:
        block_bytes = gguf.GGML_QUANT_SIZES[qtype][1]
        rows, blocks_per_row = 40, 12  # 480 blocks: handed over in rows of gcd(480, 256) = 32 blocks
        raw = rng.integers(0, 256, rows * blocks_per_row * block_bytes, dtype=np.uint8)
        with np.errstate(all="ignore"):  # random scales include inf and NaN: compared as bits
            expected = gguf.quants.dequantize(raw.reshape(rows, -1), qtype)
            got = _dequantize(raw, qtype)
        assert math.gcd(rows * blocks_per_row, 256) == 32
        assert np.array_equal(got.view(np.uint32), expected.reshape(-1).view(np.uint32)), qtype.name


def test_gguf_names_map_to_llama_names() -> None:
    assert hf_name("token_embd.weight", 2) == "model.embed_tokens.weight"
    assert hf_name("output.weight", 2) == "lm_head.weight"
    assert hf_name("output_norm.weight", 2) == "model.norm.weight"
    assert hf_name("blk.1.attn_output.weight", 2) == "model.layers.1.self_attn.o_proj.weight"
    assert hf_name("blk.0.ffn_norm.weight", 2) == "model.layers.0.post_attention_layernorm.weight"
    for other in (
        "blk.2.attn_q.weight",
        "blk.01.attn_q.weight",
        "blk.0.attn_q.bias",
        "blk.0.ffn_gate_exps.weight",
    ):
        assert hf_name(other, 2) is None, other


def test_files_left_to_transformers(tiny_gguf: Path) -> None:
    gguf = read_gguf(tiny_gguf)
    assert llama_fast_path(gguf)
    meta = gguf.metadata
    bias = GGUFTensor("blk.0.attn_q.bias", (32,), 0, "F32", gguf.data_start, 128)
    for variant in (
        dataclasses.replace(gguf, metadata=meta | {"general.architecture": "qwen2"}),
        dataclasses.replace(gguf, metadata=meta | {"general.name": "mistral"}),  # transformers: Mistral
        dataclasses.replace(gguf, metadata={k: v for k, v in meta.items() if k != "llama.block_count"}),
        # transformers leaves q/k permuted without this key; that stays its own (unchanged) result
        dataclasses.replace(gguf, metadata={k: v for k, v in meta.items() if "head_count_kv" not in k}),
        dataclasses.replace(gguf, metadata=meta | {"llama.attention.head_count_kv": [2, 2]}),
        dataclasses.replace(gguf, tensors=[*gguf.tensors, bias]),
    ):
        assert not llama_fast_path(variant)


def test_config_keys_follow_transformers_table(tiny_gguf: Path) -> None:
    config = llama_config_dict(read_gguf(tiny_gguf))
    assert config["model_type"] == "llama" and config["_model_name_or_path"] == "tiny-llama"
    assert config["num_key_value_heads"] == 2 and config["tie_word_embeddings"] is False
    assert config["bos_token_id"] == 0 and config["eos_token_id"] == 1


def test_non_llama_architecture_goes_through_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    import json

    path = write_tiny_gguf(tiny_llama, tmp_path / "tiny-qwen2.gguf", arch="qwen2")
    assert not llama_fast_path(read_gguf(path))
    gguf_to_hf(path, tmp_path / "out")
    # Only transformers' loader makes a Qwen2 model of it.
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]


def test_type_gguf_py_cannot_read_is_invalid_and_leaves_nothing(tiny_gguf: Path, tmp_path: Path) -> None:
    import gguf

    # One norm stored as F64, which ggml defines and gguf-py does not dequantize.
    norm = "blk.0.attn_norm.weight"
    path = rewrite_gguf(tiny_gguf, tmp_path / "f64.gguf", drop=(norm,), extra={norm: np.ones(32)})
    assert gguf.GGUFReader(str(path)).get_tensor(-1).tensor_type == gguf.GGMLQuantizationType.F64
    with pytest.raises(InvalidFile, match=r"f64\.gguf: tensor blk\.0\.attn_norm\.weight is F64"):
        gguf_to_hf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_or_misshapen_weight_is_invalid(tiny_gguf: Path, tmp_path: Path) -> None:
    missing = rewrite_gguf(tiny_gguf, tmp_path / "missing.gguf", drop=("blk.1.ffn_norm.weight",))
    with pytest.raises(InvalidFile, match=r"model\.layers\.1\.post_attention_layernorm\.weight is missing"):
        gguf_to_hf(missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    wide = rewrite_gguf(tiny_gguf, tmp_path / "wide.gguf", metadata={"llama.feed_forward_length": 96})
    with pytest.raises(InvalidFile, match=r"blk\.0\.ffn_gate\.weight has shape \[64, 32\].*\[96, 32\]"):
        gguf_to_hf(wide, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# SmolLM2-135M-Instruct (Q4_1): the reference conversion through transformers takes 25-35 s on 2 cores.


@pytest.mark.realmodel
def test_smollm2_takes_the_direct_path(tmp_path: Path) -> None:
    """Speed lives in benchmarks/bench_convert.py; here, that SmolLM2 goes the direct way and loads."""
    from transformers import AutoConfig

    gguf = need(SMOLLM_GGUF)
    assert llama_fast_path(read_gguf(gguf))
    gguf_to_hf(gguf, tmp_path / "hf")
    config = AutoConfig.from_pretrained(tmp_path / "hf")
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and config.tie_word_embeddings


@pytest.mark.slow
@pytest.mark.realmodel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_smollm2_direct_equals_transformers(tmp_path: Path, dtype: str) -> None:
    gguf = need(SMOLLM_GGUF)
    start = time.perf_counter()
    gguf_to_hf(gguf, tmp_path / "transformers", dtype=dtype, direct=False)
    middle = time.perf_counter()
    gguf_to_hf(gguf, tmp_path / "direct", dtype=dtype)
    end = time.perf_counter()
    print(f"\nSmolLM2 -> {dtype}: transformers {middle - start:.1f} s, direct {end - middle:.1f} s")
    assert file_hashes(tmp_path / "direct") == file_hashes(tmp_path / "transformers")

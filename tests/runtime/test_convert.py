"""GGUF -> HF conversion: faithful (same logits, same greedy tokens), deterministic, guarded.

A tiny GGUF is written in code from the tiny random Llama (with llama.cpp's q/k row order), so the
round trip HF -> GGUF -> HF is checked exactly in seconds; SmolLM2 checks the real thing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from owlkit.errors import InvalidFile, Refused, UsageError
from owlkit.formats.tokenizer import tokenizer_digest_gguf, tokenizer_digest_hf
from owlkit.runtime.convert import gguf_to_hf
from owlkit.runtime.generate import stream_generate
from owlkit.runtime.load import load_causal_lm, refuse_if_too_big
from owltest import SMOLLM_GGUF, need

# Greedy, 20 new tokens, as transformers gives it straight from the GGUF (shared SOURCE.md).
SMOLLM_GREEDY = ", the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling streets. But as"

_HF_TO_GGUF = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def write_tiny_gguf(folder: Path, out: Path, *, arch: str = "llama", tokenizer_model: str = "gpt2") -> Path:
    """An F32 GGUF of an HF Llama folder, laid out as llama.cpp's converter lays it out."""
    import gguf
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    tj = json.loads((folder / "tokenizer.json").read_text())
    weights = load_file(str(folder / "model.safetensors"))
    vocab = dict(tj["model"]["vocab"]) | {t["content"]: t["id"] for t in tj["added_tokens"]}
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["id"] for t in tj["added_tokens"]}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    while len(tokens) < cfg["vocab_size"]:  # llama.cpp pads the vocabulary to the embedding rows
        types.append(gguf.TokenType.UNUSED)
        tokens.append(f"[PAD{len(tokens)}]")
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def permute(w: np.ndarray, n_head: int) -> np.ndarray:  # llama.cpp's q/k row order for its RoPE
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_chat_template((folder / "chat_template.jinja").read_text())
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        for hf, name in _HF_TO_GGUF.items():
            w = weights[f"model.layers.{i}.{hf}.weight"]
            w = permute(w, heads) if name == "attn_q" else permute(w, kv_heads) if name == "attn_k" else w
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.add_tensor("output.weight", weights["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def logits(folder: Path, ids: list[int]):
    import torch

    model, _ = load_causal_lm(folder)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tiny_llama, tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_converted(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-hf") / "converted"
    gguf_to_hf(tiny_gguf, out)
    return out


def test_round_trip_keeps_the_logits(tiny_llama: Path, tiny_converted: Path) -> None:
    import torch

    ids = [0, 5, 17, 42, 3, 64, 9]
    assert torch.equal(logits(tiny_llama, ids), logits(tiny_converted, ids))
    config = json.loads((tiny_converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["dtype"] == "float32"
    names = {p.name for p in tiny_converted.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "chat_template.jinja" in names


def test_gguf_loads_directly_like_its_conversion(tiny_gguf: Path, tiny_converted: Path) -> None:
    import torch

    model, tokenizer = load_causal_lm(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    ids = [0, 5, 17, 42]
    with torch.no_grad():
        assert torch.equal(model(torch.tensor([ids])).logits, logits(tiny_converted, ids))
    assert tokenizer.chat_template == (tiny_converted / "chat_template.jinja").read_text()


def test_conversion_is_deterministic(tiny_gguf: Path, tiny_converted: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    again = tmp_path / "again"
    gguf_to_hf(tiny_gguf, again, progress=messages.append)
    assert file_hashes(again) == file_hashes(tiny_converted)
    assert any("dequantizing" in m for m in messages)
    for path in again.glob("*.json"):  # nothing host- or call-specific in the metadata
        text = path.read_text()
        assert str(tmp_path) not in text and str(tiny_gguf.parent) not in text, path.name
        assert "local_files_only" not in text and "is_local" not in text


def test_tokenizer_digest_survives_conversion(tiny_gguf: Path, tiny_converted: Path) -> None:
    assert tokenizer_digest_gguf(tiny_gguf) == tokenizer_digest_hf(tiny_converted)


def test_bfloat16_conversion(tiny_gguf: Path, tiny_converted: Path, tmp_path: Path) -> None:
    import torch

    from owlkit.formats.safetensors import read_safetensors_header

    out = tmp_path / "bf16"
    gguf_to_hf(tiny_gguf, out, dtype="bfloat16")
    assert {t.dtype for t in read_safetensors_header(out / "model.safetensors").tensors} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    ids = [0, 5, 17, 42]
    assert torch.allclose(logits(out, ids).float(), logits(tiny_converted, ids), atol=0.05)


def test_bad_dtype_and_busy_output_are_usage_errors(tiny_gguf: Path, tmp_path: Path) -> None:
    for dtype in ("float16", "int8", "fp32"):
        with pytest.raises(UsageError, match="use one of: float32, bfloat16"):
            gguf_to_hf(tiny_gguf, tmp_path / "out", dtype=dtype)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        gguf_to_hf(tiny_gguf, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_unsupported_architecture_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    path = write_tiny_gguf(tiny_llama, tmp_path / "owlnet.gguf", arch="owlnet")
    with pytest.raises(InvalidFile, match=r"architecture 'owlnet' cannot be converted.*llama.*qwen2"):
        gguf_to_hf(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_failed_conversion_leaves_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    path = write_tiny_gguf(tiny_llama, tmp_path / "odd.gguf", tokenizer_model="owl-tokenizer")
    with pytest.raises(InvalidFile, match=r"odd\.gguf: transformers cannot build its tokenizer"):
        gguf_to_hf(path, tmp_path / "out")  # the weights convert, the tokenizer does not
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidFile):
        gguf_to_hf(path, empty)
    assert empty.is_dir() and not any(empty.iterdir())
    # Its tokenizer still has an identity, from the metadata alone.
    assert tokenizer_digest_gguf(path).startswith("sha256:")


def test_refusal_states_the_estimate() -> None:
    with pytest.raises(
        Refused, match=r"x\.gguf: dequantizing needs about 1048576\.00 GiB of memory and .* available"
    ):
        refuse_if_too_big("x.gguf", 1 << 50, "dequantizing")


# SmolLM2-135M-Instruct (Q4_1): one conversion shared by the tests below (about 25 s on 2 cores).


@pytest.fixture(scope="module")
def smollm_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "hf"
    gguf_to_hf(need(SMOLLM_GGUF), out)
    return out


@pytest.fixture(scope="module")
def smollm_loaded(smollm_hf: Path):
    return load_causal_lm(smollm_hf)


@pytest.mark.realmodel
def test_smollm2_converted_greedy_matches_the_gguf(smollm_loaded) -> None:
    model, tokenizer = smollm_loaded
    assert "".join(stream_generate(model, tokenizer, "Once upon a time", max_tokens=20)) == SMOLLM_GREEDY


@pytest.mark.realmodel
def test_smollm2_chat_knows_paris(smollm_loaded) -> None:
    model, tokenizer = smollm_loaded
    answer = "".join(
        stream_generate(model, tokenizer, "What is the capital of France?", chat=True, max_tokens=30)
    )
    assert "Paris" in answer


@pytest.mark.realmodel
def test_smollm2_tokenizer_digest_equals_converted(smollm_hf: Path) -> None:
    assert tokenizer_digest_gguf(SMOLLM_GGUF) == tokenizer_digest_hf(smollm_hf)
    config = json.loads((smollm_hf / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]


def _greedy_ids(model, tokenizer, n: int = 20) -> list[int]:
    import torch

    ids = torch.tensor([tokenizer("Once upon a time")["input_ids"]])
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False)[0].tolist()


@pytest.mark.slow
@pytest.mark.realmodel
def test_smollm2_converted_equals_direct_gguf_load(smollm_loaded) -> None:
    gguf = need(SMOLLM_GGUF)
    direct = load_causal_lm(gguf.parent, gguf_file=gguf.name)
    assert _greedy_ids(*smollm_loaded) == _greedy_ids(*direct)


@pytest.mark.slow
@pytest.mark.realmodel
def test_smollm2_conversion_is_byte_identical(smollm_hf: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    gguf_to_hf(SMOLLM_GGUF, again)
    assert file_hashes(again) == file_hashes(smollm_hf)


@pytest.mark.slow
@pytest.mark.realmodel
def test_smollm2_bfloat16_conversion(tmp_path: Path) -> None:
    out = tmp_path / "bf16"
    gguf_to_hf(need(SMOLLM_GGUF), out, dtype="bfloat16")
    assert (out / "model.safetensors").stat().st_size < 300_000_000  # half of the 538 MB fp32 file
    model, tokenizer = load_causal_lm(out, dtype="bfloat16")
    answer = "".join(
        stream_generate(model, tokenizer, "What is the capital of France?", chat=True, max_tokens=30)
    )
    assert "Paris" in answer

"""PEFT LoRA -> GGUF LoRA, checked against llama.cpp itself: on the tiny Llama's base GGUF, what the
adapter changes in llama.cpp's logits is what it changes in PEFT's, for plain LoRA, rsLoRA and
rank/alpha patterns on every linear layer (q/k rows permuted, GQA); what llama.cpp cannot apply as PEFT
does is refused with one line, and no failure leaves a file behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owlkit.errors import InvalidFile, NotFound, Refused, UsageError
from owltest import build_adapter

pytest.importorskip("peft")
llama_cpp = pytest.importorskip("llama_cpp")

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOKENS = [0, 5, 17, 42, 8, 63, 2, 90]
# Max abs difference between the two deltas (logits with the adapter minus without), which are about
# 0.5 in size. Measured: F32 2.4e-7 to 7.7e-7, F16 6e-4 to 3.2e-3 (the tensors rounded to half).
TOLERANCE = {"f32": 1e-5, "f16": 1e-2}


def export(adapter: Path, out: Path, base: Path, **kw: Any) -> list[str]:
    from owlkit.quantize.gguf_lora import export_gguf_lora

    return export_gguf_lora(adapter, out, json.loads((base / "config.json").read_text()), **kw)


def llama_cpp_logits(model: Path, lora: Path | None = None) -> np.ndarray:
    # An F32 KV cache: llama.cpp's default F16 cache would add its own rounding to the comparison.
    llm = llama_cpp.Llama(
        model_path=str(model),
        lora_path=str(lora) if lora else None,
        n_ctx=32,
        n_threads=1,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        logits_all=True,
        verbose=False,
    )
    try:
        llm.eval(TOKENS)
        return np.array(llm.scores[: len(TOKENS)])
    finally:
        llm.close()


def torch_logits(model: Any) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([TOKENS])).logits[0].numpy()


@pytest.fixture(scope="module")
def base_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from owlkit.quantize.gguf_export import export_gguf

    out = tmp_path_factory.mktemp("base") / "tiny-f32.gguf"
    export_gguf(tiny_llama, out, "f32")
    return out


@pytest.fixture(scope="module")
def plain_adapter(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_adapter(tiny_llama, tmp_path_factory.mktemp("plain") / "qv", seed=7, r=4, lora_alpha=8)


CASES = {
    "q_v": ({"r": 4, "lora_alpha": 8}, "f32", []),
    "all_linear_rslora": (
        {"r": 4, "lora_alpha": 8, "use_rslora": True, "target_modules": ALL_LINEAR},
        "f32",
        ["rsLoRA scaling folded into lora_b of 14 tensor(s)"],
    ),
    "all_linear_patterns": (
        {
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ALL_LINEAR,
            "rank_pattern": {"v_proj": 2, "layers.1.mlp.down_proj": 6},
            "alpha_pattern": {"k_proj": 3},
        },
        "f32",
        ["alpha_pattern scaling folded into lora_b of 2 tensor(s)", "rank_pattern kept"],
    ),
    "all_linear_rslora_f16": (
        {"r": 4, "lora_alpha": 16, "use_rslora": True, "target_modules": ALL_LINEAR},
        "f16",
        ["rsLoRA scaling folded"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_applies_it_as_peft_does(
    case: str, tiny_llama: Path, base_gguf: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    lora, qtype, expected_notes = CASES[case]
    adapter = build_adapter(tiny_llama, tmp_path / case, seed=7, **lora)
    out = tmp_path / f"{case}.gguf"
    notes = export(adapter, out, tiny_llama, qtype=qtype)
    assert len(notes) == len(expected_notes)
    for note, start in zip(notes, expected_notes, strict=True):
        assert note.startswith(start), note

    base = torch_logits(AutoModelForCausalLM.from_pretrained(tiny_llama))
    adapted = torch_logits(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), adapter)
    )
    cpp_base, cpp_adapted = llama_cpp_logits(base_gguf), llama_cpp_logits(base_gguf, out)
    assert np.abs(cpp_base - base).max() < 1e-5  # the same base in both runtimes
    peft_delta, cpp_delta = adapted - base, cpp_adapted - cpp_base
    assert np.abs(peft_delta).max() > 0.1  # the adapter really changes the output
    assert np.abs(cpp_delta - peft_delta).max() < TOLERANCE[qtype]


def test_file_layout_and_same_bytes_twice(plain_adapter: Path, tiny_llama: Path, tmp_path: Path) -> None:
    import gguf

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    export(plain_adapter, a, tiny_llama, metadata={"general.name": "tiny-lora"})
    export(plain_adapter, b, tiny_llama, metadata={"general.name": "tiny-lora"})
    assert a.read_bytes() == b.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf"]  # no temp file left

    reader = gguf.GGUFReader(a)
    keys = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert keys == {
        "general.architecture": "llama",
        "general.name": "tiny-lora",
        "general.type": "adapter",
        "adapter.type": "lora",
        "adapter.lora.alpha": 8.0,
        "general.file_type": int(gguf.LlamaFileType.ALL_F32),
    }
    shapes = {t.name: (list(t.shape), t.tensor_type.name) for t in reader.tensors}
    # ggml order (fastest dimension first): A is [in, r], B is [r, out]; k has the 2 KV heads' rows.
    assert shapes["blk.0.attn_q.weight.lora_a"] == ([32, 4], "F32")
    assert shapes["blk.0.attn_q.weight.lora_b"] == ([4, 32], "F32")
    assert shapes["blk.1.attn_v.weight.lora_b"] == ([4, 16], "F32")
    assert len(shapes) == 2 * 2 * 2  # q and v, two layers, A and B


# ---------------------------------------------------------------- refusals


def edited(adapter: Path, tmp_path: Path, config: dict | None = None, tensors: dict | None = None) -> Path:
    """A copy of ``adapter`` with config keys replaced and tensors added (None removes one)."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "edited"
    shutil.copytree(adapter, out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(json.dumps({**cfg, **(config or {})}))
    if tensors:
        weights = load_file(out / "adapter_model.safetensors")
        for name, value in tensors.items():
            if value is None:
                del weights[name]
            else:
                weights[name] = value
        save_file(weights, out / "adapter_model.safetensors")
    return out


Q0 = "base_model.model.model.layers.0.self_attn.q_proj"
ONES = np.ones((4, 32), np.float32)

CONFIG_REFUSALS = {
    "ia3": ({"peft_type": "IA3"}, Refused, "IA3 adapter"),
    "dora": ({"use_dora": True}, Refused, "DoRA"),
    "fan_in_fan_out": ({"fan_in_fan_out": True}, Refused, "fan_in_fan_out"),
    "bias": ({"bias": "lora_only"}, Refused, "trains biases"),
    "lora_bias": ({"lora_bias": True}, Refused, "bias on lora_B"),
    "modules_to_save": ({"modules_to_save": ["lm_head"]}, Refused, "modules_to_save"),
    "lm_head_target": ({"target_modules": ["q_proj", "lm_head"]}, Refused, "output head"),
    "wrong_rank": ({"r": 8}, InvalidFile, "rank 4"),
    "bad_pattern": ({"rank_pattern": {"q_proj": "big"}}, InvalidFile, "rank_pattern"),
}
TENSOR_REFUSALS = {
    "dora_magnitude": ({f"{Q0}.lora_magnitude_vector": np.ones(32, np.float32)}, Refused, "DoRA"),
    "embedding": (
        {"base_model.model.model.embed_tokens.lora_embedding_A": np.ones((4, 96), np.float32)},
        Refused,
        "embeddings",
    ),
    "lm_head": (
        {
            "base_model.model.lm_head.lora_A.weight": ONES,
            "base_model.model.lm_head.lora_B.weight": np.ones((96, 4), np.float32),
        },
        Refused,
        "adapts lm_head",
    ),
    "saved_module": (
        {"base_model.model.lm_head.weight": np.ones((96, 32), np.float32)},
        Refused,
        "saved whole",
    ),
    "half_pair": ({f"{Q0}.lora_B.weight": None}, InvalidFile, "no lora_B"),
    "not_a_layer": (
        {
            "base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight": ONES,
            "base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight": ONES.T.copy(),
        },
        Refused,
        "another base",
    ),
    "nan": ({f"{Q0}.lora_A.weight": np.full((4, 32), np.nan, np.float32)}, InvalidFile, "NaN"),
    "integer": ({f"{Q0}.lora_A.weight": np.ones((4, 32), np.int32)}, InvalidFile, "not a float"),
}


@pytest.mark.parametrize("case", list(CONFIG_REFUSALS) + list(TENSOR_REFUSALS))
def test_refusals_leave_nothing(case: str, plain_adapter: Path, tiny_llama: Path, tmp_path: Path) -> None:
    if case in CONFIG_REFUSALS:
        config, error, words = CONFIG_REFUSALS[case]
        adapter = edited(plain_adapter, tmp_path, config=config)
    else:
        tensors, error, words = TENSOR_REFUSALS[case]
        adapter = edited(plain_adapter, tmp_path, tensors=tensors)
    out = tmp_path / "out" / "lora.gguf"
    out.parent.mkdir()
    out.write_bytes(b"the previous file")
    with pytest.raises(error, match=words) as caught:
        export(adapter, out, tiny_llama)
    assert "\n" not in str(caught.value)
    assert [p.name for p in out.parent.iterdir()] == ["lora.gguf"]
    assert out.read_bytes() == b"the previous file"


def test_real_dora_and_embedding_adapters_refused(tiny_llama: Path, tmp_path: Path) -> None:
    dora = build_adapter(tiny_llama, tmp_path / "dora", seed=7, r=4, target_modules=["q_proj"], use_dora=True)
    with pytest.raises(Refused, match="DoRA"):
        export(dora, tmp_path / "dora.gguf", tiny_llama)
    embed = build_adapter(
        tiny_llama, tmp_path / "embed", seed=7, r=4, target_modules=["embed_tokens", "q_proj"]
    )
    with pytest.raises(Refused, match="embeddings"):
        export(embed, tmp_path / "embed.gguf", tiny_llama)
    assert not list(tmp_path.glob("*.gguf*"))


def test_adapter_of_another_base(tiny_llama_other: Path, tiny_llama: Path, tmp_path: Path) -> None:
    wide = build_adapter(tiny_llama_other, tmp_path / "wide", seed=7, r=4, lora_alpha=8)
    with pytest.raises(
        Refused,
        match=r"q_proj \(lora_A \[4, 48\], lora_B \[48, 4\]\) adapts a \[48, 48\] weight, the base's is "
        r"\[32, 32\]; an adapter for another base",
    ):
        export(wide, tmp_path / "wide.gguf", tiny_llama)
    assert not (tmp_path / "wide.gguf").exists()


def test_bad_inputs(plain_adapter: Path, tiny_llama: Path, tmp_path: Path) -> None:
    from owlkit.quantize.gguf_lora import export_gguf_lora

    base_config = json.loads((tiny_llama / "config.json").read_text())
    out = tmp_path / "lora.gguf"
    with pytest.raises(NotFound, match="no such adapter folder"):
        export_gguf_lora(tmp_path / "absent", out, base_config)
    with pytest.raises(UsageError, match="q4_0"):
        export_gguf_lora(plain_adapter, out, base_config, qtype="q4_0")
    with pytest.raises(Refused, match="GPT2LMHeadModel"):
        export_gguf_lora(plain_adapter, out, {**base_config, "architectures": ["GPT2LMHeadModel"]})

    garbage = edited(plain_adapter, tmp_path)
    (garbage / "adapter_model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(InvalidFile, match=r"adapter_model\.safetensors"):
        export_gguf_lora(garbage, out, base_config)
    (garbage / "adapter_model.safetensors").unlink()
    (garbage / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(Refused, match="pickle"):
        export_gguf_lora(garbage, out, base_config)

    # A failure while writing (here: a metadata value GGUF keys cannot hold) removes the temp file.
    with pytest.raises(UsageError, match="metadata"):
        export_gguf_lora(plain_adapter, out, base_config, metadata={"general.score": 1.5})
    assert not list(tmp_path.glob("lora.gguf*"))

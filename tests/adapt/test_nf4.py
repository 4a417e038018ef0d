"""The streaming NF4 loader gives the model transformers' own 4-bit load gives, bit for bit (weights,
quantization states, rotary buffers, tying, the attributes PEFT reads, logits), without mapping the
checkpoint; what it cannot stream is refused or handed to transformers; the heap bound applies to
QLoRA only, and never over the user's own glibc setting."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlkit.errors import Refused
from owltest import STORIES, build_tiny_llama, need, transformers_nf4

pytest.importorskip("bitsandbytes")


def assert_same_model(ref, mine) -> None:
    import torch

    skip = {"_modules", "_parameters", "_buffers", "config", "generation_config", "hf_quantizer"}
    a = {k: v for k, v in vars(ref).items() if k not in skip}
    b = {k: v for k, v in vars(mine).items() if k not in skip}
    assert a == b  # is_loaded_in_4bit, is_quantized, quantization_method, training...
    assert type(ref.hf_quantizer) is type(mine.hf_quantizer)
    assert ref.config.to_dict() == mine.config.to_dict()
    assert ref.config._attn_implementation == mine.config._attn_implementation
    assert ref.generation_config.to_dict() == mine.generation_config.to_dict()
    assert [type(m) for m in ref.modules()] == [type(m) for m in mine.modules()]

    # The state dict holds the packed NF4 weights and every quantization-state tensor (absmax, nested...).
    sa, sb = ref.state_dict(), mine.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
    for (name, pa), (_, pb) in zip(ref.named_parameters(), mine.named_parameters(), strict=True):
        assert type(pa) is type(pb) and pa.requires_grad == pb.requires_grad, name
        if type(pa).__name__ == "Params4bit":
            qa, qb = pa.quant_state.as_dict(), pb.quant_state.as_dict()
            assert qa.keys() == qb.keys(), name
            for k in qa:
                same = torch.equal(qa[k], qb[k]) if isinstance(qa[k], torch.Tensor) else qa[k] == qb[k]
                assert same, (name, k)
            assert pb.module.quant_state is pb.quant_state and pb.bnb_quantized
            assert (pa.blocksize, pa.compress_statistics, pa.quant_type, pa.quant_storage) == (
                pb.blocksize,
                pb.compress_statistics,
                pb.quant_type,
                pb.quant_storage,
            )
    buffers_a, buffers_b = dict(ref.named_buffers()), dict(mine.named_buffers())  # rotary inv_freq included
    assert buffers_a.keys() == buffers_b.keys()
    assert all(torch.equal(buffers_a[k], buffers_b[k]) for k in buffers_a)
    out_a, out_b = ref.get_output_embeddings(), mine.get_output_embeddings()
    in_a, in_b = ref.get_input_embeddings(), mine.get_input_embeddings()
    assert (out_a.weight is in_a.weight) == (out_b.weight is in_b.weight)

    ids = torch.randint(0, ref.config.vocab_size, (1, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float((ref(ids).logits - mine(ids).logits).abs().max()) == 0.0


def mapped(path: Path) -> bool:
    """Whether this process has ``path`` mapped (Linux)."""
    return str(path.resolve()) in Path("/proc/self/maps").read_text()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # hidden 64: bitsandbytes quantizes in blocks of 64 values
    return build_tiny_llama(tmp_path_factory.mktemp("nf4") / "tiny", hidden=64)


def build(kind: str, folder: Path) -> Path:
    """Tiny random models of other shapes: Qwen2 (biases, tied embeddings), GPT-2 (Conv1D, stored
    transposed), and the tiny Llama sharded in bfloat16 (cast to float32 before quantizing)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    if kind == "qwen2":
        config = Qwen2Config(
            vocab_size=128,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
        Qwen2ForCausalLM(config).save_pretrained(folder)
    elif kind == "gpt2":
        GPT2LMHeadModel(
            GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64)
        ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["llama", "llama-bf16-sharded", "qwen2", "gpt2"])
def test_streams_the_same_model_as_transformers(kind: str, tiny: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from owlkit.adapt.nf4 import load_nf4_causal_lm

    if kind == "llama":
        folder = tiny
    elif kind == "llama-bf16-sharded":
        folder = tmp_path / "sharded"
        AutoModelForCausalLM.from_pretrained(tiny).to(torch.bfloat16).save_pretrained(
            folder, max_shard_size="40KB"
        )
        assert len(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]) > 1
    else:
        folder = build(kind, tmp_path / kind)
    assert_same_model(transformers_nf4(folder), load_nf4_causal_lm(folder, fallback=False))


@pytest.mark.realmodel
def test_stories260k_streams_the_same_model_as_transformers() -> None:
    from owlkit.adapt.nf4 import load_nf4_causal_lm

    folder = need(STORIES)
    mine = load_nf4_causal_lm(folder, fallback=False)
    assert mine.lm_head.weight is mine.model.embed_tokens.weight  # tied, and left in float32
    assert_same_model(transformers_nf4(folder), mine)


def test_checkpoint_is_read_not_mapped(tiny: Path, tmp_path: Path) -> None:
    """transformers' load leaves the norm weights as views into the mapped file; ours owns its memory."""
    if not Path("/proc/self/maps").is_file():
        pytest.skip("needs /proc/self/maps (Linux)")
    from owlkit.adapt.nf4 import load_nf4_causal_lm

    folder = shutil.copytree(tiny, tmp_path / "copy")  # a path no other test maps
    model = load_nf4_causal_lm(folder, fallback=False)
    assert not mapped(folder / "model.safetensors")
    assert model.model.norm.weight.untyped_storage().nbytes() == model.model.norm.weight.nbytes


def test_peft_sees_the_same_kbit_model(tiny: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from owlkit.adapt.nf4 import load_nf4_causal_lm

    def prepared(model):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        torch.manual_seed(0)
        config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        return get_peft_model(model, config)

    ref, mine = prepared(transformers_nf4(tiny)), prepared(load_nf4_causal_lm(tiny, fallback=False))
    trainable = [(n, p) for n, p in mine.named_parameters() if p.requires_grad]
    assert [n for n, p in ref.named_parameters() if p.requires_grad] == [n for n, _ in trainable]
    assert type(ref.base_model.model.model.layers[0].mlp.up_proj) is type(
        mine.base_model.model.model.layers[0].mlp.up_proj
    )
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        assert torch.equal(ref(ids).logits, mine(ids).logits)


def test_what_it_cannot_stream_is_refused_or_left_to_transformers(tiny: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from owlkit.adapt.nf4 import load_nf4_causal_lm

    weights = load_file(tiny / "model.safetensors")
    missing = shutil.copytree(tiny, tmp_path / "missing")
    save_file({k: v for k, v in weights.items() if k != "model.norm.weight"}, missing / "model.safetensors")
    with pytest.raises(Refused, match=r"lacks 1 weight.*model\.norm\.weight") as err:
        load_nf4_causal_lm(missing, fallback=False)
    assert "\n" not in str(err.value)

    extra = shutil.copytree(tiny, tmp_path / "extra")
    save_file({**weights, "model.extra.weight": torch.zeros(4)}, extra / "model.safetensors")
    with pytest.raises(Refused, match=r"'model\.extra\.weight' is not a weight of LlamaForCausalLM"):
        load_nf4_causal_lm(extra, fallback=False)
    with pytest.warns(UserWarning, match="loading through transformers"):
        model = load_nf4_causal_lm(extra)
    assert model.is_loaded_in_4bit and type(model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"


def test_heap_bound_leaves_a_users_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from owlkit.adapt.memory import bound_heap_retention

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert bound_heap_retention("qlora") is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    assert (
        bound_heap_retention("lora") is False
    )  # glibc's own behaviour: faster where memory is not the point
    assert bound_heap_retention("qlora") is (platform.libc_ver()[0] == "glibc")

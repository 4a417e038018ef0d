"""Helpers shared by the tests (import as `from owltest import ...`): where ../shared is, and
builders of tiny random models with real tokenizers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "realmodels" / "stories260k" / "hf"
SMOLLM_GGUF = SHARED / "realmodels" / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = SHARED / "data" / "alpaca-5k"


# Property tests over untrusted bytes: bounded in count and time, so they stop by themselves.
PROPS = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def read_or_one_line_invalid(reader: Callable[[Path], object], path: Path) -> None:
    """A reader of untrusted files either succeeds or raises InvalidFile with a one-line reason."""
    from owlkit.errors import InvalidFile

    try:
        reader(path)
    except InvalidFile as e:
        assert "\n" not in str(e)


def flip_or_truncate(b: bytearray, kind: str, header_end: int, data) -> None:
    """The mutations both strict-reader property tests share: flip header bytes, or cut the file short."""
    from hypothesis import strategies as st

    if kind == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, header_end - 1))
            b[i] ^= data.draw(st.integers(1, 255))
    else:
        del b[data.draw(st.integers(0, len(b) - 1)) :]


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when a file from ../shared is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not beside the repo; set OWL_SHARED)")
    return path


def build_tokenizer(folder: Path, vocab_size: int = 96) -> None:
    """A real byte-level BPE tokenizer trained on a few sentences, saved the way transformers saves one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False
    )
    corpus = ["Once upon a time there was a tiny owl.", "The owl read model files carefully."] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.save_pretrained(folder)


def tiny_llama_model(*, seed: int = 0, vocab_size: int = 96, hidden: int = 32, positions: int = 128) -> Any:
    """A tiny random LlamaForCausalLM (about 40K parameters at the defaults), in memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def build_tiny_llama(folder: Path, *, seed: int = 0, vocab_size: int = 96, hidden: int = 32) -> Path:
    """A tiny random LlamaForCausalLM with a real tokenizer, as an HF folder."""
    tiny_llama_model(seed=seed, vocab_size=vocab_size, hidden=hidden).save_pretrained(folder)
    build_tokenizer(folder, vocab_size)
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# tiny-llama\nA tiny random Llama for tests.\n"
    )
    return folder


def build_adapter(base: Path, out: Path, base_name: str | None = None, *, seed: int = 3, **lora: Any) -> Path:
    """A real PEFT adapter on the model in ``base``: LoraConfig(``lora``) over r=4, alpha 8 on
    q_proj/v_proj, with random non-zero B matrices so it changes outputs. ``base_name``, when given, is
    written as the base to resolve in the store."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(**{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], **lora})
    model = AutoModelForCausalLM.from_pretrained(base)
    torch.manual_seed(seed)  # before the LoRA A matrices are initialised: the same adapter every run
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    if base_name is not None:
        cfg = json.loads((out / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = base_name
        (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out


def transformers_nf4(folder: Path):
    """transformers' own on-the-fly 4-bit load of ``folder`` (NF4, double quantization, float32 compute),
    the reference adapt/nf4.py's streaming loader matches, with owlkit's two settings for every model: no
    Hub kernels, and 4-bit layers kept on bitsandbytes' float path (runtime/load.py says why)."""
    import torch
    from transformers import AutoModelForCausalLM

    from owlkit.adapt.nf4 import nf4_config
    from owlkit.runtime.load import keep_4bit_on_float_path

    return keep_4bit_on_float_path(
        AutoModelForCausalLM.from_pretrained(
            folder,
            trust_remote_code=False,
            dtype=torch.float32,
            quantization_config=nf4_config(),
            device_map="cpu",
            use_kernels=False,
        )
    )

"""Shared fixtures: a fresh store per test, tiny random Llama models built in code, the real models in
../shared (skipped with a reason when absent), and an in-process `owl` runner with real exit codes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "realmodels" / "stories260k" / "hf"
SMOLLM_GGUF = SHARED / "realmodels" / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = SHARED / "data" / "alpaca-5k"


def need(path: Path) -> Path:
    """Skip the calling test, with the reason, when a file from ../shared is absent."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared not beside the repo; set OWL_SHARED)")
    return path


@pytest.fixture
def owl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "owlhome"
    monkeypatch.setenv("OWL_HOME", str(home))
    monkeypatch.delenv("OWL_DB", raising=False)
    return home


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def owl(owl_home: Path, capsys: pytest.CaptureFixture[str]):
    """Run `owl ARGS…` in-process; returns exit code, stdout and stderr."""
    from owlkit.cli.main import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def build_tokenizer(folder: Path, vocab_size: int = 96) -> None:
    """A real byte-level BPE tokenizer trained on a few sentences, saved the way transformers saves one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>"], show_progress=False)
    corpus = ["Once upon a time there was a tiny owl.", "The owl read model files carefully."] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    fast.save_pretrained(folder)


def build_tiny_llama(folder: Path, *, seed: int = 0, vocab_size: int = 96, hidden: int = 32) -> Path:
    """A tiny random LlamaForCausalLM (about 40K parameters) with a real tokenizer, as an HF folder."""
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
        max_position_embeddings=128,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    build_tokenizer(folder, vocab_size)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny-llama\nA tiny random Llama for tests.\n")
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny Llama with a different shape: a different base identity."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny2") / "tiny-llama-wide", seed=1, hidden=48)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A real PEFT LoRA adapter (non-zero B so it changes outputs) on the tiny Llama."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter") / "tiny-lora"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tiny-llama"
    (out / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return out

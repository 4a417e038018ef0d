"""Loading for inference and streamed generation, on real models and on tiny ones built in code: the
direct loop over a loaded model, and the session helpers `owl run` and `owl chat` use on a backend."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from owlkit.backends.base import Sampling
from owlkit.backends.loading import open_for
from owlkit.backends.session import Reply, fit_history, prompt_ids
from owlkit.errors import Refused, UsageError
from owlkit.runtime.generate import chat_prompt, stream_generate
from owlkit.runtime.load import available_memory, load_causal_lm
from owltest import STORIES, need

# Karpathy's documented greedy sample of stories260K (llama2.c doc/stories260K.md), from BOS.
REFERENCE = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, "
    "she saw a big, red ball. She wanted to play with it, but it was too high"
)


@pytest.fixture(scope="module")
def stories():
    return load_causal_lm(need(STORIES))


@pytest.mark.realmodel
def test_stories_greedy_gives_karpathys_reference(stories) -> None:
    model, tokenizer = stories
    assert tokenizer("Once upon a time")["input_ids"][0] == 1  # the tokenizer adds <s>
    pieces = list(stream_generate(model, tokenizer, "Once upon a time", max_tokens=40))
    text = "Once upon a time" + "".join(pieces)
    assert len(pieces) > 10  # streamed piece by piece, not in one lump
    assert len(text) > 100
    assert REFERENCE.startswith(text), text


@pytest.mark.realmodel
def test_seeded_sampling_is_reproducible(stories) -> None:
    model, tokenizer = stories

    def sample(seed: int | None, **kw) -> str:
        return "".join(
            stream_generate(
                model, tokenizer, "Once upon a time", max_tokens=15, temperature=1.0, seed=seed, **kw
            )
        )

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1
    greedy = "".join(stream_generate(model, tokenizer, "Once upon a time", max_tokens=15))
    assert sample(5, top_p=1e-6) == greedy  # a nucleus of one token is greedy


@pytest.mark.realmodel
def test_argument_errors(stories) -> None:
    model, tokenizer = stories
    assert tokenizer.chat_template is None
    with pytest.raises(UsageError, match="no chat template; drop --chat"):
        list(stream_generate(model, tokenizer, "hi", chat=True))
    with pytest.raises(UsageError, match="system prompt needs chat mode"):
        list(stream_generate(model, tokenizer, "hi", system="be nice"))
    for bad in ({"max_tokens": -1}, {"temperature": -0.5}, {"top_p": 0.0}, {"top_p": 1.5}):
        with pytest.raises(UsageError):
            list(stream_generate(model, tokenizer, "hi", **bad))
    assert list(stream_generate(model, tokenizer, "hi", max_tokens=0)) == []


class ScriptedLM:
    """A stand-in causal LM whose next token is read from a script (then EOS): it drives the streaming
    decoder through exact token sequences, such as a character split over several byte tokens."""

    def __init__(self, script: list[int], vocab_size: int, eos: int) -> None:
        import torch

        self.script = [*script, eos]
        self.vocab_size = vocab_size
        self.config = SimpleNamespace(max_position_embeddings=512)
        self.generation_config = SimpleNamespace(eos_token_id=eos)
        self.device = torch.device("cpu")
        self.calls = 0

    def __call__(self, input_ids, cache=None, use_cache=True):
        import torch

        logits = torch.zeros(1, input_ids.shape[1], self.vocab_size)
        logits[0, -1, self.script[self.calls]] = 1.0
        self.calls += 1
        return SimpleNamespace(logits=logits, cache=cache)


@pytest.mark.realmodel
def test_multibyte_characters_are_never_split(stories) -> None:
    _, tokenizer = stories
    ids = tokenizer("日本 é, done", add_special_tokens=False)["input_ids"]  # SentencePiece adds the "▁"
    text = " 日本 é, done"
    assert len(ids) > len(text.split())  # byte-fallback tokens: 日 is three of them
    model = ScriptedLM(ids, len(tokenizer), eos=tokenizer.eos_token_id)
    pieces = list(stream_generate(model, tokenizer, "Words:", max_tokens=100))
    assert "".join(pieces) == text  # the leading space of the first token survives
    assert not any("\ufffd" in p for p in pieces)
    assert "日" in pieces  # held back until its three bytes arrived, then sent whole
    assert model.calls == len(ids) + 1  # stopped at EOS


def test_chat_uses_the_models_template_in_the_sandbox(tiny_llama: Path) -> None:
    model, tokenizer = load_causal_lm(tiny_llama)
    ours = chat_prompt(tokenizer, "hello there", system="be brief")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert ours == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == "<|system|>be brief</s><|user|>hello there</s><|assistant|>"
    out = "".join(
        stream_generate(model, tokenizer, "hello", chat=True, max_tokens=5, temperature=0.9, seed=1)
    )
    assert out == "".join(
        stream_generate(model, tokenizer, "hello", chat=True, max_tokens=5, temperature=0.9, seed=1)
    )


def test_session_on_a_backend_matches_the_direct_loop(owl, tiny_llama: Path) -> None:
    """What `owl run` sends through the torch backend: the same prompt ids and the same text as the
    direct loop over the model, plain and chat; and history trimmed to the context for `owl chat`."""
    from owlkit.store import open_store

    assert owl("import", tiny_llama).code == 0
    store = open_store(write=True)
    backend, adapter = open_for(store, store.find("tiny-llama"), "torch", max_batch=1)
    model, tokenizer = load_causal_lm(tiny_llama)
    try:
        assert adapter is None and backend.context_length == 128
        rendered = chat_prompt(tokenizer, "hello there", system="be brief")
        chat_ids = prompt_ids(backend, "hello there", chat=True, system="be brief")
        assert chat_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
        assert prompt_ids(backend, "Once upon", chat=False) == tokenizer("Once upon")["input_ids"]
        for chat in (False, True):
            ids = prompt_ids(backend, "Once upon a time", chat=chat)
            reply = Reply(backend, ids, Sampling(max_tokens=10, temperature=0))
            pieces = list(reply)
            direct = "".join(stream_generate(model, tokenizer, "Once upon a time", chat=chat, max_tokens=10))
            assert "".join(pieces) == reply.text == direct
            assert reply.finish in ("stop", "length") and reply.tokens <= 10
        with pytest.raises(UsageError, match="--system needs --chat"):
            prompt_ids(backend, "hi", chat=False, system="be brief")

        turn = [{"role": "user", "content": "Once upon a time"}, {"role": "assistant", "content": "tiny owl"}]
        messages = [{"role": "system", "content": "be brief"}, *turn * 4, {"role": "user", "content": "hi"}]
        ids, kept, dropped = fit_history(backend, messages, 10)
        assert dropped == 0 and kept == messages and len(ids) + 10 <= 128
        ids, kept, dropped = fit_history(backend, messages, 100)
        assert len(ids) + 100 <= 128 and dropped % 2 == 0 and dropped > 0
        assert kept[0] == messages[0] and kept[1:] == messages[1 + dropped :]  # the oldest went first
        _, kept, _ = fit_history(backend, messages, 1000)  # nothing fits: the last message stays
        assert kept == [messages[0], messages[-1]]
    finally:
        backend.close()


def test_load_refuses_pickles_and_custom_code(tiny_llama: Path, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_llama, pickled)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")  # only the name matters here
    with pytest.raises(Refused, match="never loads pickle"):
        load_causal_lm(pickled)
    custom = tmp_path / "custom"
    shutil.copytree(tiny_llama, custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="owl-custom", auto_map={"AutoModelForCausalLM": "modeling_owl.OwlForCausalLM"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "modeling_owl.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(Refused, match="never runs code"):
        load_causal_lm(custom)


def test_load_refuses_a_bad_dtype(tiny_llama: Path) -> None:
    with pytest.raises(UsageError, match="float32, bfloat16, float16"):
        load_causal_lm(tiny_llama, dtype="int3")


def test_available_memory_is_positive() -> None:
    assert available_memory() > 0

"""The gguf backend on the real SmolLM2 Q4_1 GGUF, checked against llama-cpp-python itself: greedy output
equals ``create_completion``'s, prompt logprobs equal a ``logits_all`` context's, and a PEFT LoRA trained
on the converted HF folder gives what ``Llama(lora_path=...)`` gives, switched per request."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owlkit.backends.adapters import attach
from owlkit.backends.base import BackendOptions, Event, QueueFull, Request, Sampling, generate
from owlkit.errors import NotFound, Refused, UsageError
from owltest import SMOLLM_GGUF, build_adapter, need

llama_cpp = pytest.importorskip(
    "llama_cpp", reason="the gguf backend needs llama-cpp-python (the gguf extra)"
)
pytestmark = pytest.mark.realmodel

PROMPT = "Once upon a time"
GREEDY = (
    ", the city of Nova Haven was a thriving metropolis, with towering skyscrapers and bustling"  # 16 tokens
)


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store with the SmolLM2 GGUF, its converted HF folder (smollm2-hf) and a PEFT LoRA on that
    folder whose B matrices are noise (so it changes the output)."""
    from owlkit.recipes.convert import ConvertParams, convert
    from owlkit.recipes.importer import import_path
    from owlkit.store import open_store

    gguf = need(SMOLLM_GGUF)
    tmp = tmp_path_factory.mktemp("smol")
    store = open_store(tmp / "home", write=True)
    import_path(store, gguf, name="smollm2")
    convert(store, "smollm2", ConvertParams(dtype="bfloat16"))
    adapter = build_adapter(store.checkout(store.find("smollm2-hf").digest), tmp / "lora", seed=7)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "smollm2-hf"})
    )
    import_path(store, adapter, name="smol-lora")
    yield store
    store.close()


@pytest.fixture(scope="module")
def backend(smol: Any) -> Any:
    from owlkit.backends.gguf_backend import GGUFBackend

    be = GGUFBackend(smol, smol.find("smollm2"), BackendOptions(threads=1))
    yield be
    be.close()


@pytest.fixture(scope="module")
def reference() -> Any:
    """llama-cpp-python on the same file, driven by its own high-level API."""
    from owlkit.runtime.llamacpp import open_gguf

    llm = open_gguf(SMOLLM_GGUF, n_ctx=512, n_threads=1, logits_all=True)
    yield llm
    llm.close()


def run(
    be: Any, prompt: list[int], adapter: str | None = None, **sampling: Any
) -> tuple[list[int], list[Event]]:
    events = list(generate(be, prompt, Sampling(**sampling), adapter=adapter, timeout=120))
    return [t for e in events for t in e.tokens], events


def test_greedy_equals_llama_cpp_python_and_the_prefix_cache_changes_nothing(
    backend: Any, reference: Any
) -> None:
    prompt = backend.encode(PROMPT, special=True)
    tokens, events = run(backend, prompt, max_tokens=16, temperature=0)
    expected = reference.create_completion(PROMPT, max_tokens=16, temperature=0)["choices"][0]["text"]
    assert backend.decode(tokens) == expected == GREEDY
    assert events[-1].finish == "length" and all(e.finish is None for e in events[:-1])
    # Again (the whole prompt cached), and with a longer prompt sharing the prefix.
    assert run(backend, prompt, max_tokens=16, temperature=0)[0] == tokens
    longer = prompt + tokens[:4]
    assert run(backend, longer, max_tokens=12, temperature=0)[0] == tokens[4:]


def test_seeded_sampling_repeats(backend: Any) -> None:
    prompt = backend.encode(PROMPT, special=True)
    kw = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.9}
    a, b = run(backend, prompt, seed=5, **kw)[0], run(backend, prompt, seed=5, **kw)[0]
    c = run(backend, prompt, seed=6, **kw)[0]
    assert a == b != c


def test_logprobs_and_echo(backend: Any, reference: Any) -> None:
    prompt = backend.encode(PROMPT + GREEDY, special=True) * 9  # 180 tokens: two chunks of positions
    tokens, events = run(backend, prompt, max_tokens=4, temperature=0, logprobs=5, echo_logprobs=True)
    # Prompt logprobs come first, one per prompt token (the first None), as a logits_all context gives.
    first = events[0]
    assert first.tokens == [] and first.prompt_logprobs is not None
    assert len(first.prompt_logprobs) == len(prompt) and first.prompt_logprobs[0] is None
    reference.reset()
    reference.eval(prompt)
    scores = np.array(reference.scores[: len(prompt)], dtype=np.float64)
    scores -= scores.max(-1, keepdims=True)
    lps = scores - np.log(np.exp(scores).sum(-1, keepdims=True))
    for i, lp in enumerate(first.prompt_logprobs[1:]):
        assert lp.token == prompt[i + 1] and lp.logprob == pytest.approx(lps[i, prompt[i + 1]], abs=1e-3)
        assert lp.top[0][0] == int(np.argmax(lps[i]))
    # Generated tokens: greedy picks the top entry; the top 5 are sorted and hold at most all the mass.
    lp_events = [lp for e in events for lp in e.logprobs]
    assert [lp.token for lp in lp_events] == tokens and len(tokens) == 4
    assert lp_events[0].logprob == pytest.approx(lps[-1].max(), abs=1e-3)
    for lp in lp_events:
        assert len(lp.top) == 5 and lp.top[0] == (lp.token, lp.logprob)
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True) and 0 < sum(np.exp(values)) <= 1 + 1e-9
    # logprobs=0: the chosen token's logprob, no alternatives; max_tokens=0 with echo: prompt logprobs only.
    short = backend.encode(PROMPT, special=True)
    _, events = run(backend, short, max_tokens=2, temperature=0, logprobs=0)
    assert [lp.top for e in events for lp in e.logprobs] == [[], []]
    tokens, events = run(backend, short, max_tokens=0, echo_logprobs=True)
    assert tokens == [] and len(events[0].prompt_logprobs) == len(short) and events[-1].finish == "length"


def test_cancel_aborts_and_a_full_queue_refuses(smol: Any, backend: Any) -> None:
    from owlkit.backends.gguf_backend import GGUFBackend

    prompt = backend.encode(PROMPT, special=True)
    # Cancelled after its first token: the request ends with "abort" at the next step.
    events: list[Event] = []
    done = threading.Event()

    def sink(ev: Event) -> None:
        events.append(ev)
        req.cancel()
        if ev.finish:
            done.set()

    req = Request(prompt, Sampling(max_tokens=200, temperature=0), sink)
    backend.submit(req)
    assert done.wait(60)
    assert events[-1].finish == "abort" and sum(len(e.tokens) for e in events) <= 2

    # One running and max_queue=1 waiting: the third is refused; closing aborts what waits.
    be = GGUFBackend(smol, smol.find("smollm2"), BackendOptions(max_queue=1, threads=1, n_ctx=256))
    try:
        finished: dict[str, str | None] = {}

        def note(name: str) -> Any:
            return lambda ev: finished.__setitem__(name, ev.finish)

        reqs = {n: Request(prompt, Sampling(max_tokens=200, temperature=0), note(n)) for n in "abc"}
        be.submit(reqs["a"])
        be.submit(reqs["b"])
        with pytest.raises(QueueFull):
            be.submit(reqs["c"])
    finally:
        be.close()
    assert finished == {"a": "abort", "b": "abort"}
    with pytest.raises(Refused, match="shut down"):
        be.submit(reqs["c"])


def test_context_full_stops_with_length(smol: Any) -> None:
    from owlkit.backends.gguf_backend import GGUFBackend

    be = GGUFBackend(smol, smol.find("smollm2"), BackendOptions(threads=1, n_ctx=256))  # llama.cpp's least
    try:
        assert be.context_length == 256
        prompt = be.encode(PROMPT, special=True) * 62  # 248 tokens
        tokens, events = run(be, prompt, max_tokens=100, temperature=0)
        assert len(prompt) + len(tokens) == 256 and events[-1].finish == "length"
        with pytest.raises(UsageError, match="257 tokens, more than the context of 256"):
            run(be, prompt + prompt[:9], max_tokens=1)
    finally:
        be.close()


def test_text_helpers(backend: Any) -> None:
    from owlkit.formats.gguf import read_gguf

    chat = "<|im_start|>user\nhi<|im_end|>"
    ids = backend.encode(chat, special=False)
    assert ids == [1, 4093, 198, 6004, 2]  # special-token text is parsed as the special tokens
    assert backend.decode(ids) == "user\nhi"  # and left out when decoding
    assert backend.token_text(2) == "<|im_end|>" and backend.token_text(ids[1]) == "user"
    assert backend.token_text(backend.encode(" a", special=False)[0]) == " a"
    template, special = backend.chat_template(None)
    assert template == read_gguf(SMOLLM_GGUF).metadata["tokenizer.chat_template"]
    assert special == {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    with pytest.raises(UsageError, match="outside the vocabulary"):
        backend.submit(Request([49152], Sampling(), lambda ev: None))
    with pytest.raises(UsageError, match="outside the vocabulary"):
        backend.decode([-1])
    with pytest.raises(UsageError, match="empty"):
        backend.submit(Request([], Sampling(), lambda ev: None))


def test_non_gguf_base_is_refused_naming_the_torch_backend(smol: Any) -> None:
    from owlkit.backends.gguf_backend import GGUFBackend

    with pytest.raises(Refused, match="--backend torch"):
        GGUFBackend(smol, smol.find("smollm2-hf"), BackendOptions())


def test_lora_adapter_switched_per_request(
    smol: Any, backend: Any, tmp_path: Path, tiny_llama: Path, tiny_adapter: Path
) -> None:
    from owlkit.quantize.gguf_lora import export_gguf_lora
    from owlkit.recipes.importer import import_path
    from owlkit.recipes.quantize import quantize
    from owlkit.runtime.llamacpp import open_gguf

    prompt = backend.encode(PROMPT, special=True)
    lora = smol.find("smol-lora")
    attach(backend, "lora", lora)
    assert backend.adapters() == ["lora"]
    assert any("gguf:Q4_1" in w for w in backend.warnings)  # trained on the converted folder's weights

    # Base, adapter, base queued together: each runs with its own adapter (or none).
    results: dict[int, list[int]] = {}
    finished = threading.Event()

    def sink(i: int) -> Any:
        def put(ev: Event) -> None:
            results.setdefault(i, []).extend(ev.tokens)
            if ev.finish and len(results) == 3 and i == 2:
                finished.set()

        return put

    for i, name in enumerate([None, "lora", None]):
        backend.submit(Request(prompt, Sampling(max_tokens=12, temperature=0), sink(i), adapter=name))
    assert finished.wait(120)
    base, adapted = results[0], results[1]
    assert backend.decode(base) == GREEDY[: len(backend.decode(base))] and results[2] == base
    assert adapted != base

    # The same adapter exported from the HF folder's config and applied by llama-cpp-python's lora_path.
    exported = tmp_path / "lora.gguf"
    hf_config = json.loads((smol.checkout(smol.find("smollm2-hf").digest) / "config.json").read_text())
    export_gguf_lora(smol.checkout(lora.digest), exported, hf_config)
    llm = open_gguf(SMOLLM_GGUF, n_ctx=256, n_threads=1, lora_path=str(exported))
    try:
        text = llm.create_completion(PROMPT, max_tokens=12, temperature=0)["choices"][0]["text"]
    finally:
        llm.close()
    assert backend.decode(adapted) == text

    # A stored GGUF LoRA (owl quantize ADAPTER --to gguf-lora) loads as it is, and gives the same tokens.
    stored = smol.get(quantize(smol, "smol-lora", ["gguf-lora"])[0].digest)
    attach(backend, "lora-gguf", stored)
    assert run(backend, prompt, adapter="lora-gguf", max_tokens=12, temperature=0)[0] == adapted

    # Removing frees it: its name is unknown afterwards; the base is unchanged.
    backend.remove_adapter("lora")
    backend.remove_adapter("lora-gguf")
    assert backend.adapters() == []
    with pytest.raises(NotFound, match="no adapter named 'lora'"):
        backend.submit(Request(prompt, Sampling(), lambda ev: None, adapter="lora"))
    with pytest.raises(NotFound):
        backend.remove_adapter("lora")
    assert run(backend, prompt, max_tokens=12, temperature=0)[0] == base

    # An adapter of another base identity is refused, naming what differs; a model is not an adapter.
    import_path(smol, tiny_llama, name="tiny-llama")
    import_path(smol, tiny_adapter, name="tiny-lora")
    with pytest.raises(Refused, match="vocab_size"):
        attach(backend, "tiny", smol.find("tiny-lora"))
    with pytest.raises(Refused, match="not an adapter"):
        attach(backend, "x", smol.find("smollm2"))
    assert backend.adapters() == []


def test_close_is_prompt(smol: Any) -> None:
    from owlkit.backends.gguf_backend import GGUFBackend

    be = GGUFBackend(smol, smol.find("smollm2"), BackendOptions(threads=1, n_ctx=128))
    got: list[Event] = []
    be.submit(Request(be.encode(PROMPT, special=True), Sampling(max_tokens=100, temperature=0), got.append))
    time.sleep(0.2)
    started = time.monotonic()
    be.close()
    assert time.monotonic() - started < 5 and got[-1].finish in ("abort", "length")

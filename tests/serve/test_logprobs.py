"""Logprobs as lm-evaluation-harness's `local-completions` reads them (echo + logprobs on token-id
prompts), checked against the transformers model's own logits: an independent computation."""

from __future__ import annotations

from typing import Any

import pytest

PROMPT = [0, 5, 17, 30, 42, 8, 61, 12, 33]  # token ids, BOS first


@pytest.fixture(scope="module")
def hf_logprobs(serve_folders: dict) -> Any:
    """log_softmax of each position's logits, for the base and the LoRA adapter, computed by HF/PEFT."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    def run(model: Any) -> Any:
        with torch.no_grad():
            return torch.log_softmax(model(torch.tensor([PROMPT])).logits[0].float(), dim=-1)

    base = AutoModelForCausalLM.from_pretrained(serve_folders["tiny"]).eval()
    plain = run(base)
    adapted = run(PeftModel.from_pretrained(base, serve_folders["lora"]).eval())
    return {"tiny": plain, "lora": adapted}


@pytest.mark.parametrize("model", ["tiny", "lora"])
def test_echo_logprobs_equal_the_models_own(client: Any, hf_logprobs: Any, model: str) -> None:
    r = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=0, echo=True, logprobs=3, temperature=0
    )
    lp = r.choices[0].logprobs
    assert (
        len(lp.token_logprobs) == len(PROMPT) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    )
    want = hf_logprobs[model]
    for i in range(1, len(PROMPT)):
        assert lp.token_logprobs[i] == pytest.approx(float(want[i - 1, PROMPT[i]]), abs=1e-4)
        top = lp.top_logprobs[i]
        assert len(top) <= 3 and max(top.values()) == pytest.approx(float(want[i - 1].max()), abs=1e-4)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    assert (
        r.choices[0].text
        == client.completions.create(model=model, prompt=PROMPT, max_tokens=0, echo=True).choices[0].text
    )


def test_local_completions_loglikelihood_request(client: Any, hf_logprobs: Any) -> None:
    """What lm-eval sends for loglikelihood: a batch of token lists, max_tokens 1, logprobs 1, echo."""
    batch = [PROMPT, PROMPT[:5]]
    r = client.completions.create(
        model="tiny", prompt=batch, temperature=0, max_tokens=1, logprobs=1, seed=1234, echo=True
    )
    want = hf_logprobs["tiny"]
    for choice, ids in zip(sorted(r.choices, key=lambda c: c.index), batch, strict=True):
        lp = choice.logprobs
        assert len(lp.token_logprobs) == len(ids) + 1  # every prompt token, then the generated one
        ctxlen = 2  # lm-eval sums token_logprobs[ctxlen:-1] and checks each against max(top_logprobs)
        total = sum(lp.token_logprobs[ctxlen:-1])
        assert total == pytest.approx(
            sum(float(want[i - 1, ids[i]]) for i in range(ctxlen, len(ids))), abs=1e-3
        )
        assert all(len(top) == 1 for top in lp.top_logprobs[1:])
        generated = lp.token_logprobs[-1]
        assert generated == pytest.approx(float(want[len(ids) - 1].max()), abs=1e-4)  # greedy pick
    assert r.usage.prompt_tokens == len(PROMPT) + 5 and r.usage.completion_tokens == 2


def test_streamed_logprobs_equal_the_whole_answer(client: Any) -> None:
    kw = {"model": "lora", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "logprobs": 2}
    whole = client.completions.create(**kw).choices[0].logprobs
    tokens, lps = [], []
    for chunk in client.completions.create(stream=True, **kw):
        if chunk.choices and chunk.choices[0].logprobs:
            tokens += chunk.choices[0].logprobs.tokens
            lps += chunk.choices[0].logprobs.token_logprobs
    assert tokens == whole.tokens and lps == pytest.approx(whole.token_logprobs)


def test_chat_logprobs(client: Any) -> None:
    messages = [{"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(
        model="dora", messages=messages, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 5 and all(len(c.top_logprobs) == 2 for c in content)
    for c in content:  # greedy: the chosen token is the most likely one
        assert c.logprob == pytest.approx(c.top_logprobs[0].logprob) and c.bytes == list(c.token.encode())
    assert "".join(c.token for c in content) == r.choices[0].message.content

"""Exact-match evaluation: prompts cut where training's labels start, and batched left-padded greedy
generation giving the same answers as one prompt at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from owlkit.adapt.data import IGNORE, Conversation, Turn, encode
from owlkit.evaluate.exact import exact_match, prompt_ids
from owltest import STORIES, build_tiny_llama, need


def conv(user: str, answer: str, system: str | None = None) -> Conversation:
    turns = ((Turn("system", system),) if system else ()) + (Turn("user", user), Turn("assistant", answer))
    return Conversation(turns, where="test row")


@pytest.mark.parametrize("chat", [True, False])
def test_prompt_ends_where_the_trained_response_starts(tmp_path: Path, chat: bool) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(build_tiny_llama(tmp_path / "tiny"))
    template = tok.chat_template if chat else None
    for c in (conv("Say owl.", "The owl read."), conv("Say owl.", "The owl read.", system="Be brief.")):
        enc = encode(c, tok, template=template, max_len=10_000)
        prompt = prompt_ids(c, tok, template)
        assert enc.input_ids[: len(prompt)] == prompt
        assert all(lab == IGNORE for lab in enc.labels[: len(prompt)])
        assert enc.labels[len(prompt)] != IGNORE  # the first response token is trained


def test_batched_greedy_answers_equal_one_at_a_time() -> None:
    """Left padding must not change any answer: references made one prompt at a time all match."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = need(STORIES)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    users = ["Tell a story.", "Once upon a time", "Lily had a big red ball and", "Say hi.", "Tom", "Why?"]
    refs = []
    for user in users:
        ids = torch.tensor([prompt_ids(conv(user, "x"), tok, None)])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
        refs.append(tok.decode(out[0, ids.shape[1] :].tolist(), skip_special_tokens=True).strip())
    assert len(set(refs)) > 1
    convs = [conv(u, r) for u, r in zip(users, refs, strict=True)]
    result = exact_match(model, tok, convs, template=None, batch_size=4, max_tokens=12)
    assert (result.correct, result.n) == (6, 6), result.mismatches
    wrong = exact_match(model, tok, [conv(users[0], refs[0] + " and more")], template=None, max_tokens=12)
    assert wrong.correct == 0 and wrong.mismatches[0].expected == refs[0] + " and more"

"""Exact-match evaluation of a model on held-out instruction data, greedy and batched.

Each example's prompt is its conversation up to the last assistant turn, tokenised exactly as ``owl tune``
tokenises it for training (:func:`owlkit.adapt.data.encode`: the same template, BOS and boundaries), so a
tuned model is asked in the form it learnt. The model answers greedily (:mod:`owlkit.evaluate.generation`)
and :func:`owlkit.metrics.exact.score_exact` compares the answers with the reference responses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from owlkit.adapt.data import IGNORE, Conversation, encode
from owlkit.errors import UsageError
from owlkit.evaluate.generation import greedy_batch
from owlkit.metrics.exact import ExactMatch, normalise, score_exact


def prompt_ids(conv: Conversation, tokenizer: Any, template: str | None) -> list[int]:
    """Token ids of ``conv`` up to where its last assistant response starts, as training encodes them."""
    enc = encode(conv, tokenizer, template=template, max_len=1 << 30)
    if enc is None:
        raise UsageError(f"{conv.where}: the template's rendering hides the response; try --template alpaca")
    end = len(enc.labels)
    while end and enc.labels[end - 1] == IGNORE:  # untrained tail (a newline after the end-of-turn)
        end -= 1
    start = end
    while start and enc.labels[start - 1] != IGNORE:
        start -= 1
    return enc.input_ids[:start]


def exact_match(
    model: Any,
    tokenizer: Any,
    convs: Sequence[Conversation],
    *,
    template: str | None,
    batch_size: int = 32,
    max_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExactMatch:
    """Greedy answers to ``convs`` compared with their last assistant turns. ``max_tokens`` defaults to
    the longest reference's token count plus 8 (an answer longer than that cannot match anyway).
    ``progress(n)`` is called with the number of answers each batch adds."""
    import torch

    from owlkit.adapt.train import pad_token_id
    from owlkit.runtime.generate import eos_ids

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be >= 1")
    prompts = [prompt_ids(c, tokenizer, template) for c in convs]
    answers = [normalise(c.turns[-1].content) for c in convs]
    if max_tokens is None:
        max_tokens = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers) + 8
    pad = pad_token_id(tokenizer)
    eos = sorted(eos_ids(model, tokenizer))
    got: list[str] = [""] * len(convs)
    order = sorted(range(len(convs)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    model.eval()
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = [prompts[i] for i in idx]
            for i, new in zip(idx, greedy_batch(model, batch, pad, eos, max_tokens), strict=True):
                got[i] = tokenizer.decode(new, skip_special_tokens=True)
            if progress is not None:
                progress(len(idx))
    asked = [c.turns[-2].content if len(c.turns) > 1 else "" for c in convs]  # the last user turn
    return score_exact(got, answers, asked)

"""Exact-match evaluation of a model on held-out instruction data, greedy and batched.

Each example's prompt is its conversation up to the last assistant turn, tokenised exactly as ``owl tune``
tokenises it for training (:func:`owlkit.adapt.data.encode`: the same template, BOS and boundaries), so a
tuned model is asked in the form it learnt. The model answers greedily; the answer matches when its text
(special tokens dropped, surrounding whitespace stripped) equals the reference response, stripped.

Generation runs in batches of prompts of similar length, left-padded, through ``model.generate`` with its
KV cache: one prompt at a time costs about 1.5 s per short answer on two CPU cores for a 135M model, a
batch of 32 costs a few seconds for all of them. The confidence interval is Wilson's score interval, which
stays inside [0, 1] and is sound at 0% and 100%, where the normal approximation collapses to a point.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from owlkit.adapt.data import IGNORE, Conversation, encode
from owlkit.errors import UsageError

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
_SAMPLES = 3  # mismatches kept for the report


@dataclass
class ExactMatch:
    n: int
    correct: int
    low: float
    high: float
    seconds: float
    mismatches: list[dict[str, str]] = field(default_factory=list)
    """The first few misses: prompt (the last user turn), expected and got."""

    @property
    def rate(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "exact_match": self.rate,
            "ci95": [self.low, self.high],
            "seconds": self.seconds,
            "mismatches": self.mismatches,
        }

    def summary(self) -> str:
        return (
            f"exact match {self.correct}/{self.n} = {self.rate:.1%} "
            f"(95% CI {self.low:.1%} to {self.high:.1%})"
        )


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At k = 0 (k = n) the bound is exactly 0 (1); rounding would leave it a hair off.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


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


def _shared_prefix(prompts: list[list[int]]) -> int:
    """Length of the token prefix all prompts share, leaving each at least one token of its own."""
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for k in range(max(n, 0)):
        if any(p[k] != first[k] for p in prompts):
            return k
    return max(n, 0)


def _generate(
    model: Any, prompts: list[list[int]], pad: int, eos: list[int], max_tokens: int
) -> list[list[int]]:
    """Greedy continuations of a batch of prompts (lists of new token ids, EOS dropped).

    Prompts of one task share a long prefix (system prompt, instruction), so it runs once: its KV cache
    is computed for one row and repeated for the batch, and each row is ``prefix + padding + own
    suffix`` with the padding masked out (positions come from the mask, so the suffix continues the
    prefix's positions)."""
    import torch

    k = _shared_prefix(prompts)
    width = max(len(p) for p in prompts) - k
    ids = torch.tensor([p[:k] + [pad] * (width - len(p) + k) + p[k:] for p in prompts])
    mask = torch.tensor([[1] * k + [0] * (width - len(p) + k) + [1] * (len(p) - k) for p in prompts])
    extra: dict[str, Any] = {}
    if k:
        cache = model(input_ids=ids[:1, :k], use_cache=True).cache
        cache.batch_repeat_interleave(len(prompts))
        extra["cache"] = cache
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=max_tokens,
        do_sample=False,
        eos_token_id=eos or None,
        pad_token_id=pad,
        **extra,
    )
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((j for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


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
    the longest reference's token count plus 8 (an answer longer than that cannot match anyway)."""
    import torch

    from owlkit.adapt.train import pad_token_id
    from owlkit.runtime.generate import eos_ids

    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be >= 1")
    started = time.perf_counter()
    prompts = [prompt_ids(c, tokenizer, template) for c in convs]
    answers = [c.turns[-1].content.strip() for c in convs]
    if max_tokens is None:
        max_tokens = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers) + 8
    pad = pad_token_id(tokenizer)
    eos = sorted(eos_ids(model, tokenizer))
    got: list[str] = [""] * len(convs)
    order = sorted(range(len(convs)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    model.eval()
    done = 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = [prompts[i] for i in idx]
            for i, new in zip(idx, _generate(model, batch, pad, eos, max_tokens), strict=True):
                got[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
            done += len(idx)
            if progress is not None:
                progress(done)
    correct = [g == a for g, a in zip(got, answers, strict=True)]
    k = sum(correct)
    low, high = wilson_interval(k, len(convs))
    misses = [
        {
            "prompt": convs[i].turns[-2].content if len(convs[i].turns) > 1 else "",
            "expected": answers[i],
            "got": got[i],
        }
        for i, ok in enumerate(correct)
        if not ok
    ][:_SAMPLES]
    return ExactMatch(len(convs), k, low, high, time.perf_counter() - started, misses)

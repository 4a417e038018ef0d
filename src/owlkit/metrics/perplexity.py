"""Perplexity over token windows, defined as transformers' ``labels=input_ids`` loss defines it.

A text's token ids are cut into consecutive non-overlapping windows of one length (:func:`windows`).
Each window is a fresh context with nothing added (no BOS), and every position but the last is scored
against the next token: exactly the positions transformers' loss averages, so the perplexity is ``exp``
of that loss. (llama.cpp's perplexity tool scores only the second half of each window.) The quantization
drift report and the evaluation of a text's perplexity share these windows.

Log-probabilities are float64 and computed on blocks of :data:`ROWS` rows of a window's logits
(:func:`row_blocks`): 64 rows of a 49,152-token vocabulary are 25 MB, a whole 512-token window 200 MB.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from owlkit.errors import UsageError

if TYPE_CHECKING:
    import numpy as np

ROWS = 64


def windows(token_ids: Sequence[int], size: int, limit: int) -> list[list[int]]:
    """Consecutive non-overlapping windows of ``size`` tokens, at most ``limit`` tokens in all.

    A short tail is dropped, so every window has the same length (the mean of the windows' mean losses
    is then the mean over all positions); a text shorter than one window gives one shorter window.
    """
    if size < 2:
        raise UsageError(f"evaluation window of {size} tokens: a window needs at least 2 tokens")
    if limit < 2:
        raise UsageError(f"a limit of {limit} tokens: at least 2 are needed to score one prediction")
    n = min(len(token_ids), limit)
    if n < 2:
        raise UsageError(
            f"the text has {len(token_ids)} token(s); at least 2 are needed to score one prediction: "
            "pass a longer text"
        )
    ids = [int(i) for i in token_ids[:n]]
    if n < size:
        return [ids]
    return [ids[i : i + size] for i in range(0, n - size + 1, size)]


def next_token_labels(ids: Sequence[int], vocab: int) -> np.ndarray:
    """The scored labels of a window: every token after the first, each checked to be in the vocabulary."""
    import numpy as np

    labels = np.asarray(ids[1:], dtype=np.int64)
    bad = labels[(labels < 0) | (labels >= vocab)]
    if bad.size:
        raise UsageError(
            f"token id {int(bad[0])} is outside the vocabulary of {vocab}: "
            "tokenize the text with the model's own tokenizer"
        )
    return labels


def row_blocks(n: int, rows: int = ROWS) -> Iterator[slice]:
    """Slices of ``rows`` consecutive rows covering ``0..n``."""
    for a in range(0, n, rows):
        yield slice(a, min(a + rows, n))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities of ``[rows, vocab]`` logits, in float64."""
    import numpy as np

    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def perplexity(nll: float, positions: int) -> float:
    """``exp`` of the mean negative log-likelihood; inf where a hopeless model's mean would overflow."""
    mean = nll / positions
    return math.exp(mean) if mean < 709.0 else math.inf


@dataclass
class NllSum:
    """A running sum of negative log-likelihoods over scored positions, in float64."""

    nll: float = 0.0
    positions: int = 0

    def add(self, logprobs: np.ndarray, labels: np.ndarray) -> None:
        """Score a block: ``logprobs`` from :func:`log_softmax`, ``labels`` the next token of each row."""
        import numpy as np

        self.nll -= float(logprobs[np.arange(len(labels)), labels].sum())
        self.positions += len(labels)

    @property
    def perplexity(self) -> float:
        return perplexity(self.nll, self.positions)

"""What every generation loop shares, store-free: how tokens are picked (:class:`Sampling`) and how text is
rebuilt from token ids as they come (:class:`TextStream`). The reference loop (generate.py) and the
backends (owlkit.backends) both use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from owlkit.errors import UsageError


@dataclass
class Sampling:
    """How to pick tokens. temperature 0 is greedy; ``seed`` makes sampling repeatable."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: int | None = None  # None: no logprobs; k >= 0: each chosen token's logprob + top k
    echo_logprobs: bool = False  # also the prompt tokens' logprobs (the first one is None)

    def check(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens < 0:
            raise UsageError(f"max_tokens must be a whole number >= 0, not {self.max_tokens!r}")
        if not self.temperature >= 0:
            raise UsageError(f"temperature must be >= 0 (0 is greedy), not {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], not {self.top_p!r}")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise UsageError(f"logprobs must be between 0 and 20, not {self.logprobs!r}")


class TextStream:
    """Text of a growing list of token ids, yielded as new suffixes.

    Decoding each token alone would lose the leading space SentencePiece strips from the first token of
    a text and split multi-byte characters, so the ids are decoded behind a few tokens of context and
    a suffix ending in U+FFFD (half a character) is held back until it completes."""

    CONTEXT = 4

    def __init__(self, decode: Callable[[list[int]], str], context: list[int]) -> None:
        self._decode = decode
        self._context = context[-self.CONTEXT :]
        self._prefix = decode(self._context)
        self.ids: list[int] = []
        self.text = ""  # everything released so far

    def _full(self) -> str:
        full = self._decode(self._context + self.ids)
        return full[len(self._prefix) :] if full.startswith(self._prefix) else self._decode(self.ids)

    def push(self, ids: list[int]) -> str:
        """Add tokens; return the newly complete text (maybe empty)."""
        self.ids += ids
        new = self._full()
        if new.endswith("\ufffd") or len(new) <= len(self.text):
            return ""
        piece, self.text = new[len(self.text) :], new
        return piece

    def flush(self) -> str:
        new = self._full()
        piece, self.text = new[len(self.text) :], max(new, self.text, key=len)
        return piece

"""Exact match: an answer matches when its text, surrounding whitespace stripped, equals the reference's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from owlkit.metrics.intervals import wilson_interval

SAMPLES = 3  # mismatches kept for a report


@dataclass(frozen=True)
class Mismatch:
    prompt: str
    expected: str
    got: str


@dataclass(frozen=True)
class ExactMatch:
    """``correct`` of ``n`` answers matched; ``low``..``high`` is the 95% Wilson interval of the rate."""

    n: int
    correct: int
    low: float
    high: float
    mismatches: list[Mismatch] = field(default_factory=list)
    """The first few misses, in input order."""

    @property
    def rate(self) -> float:
        return self.correct / self.n if self.n else 0.0


def normalise(text: str) -> str:
    """The form answers are compared in."""
    return text.strip()


def score_exact(
    got: Sequence[str], expected: Sequence[str], prompts: Sequence[str], *, samples: int = SAMPLES
) -> ExactMatch:
    """Score answers ``got`` against references ``expected`` (``prompts`` only label the mismatches)."""
    if not len(got) == len(expected) == len(prompts):
        raise ValueError(f"{len(got)} answers, {len(expected)} references and {len(prompts)} prompts")
    pairs = [(normalise(g), normalise(e)) for g, e in zip(got, expected, strict=True)]
    misses = [Mismatch(p, e, g) for p, (g, e) in zip(prompts, pairs, strict=True) if g != e]
    k = len(pairs) - len(misses)
    low, high = wilson_interval(k, len(pairs))
    return ExactMatch(len(pairs), k, low, high, misses[:samples])

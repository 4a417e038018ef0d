"""What `Owl.eval` returns (a module of its own: `owl ls` does not pay for defining it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from owlkit.api.results import Result
from owlkit.metrics.exact import Mismatch


@dataclass
class EvalResult(Result):
    """`owl eval --json`: ``correct`` of ``n`` greedy answers matched exactly (rate ``exact_match``,
    95% Wilson interval ``ci95``) by ``model`` on ``data``'s ``split``, prompted in ``template``
    wording; ``seconds`` of generation, the first few ``mismatches``, and the run's ``warnings`` (an
    adapter on another base) and ``notes`` (a model without a chat template asked in Alpaca wording)."""

    model: str
    data: str
    split: str
    template: str
    n: int
    correct: int
    exact_match: float
    ci95: tuple[float, float]
    seconds: float
    mismatches: list[Mismatch] = field(default_factory=list)
    """Each with the prompt (the last user turn), the expected answer and the one ``got``."""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci95": list(self.ci95)}  # JSON has lists

"""How far a model's next-token distributions drift from a source model's over the same windows.

The numbers are those llama.cpp's ``perplexity --kl-divergence`` reports: the perplexity of the source and
of the target, the mean (and 99th percentile, and maximum) KL divergence of the target's next-token
distribution from the source's, and how often both models' most likely next token agree. Positions and
windows are :mod:`owlkit.metrics.perplexity`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from owlkit.errors import Refused
from owlkit.metrics.perplexity import NllSum, log_softmax, next_token_labels, row_blocks

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Drift:
    """One target model's drift from the source over the same evaluation windows."""

    runtime: str
    tokens: int
    """Scored positions: each window's length minus one, summed."""
    chunks: int
    chunk_size: int
    ppl_source: float
    ppl: float
    ppl_ratio: float
    kl_mean: float
    """Mean over positions of KL(source || target) in nats."""
    kl_p99: float
    kl_max: float
    top1: float
    """Fraction (0..1) of positions where both models' most likely next token is the same."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kl_rows(logp: np.ndarray, logq: np.ndarray, p: np.ndarray | None = None) -> np.ndarray:
    """KL(p || q) in nats for each row of log-probabilities (``p``: ``exp(logp)``, when already at hand)."""
    import numpy as np

    return ((np.exp(logp) if p is None else p) * (logp - logq)).sum(axis=1)


@dataclass
class _Tally:
    nll: NllSum = field(default_factory=NllSum)
    agree: int = 0
    kl: list[np.ndarray] = field(default_factory=list)


class DriftMeter:
    """Running drift of named targets from a source, fed one window's logits at a time.

    Each window's source logits are turned into log-probabilities once per block of rows and compared
    with every target's, so a caller needs only one window's logits per model alive at a time.
    """

    def __init__(self, targets: Iterable[str]) -> None:
        self.source = NllSum()
        self.windows = 0
        self.longest = 0
        self._tallies = {name: _Tally() for name in targets}

    def add(self, ids: Sequence[int], source: np.ndarray, targets: Mapping[str, np.ndarray]) -> None:
        """One window: its token ids and each model's float ``[len(ids), vocab]`` logits for them.
        Refused when a target's vocabulary differs from the source's."""
        import numpy as np

        vocab = source.shape[1]
        labels = next_token_labels(ids, vocab)
        for name, out in targets.items():
            if out.shape[1] != vocab:
                raise Refused(
                    f"{name}: vocabulary of {out.shape[1]} tokens, the source has {vocab}; "
                    "drift needs the same tokenizer on both"
                )
        for rows in row_blocks(len(labels)):  # the last position has no next token to score
            lab = labels[rows]
            lp_src = log_softmax(source[rows])
            p_src, top_src = np.exp(lp_src), source[rows].argmax(axis=1)
            self.source.add(lp_src, lab)
            for name, out in targets.items():
                t = self._tallies[name]
                lp = log_softmax(out[rows])
                t.nll.add(lp, lab)
                t.kl.append(kl_rows(lp_src, lp, p_src))
                t.agree += int((out[rows].argmax(axis=1) == top_src).sum())
        self.windows += 1
        self.longest = max(self.longest, len(ids))

    def results(self, runtimes: Mapping[str, str]) -> dict[str, Drift]:
        """One :class:`Drift` per target, ``runtimes`` naming what scored each."""
        import numpy as np

        ppl_source = self.source.perplexity
        out: dict[str, Drift] = {}
        for name, t in self._tallies.items():
            kl = np.concatenate(t.kl)
            positions = t.nll.positions
            out[name] = Drift(
                runtime=runtimes[name],
                tokens=positions,
                chunks=self.windows,
                chunk_size=self.longest,
                ppl_source=ppl_source,
                ppl=t.nll.perplexity,
                ppl_ratio=t.nll.perplexity / ppl_source,
                kl_mean=float(kl.mean()),
                kl_p99=float(np.percentile(kl, 99)),
                kl_max=float(kl.max()),
                top1=t.agree / positions,
            )
        return out

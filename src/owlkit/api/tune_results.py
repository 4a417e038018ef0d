"""What the training commands return: `TuneResult` (`owl tune`), `DemoDataResult` (`owl data demo`) and
`DriftReport` (`owl quantize`), each ``to_dict()`` being the command's ``--json``. `owl merge` and
`owl merge-adapters` return `owlkit.api.results.Stored`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from owlkit.api.results import Result


@dataclass
class _Made(Result):
    """An artifact a command made: its digest and names."""

    digest: str
    names: list[str]

    @property
    def name(self) -> str:
        """The first name, or the short digest when it has none."""
        return self.names[0] if self.names else self.digest.removeprefix("sha256:")[:12]


@dataclass
class TuneResult(_Made):
    """`owl tune --json`: the stored adapter (or full fine-tune) and its training record as stored (the
    per-step ``log``, the ``data`` report, eval losses, tokens/s, threads, ``notes`` on what the run did
    differently from what was asked). The properties read the record's main figures."""

    training: dict[str, Any]

    @property
    def steps(self) -> int | None:
        return self.training.get("steps")

    @property
    def tokens_per_s(self) -> float:
        return float(self.training.get("tokens_per_s") or 0.0)

    @property
    def initial_eval_loss(self) -> float | None:
        """Eval loss of the untrained model (None without ``eval_split``)."""
        return self.training.get("initial_eval_loss")

    @property
    def final_eval_loss(self) -> float | None:
        return self.training.get("final_eval_loss")

    @property
    def notes(self) -> list[str]:
        return list(self.training.get("notes") or [])

    @property
    def log(self) -> list[dict[str, Any]]:
        """One entry per optimizer step: step, loss, lr, tokens (cumulative), eval_loss when evaluated."""
        return list(self.training.get("log") or [])


@dataclass
class DemoDataResult(_Made):
    """`owl data demo --json`: the stored dataset, its row counts and the generator seed."""

    train: int
    heldout: int
    seed: int


@dataclass
class DriftRow(Result):
    """One row of the drift table: a quantized variant's size and its drift from the source. The
    measured figures are None when the drift was not measured (``--no-eval``, or a GGUF LoRA)."""

    artifact: str
    size_bytes: int | None
    bits_per_weight: float | None
    runtime: str | None
    """The engine that scored both models, e.g. "torch 2.13.0+cpu" (None: not measured)."""
    ppl_source: float | None
    ppl: float | None
    kl_mean: float | None
    """Mean KL(source || variant) per token, in nats."""
    top1: float | None
    """Share of positions where both models' most likely next token agree."""

    @classmethod
    def of(cls, name: str, export: dict[str, Any], quality: dict[str, Any] | None) -> DriftRow:
        """The row of an artifact from its stored ``quantize.export`` and ``quality`` records."""
        q = quality or {}
        return cls(
            artifact=name,
            size_bytes=q.get("size_bytes") or export.get("file_bytes"),
            bits_per_weight=export.get("bits_per_weight"),
            runtime=q.get("runtime"),
            ppl_source=q.get("ppl_source"),
            ppl=q.get("ppl"),
            kl_mean=q.get("kl_mean"),
            top1=q.get("top1"),
        )


@dataclass
class QuantizedVariant(Result):
    """One ``--to`` target of `owl quantize`: the stored artifact, what the export wrote (``export``:
    type, sizes, bits/weight), its drift from the source (``quality``: None when not measured) and
    notes."""

    target: str
    digest: str
    name: str
    export: dict[str, Any]
    quality: dict[str, Any] | None
    notes: list[str]

    @property
    def drift(self) -> DriftRow:
        return DriftRow.of(self.name, self.export, self.quality)


@dataclass
class DriftReport(Result):
    """`owl quantize`: one variant per target, in ``--to`` order; iterate it, index it, or read
    ``rows`` for the drift table. ``to_dict()`` is the ``--json`` list, one object per variant."""

    variants: list[QuantizedVariant]

    def __iter__(self) -> Iterator[QuantizedVariant]:
        return iter(self.variants)

    def __len__(self) -> int:
        return len(self.variants)

    def __getitem__(self, i: int) -> QuantizedVariant:
        return self.variants[i]

    @property
    def rows(self) -> list[DriftRow]:
        return [v.drift for v in self.variants]

    @property
    def has_figures(self) -> bool:
        """Whether there is anything to tabulate: a measured drift or a bits/weight figure."""
        return any(v.quality or v.export.get("bits_per_weight") for v in self.variants)

    def to_dict(self) -> list[dict[str, Any]]:  # type: ignore[override]
        # `owl quantize --json` has always printed a list (one object per target); scripts index it
        return [v.to_dict() for v in self.variants]

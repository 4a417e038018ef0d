"""One evaluation of a stored model or adapter on a stored dataset's split: what `owl eval` runs.

The prompt template defaults to the one the adapter was trained with (a tune recipe names it; none means
chat), and falls back to the Alpaca wording, with a note, for a model that has no chat template.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from owlkit.adapt.data import load_examples
from owlkit.errors import Refused, UsageError
from owlkit.evaluate.exact import exact_match
from owlkit.metrics.exact import ExactMatch
from owlkit.recipes.loading import load_for_inference
from owlkit.recipes.tune import TRAINABLE_DATA
from owlkit.store.store import Record, Store

TEMPLATES = ("alpaca", "chat")

Stages = Callable[[str, int], Callable[[int], None] | None]
"""``stage(description, total)`` -> an ``advance(n)`` callback (or None): how a caller watches each stage
(loading the model: 1 item; generating: one item per answer)."""


@dataclass(frozen=True)
class ExactRun:
    """An exact-match evaluation: what was asked, the score, and what the run had to say."""

    model: str
    data: str
    split: str
    template: str
    """The wording the prompts used: alpaca or chat."""
    score: ExactMatch
    seconds: float
    """Prompt encoding and generation, the model's loading left out."""
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def trained_template(rec: Record) -> str:
    """The template an adapter was tuned with (its recipe names it, None meaning chat), else chat."""
    recipe = rec.manifest.recipe
    trained = recipe.params.get("template") if recipe is not None and recipe.name == "tune" else None
    return "alpaca" if trained == "alpaca" else "chat"


def check_template(template: str | None) -> None:
    if template not in (None, *TEMPLATES):
        raise UsageError(f"--template {template!r}: use alpaca or chat")


def _stage(stages: Stages | None, description: str, total: int) -> Callable[[int], None] | None:
    return stages(description, total) if stages is not None else None


def run_exact(
    store: Store,
    rec: Record,
    dataset: Record,
    *,
    split: str = "test",
    template: str | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    max_tokens: int | None = None,
    base: Record | None = None,
    stages: Stages | None = None,
) -> ExactRun:
    """Greedy exact match of ``rec`` (a model, or an adapter on its base or on ``base``) on the first
    ``limit`` rows of ``dataset``'s ``split``."""
    check_template(template)
    fmt = dataset.facts.data_format
    if fmt not in TRAINABLE_DATA:
        raise Refused(
            f"{dataset.name} is {fmt or 'an unknown'} data; owl eval reads {', '.join(TRAINABLE_DATA)} rows"
        )
    convs, _ = load_examples(store.checkout(dataset.digest), fmt, split=split)
    convs = convs[:limit] if limit else convs
    template = template or trained_template(rec)
    loaded = _stage(stages, f"loading {rec.name}", 1)
    model, tok, warnings = load_for_inference(store, rec, base=base)
    if loaded is not None:
        loaded(1)
    notes: list[str] = []
    chat_template = tok.chat_template if template == "chat" else None
    if template == "chat" and not chat_template:
        template = "alpaca"
        notes.append(f"{rec.name} has no chat template; prompts use the Alpaca wording")
    started = time.perf_counter()
    score = exact_match(
        model,
        tok,
        convs,
        template=chat_template,
        batch_size=batch_size,
        max_tokens=max_tokens,
        progress=_stage(stages, f"generating {len(convs)} answers", len(convs)),
    )
    seconds = time.perf_counter() - started
    return ExactRun(rec.name, dataset.name, split, template, score, seconds, warnings, notes)

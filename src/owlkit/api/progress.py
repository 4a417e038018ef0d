"""Progress reporting for long work: the API calls one callback with events; front ends draw them.

A script passes nothing (no output) or any callable; the CLI passes a Rich renderer
(`cli/render.progress_bars`). One event shape for every command keeps that renderer the only one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` units of ``stage`` (``unit`` is "bytes", "steps" or "items"; ``total`` is
    None while unknown). ``info`` carries the stage's own figures (training: loss, tokens_per_s)."""

    stage: str
    done: float
    total: float | None
    unit: str = "items"
    info: dict[str, Any] = field(default_factory=dict)


Progress = Callable[[ProgressEvent], None]


def counter(
    progress: Progress | None, stage: str, total: float | None, unit: str
) -> Callable[[float], None] | None:
    """An ``advance(n)`` callback for engines that count (bytes copied, rows judged), reporting the
    running total as events; None when nobody listens (engines then skip their bookkeeping)."""
    if progress is None:
        return None
    done = 0.0
    progress(ProgressEvent(stage, 0, total, unit))

    def advance(n: float) -> None:
        nonlocal done
        done += n
        progress(ProgressEvent(stage, done, total, unit))

    return advance

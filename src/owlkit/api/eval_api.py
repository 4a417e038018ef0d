"""The evaluation command: `owl eval` (greedy exact match on held-out instruction data)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from owlkit.api.base import ApiBase, Input, Ref, input_str
from owlkit.api.progress import Progress, counter

if TYPE_CHECKING:
    from owlkit.api.eval_results import EvalResult


class EvalApi(ApiBase):
    def eval(
        self,
        ref: Ref,
        data: Input,
        *,
        split: str = "test",
        template: str | None = None,
        limit: int | None = None,
        batch_size: int = 64,
        max_tokens: int | None = None,
        base: Ref | None = None,
        progress: Progress | None = None,
    ) -> EvalResult:
        """Greedy exact match of the model or adapter ``ref`` on the ``split`` (test, validation or
        train: files named so) of the instruction dataset ``data`` (a path is imported first), its first
        ``limit`` examples, ``batch_size`` prompts generated together, answers capped at ``max_tokens``
        (default: the longest reference plus 8). ``template`` is alpaca or chat (default: as the adapter
        was trained, else chat); ``base`` runs an adapter on another model of the same base identity."""
        from owlkit.evaluate.runner import check_template, run_exact
        from owlkit.recipes.tune import resolve_input

        check_template(template)  # before a data path is imported
        with self._store(write=True) as store:  # checkouts are written into the store
            rec = self._record(store, ref)
            dataset = resolve_input(store, input_str(data), "dataset")
            run = run_exact(
                store,
                rec,
                dataset,
                split=split,
                template=template,
                limit=limit,
                batch_size=batch_size,
                max_tokens=max_tokens,
                base=self._record(store, base) if base is not None else None,
                stages=lambda stage, total: counter(progress, stage, total, "items"),
            )
        s = run.score
        from owlkit.api.eval_results import EvalResult

        return EvalResult(
            model=run.model,
            data=run.data,
            split=run.split,
            template=run.template,
            n=s.n,
            correct=s.correct,
            exact_match=s.rate,
            ci95=(s.low, s.high),
            seconds=run.seconds,
            mismatches=list(s.mismatches),
            warnings=run.warnings,
            notes=run.notes,
        )

"""The reproducibility commands: rebuild and diff (their results: `owlkit.api.recipe_results`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from owlkit.api.base import ApiBase, Ref, ref_str
from owlkit.api.progress import Progress, ProgressEvent, counter

if TYPE_CHECKING:
    from owlkit.api.recipe_results import DiffReport, RebuildResult


class RecipeApi(ApiBase):
    def rebuild(
        self,
        ref: Ref,
        *,
        keep: bool = False,
        threads: int | None = None,
        progress: Progress | None = None,
    ) -> RebuildResult:
        """Re-run a derived artifact's recorded recipe in a fresh process and compare the result with it,
        file by file (and tensor by tensor for the first differing weights file). ``keep`` stores a
        rebuild that differs (named NAME-rebuild); ``threads`` runs with that many threads instead of
        the recorded count. A report, not an error, when it differs: see ``verdict``."""
        from owlkit.api.recipe_results import RebuildResult
        from owlkit.recipes.rebuild import rebuild

        stage = f"rebuilding {ref_str(ref)}"
        if progress is not None:
            progress(ProgressEvent(stage, 0, None, "steps"))
        # written to: the recipe checks out its inputs and works in the store's scratch space
        with self._store(write=True) as store:
            report = rebuild(store, ref_str(ref), keep=keep, threads=threads)
        if progress is not None:
            progress(ProgressEvent(stage, 1, 1, "steps"))
        return RebuildResult(**vars(report))

    def diff(self, a: Ref, b: Ref, *, progress: Progress | None = None) -> DiffReport:
        """What differs between artifacts A and B: files, tensors (shape, dtype, max and mean abs
        difference, per layer), config and card metadata, facts, license, recipe and lineage."""
        from owlkit.api.recipe_results import DiffReport
        from owlkit.recipes.diff import diff_artifacts

        a, b = ref_str(a), ref_str(b)
        with self._store() as store:
            advance = counter(progress, f"comparing {a} with {b}", None, "items")
            return DiffReport(**vars(diff_artifacts(store, a, b, advance=advance)))

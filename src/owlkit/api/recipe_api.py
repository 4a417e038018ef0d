"""The reproducibility commands: rebuild and diff.

The reports are the recipes layer's own dataclasses (``owlkit.recipes.rebuild.RebuildReport``,
``owlkit.recipes.diff.ArtifactDiff``, with typed sections); the API returns them as `RebuildResult` and
`DiffReport`, whose ``to_dict()`` is what ``owl rebuild --json`` and ``owl diff --json`` print.
"""

from __future__ import annotations

from owlkit.api.base import ApiBase, Ref, ref_str
from owlkit.api.progress import Progress, ProgressEvent, counter
from owlkit.api.results import Result
from owlkit.recipes.diff import (
    ArtifactDiff,
    DiffSide,
    FileSection,
    KeyDiff,
    LineageSection,
    ParentRef,
    RecipeSection,
    TensorSection,
)
from owlkit.recipes.rebuild import FirstDifference, RebuildReport

# The sections of the reports, for annotations: part of the API like the reports themselves.
__all__ = [
    "DiffReport",
    "DiffSide",
    "FileSection",
    "FirstDifference",
    "KeyDiff",
    "LineageSection",
    "ParentRef",
    "RebuildResult",
    "RecipeApi",
    "RecipeSection",
    "TensorSection",
]


class RebuildResult(RebuildReport, Result):
    """`owl rebuild --json`: ``verdict`` (identical, different, different (environment differs)),
    ``exit_code`` (0, 11, 10), each file's status, the first difference, the environment facts that
    differ from the recorded run. ``identical`` says whether the rebuild reproduced the artifact."""


class DiffReport(ArtifactDiff, Result):
    """`owl diff --json`: files, tensors (per tensor and per layer), config and card keys, manifest,
    facts, recipe and lineage of A against B; ``identical`` when they are the same artifact."""


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
        from owlkit.recipes.diff import diff_artifacts

        a, b = ref_str(a), ref_str(b)
        with self._store() as store:
            advance = counter(progress, f"comparing {a} with {b}", None, "items")
            return DiffReport(**vars(diff_artifacts(store, a, b, advance=advance)))

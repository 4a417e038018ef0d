"""What `Owl.rebuild` and `Owl.diff` return.

The reports are the recipes layer's own dataclasses (``owlkit.recipes.rebuild.RebuildReport``,
``owlkit.recipes.diff.ArtifactDiff``, with typed sections); the API returns them as `RebuildResult` and
`DiffReport`, whose ``to_dict()`` is what ``owl rebuild --json`` and ``owl diff --json`` print.
"""

from __future__ import annotations

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

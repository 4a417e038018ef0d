"""owlkit's public Python API: ``from owlkit import Owl``.

The layer between the store-bound domain code (recipes, backends) and the front ends (cli, serve, the
demo): every front end calls this, and it returns typed results (`owlkit.api.results`).
"""

from owlkit.api.eval_api import EvalResult
from owlkit.api.model_api import Conversation, Serving
from owlkit.api.model_results import ChatResult, Loaded, RunResult, ServedModel, TextDelta, Timings, Usage
from owlkit.api.owl import Owl
from owlkit.api.progress import Progress, ProgressEvent
from owlkit.api.recipe_api import DiffReport, RebuildResult
from owlkit.api.results import Artifact, ArtifactDetail, GcResult, Imported, Removed, Stored, VerifyReport
from owlkit.api.terms_results import (
    Attached,
    Detached,
    LicenseDetail,
    LicenseSummary,
    OpennessReport,
    UseVerdict,
    Verdict,
)
from owlkit.api.tune_results import DemoDataResult, DriftReport, DriftRow, QuantizedVariant, TuneResult
from owlkit.offline import quiet_library_logs

__all__ = [
    "Artifact",
    "ArtifactDetail",
    "Attached",
    "ChatResult",
    "Conversation",
    "DemoDataResult",
    "Detached",
    "DiffReport",
    "DriftReport",
    "DriftRow",
    "EvalResult",
    "GcResult",
    "Imported",
    "LicenseDetail",
    "LicenseSummary",
    "Loaded",
    "OpennessReport",
    "Owl",
    "Progress",
    "ProgressEvent",
    "QuantizedVariant",
    "RebuildResult",
    "Removed",
    "RunResult",
    "ServedModel",
    "Serving",
    "Stored",
    "TextDelta",
    "Timings",
    "TuneResult",
    "Usage",
    "UseVerdict",
    "Verdict",
    "VerifyReport",
    "quiet_library_logs",
]

"""owlkit's public Python API: ``from owlkit import Owl``.

The layer between the store-bound domain code (recipes, backends) and the front ends (cli, serve, the
demo): every front end calls this, and it returns typed results (`owlkit.api.results`).
"""

from typing import TYPE_CHECKING, Any

# Each name from the module that defines it, imported on first use: `owl ls` should not pay for every
# command group's result types (about 40 ms), and `from owlkit.api import X` works the same.
_WHERE = {
    "Artifact": "owlkit.api.results",
    "ArtifactDetail": "owlkit.api.results",
    "Attached": "owlkit.api.terms_results",
    "ChatResult": "owlkit.api.model_results",
    "Conversation": "owlkit.api.model_api",
    "DemoDataResult": "owlkit.api.tune_results",
    "Detached": "owlkit.api.terms_results",
    "DiffReport": "owlkit.api.recipe_results",
    "DriftReport": "owlkit.api.tune_results",
    "DriftRow": "owlkit.api.tune_results",
    "EvalResult": "owlkit.api.eval_results",
    "GcResult": "owlkit.api.results",
    "Imported": "owlkit.api.results",
    "LicenseDetail": "owlkit.api.terms_results",
    "LicenseSummary": "owlkit.api.terms_results",
    "Loaded": "owlkit.api.model_results",
    "OpennessReport": "owlkit.api.terms_results",
    "Owl": "owlkit.api.owl",
    "Progress": "owlkit.api.progress",
    "ProgressEvent": "owlkit.api.progress",
    "QuantizedVariant": "owlkit.api.tune_results",
    "RebuildResult": "owlkit.api.recipe_results",
    "Removed": "owlkit.api.results",
    "RunResult": "owlkit.api.model_results",
    "ScanReport": "owlkit.api.results",
    "ScannedFile": "owlkit.api.results",
    "ServedModel": "owlkit.api.model_results",
    "Serving": "owlkit.api.model_api",
    "Stored": "owlkit.api.results",
    "TextDelta": "owlkit.api.model_results",
    "Timings": "owlkit.api.model_results",
    "TuneResult": "owlkit.api.tune_results",
    "Usage": "owlkit.api.model_results",
    "UseVerdict": "owlkit.api.terms_results",
    "Verdict": "owlkit.api.terms_results",
    "VerifyReport": "owlkit.api.results",
    "quiet_library_logs": "owlkit.offline",
}

if TYPE_CHECKING:
    from owlkit.api.eval_results import EvalResult
    from owlkit.api.model_api import Conversation, Serving
    from owlkit.api.model_results import ChatResult, Loaded, RunResult, ServedModel, TextDelta, Timings, Usage
    from owlkit.api.owl import Owl
    from owlkit.api.progress import Progress, ProgressEvent
    from owlkit.api.recipe_results import DiffReport, RebuildResult
    from owlkit.api.results import (
        Artifact,
        ArtifactDetail,
        GcResult,
        Imported,
        Removed,
        ScannedFile,
        ScanReport,
        Stored,
        VerifyReport,
    )
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'owlkit.api' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "ScanReport",
    "ScannedFile",
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

"""owlkit's public Python API: ``from owlkit import Owl``.

The layer between the store-bound domain code (recipes, backends) and the front ends (cli, serve, the
demo): every front end calls this, and it returns typed results (`owlkit.api.results`).
"""

from owlkit.api.owl import Owl
from owlkit.api.progress import Progress, ProgressEvent
from owlkit.api.results import Artifact, ArtifactDetail, GcResult, Imported, Removed, Stored, VerifyReport
from owlkit.offline import quiet_library_logs

__all__ = [
    "Artifact",
    "ArtifactDetail",
    "GcResult",
    "Imported",
    "Owl",
    "Progress",
    "ProgressEvent",
    "Removed",
    "Stored",
    "VerifyReport",
    "quiet_library_logs",
]

"""What the API returns: typed dataclasses whose ``to_dict()`` is exactly what ``owl ... --json`` prints.

Field names are the JSON keys; ``to_dict()`` is ``dataclasses.asdict`` unless a class says otherwise
(optional sections that the JSON leaves out when empty).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class Result:
    """Base of every API result: ``to_dict()`` gives the JSON form."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]


@dataclass
class Artifact(Result):
    """One stored artifact, as `owl ls --json` lists it. Every API method taking a ref takes this too."""

    digest: str
    names: list[str]
    kind: str
    format: str
    architecture: str | None
    parameters: int | None
    dtype: str | None
    quantization: str | None
    license: str
    size: int
    created_at: float

    @property
    def name(self) -> str:
        """The first name, or the short digest when it has none."""
        return self.names[0] if self.names else self.short

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    def __str__(self) -> str:
        return self.digest


@dataclass
class FileInfo(Result):
    path: str
    size: int
    sha256: str


@dataclass
class LineageEdge(Result):
    relation: str
    digest: str | None
    name: str | None
    unresolved: str | None = None  # the upstream name when the parent is not in the store


@dataclass
class ArtifactDetail(Artifact):
    """`owl show --json`: the artifact with its facts, files, lineage and recipe."""

    facts: dict[str, Any] = field(default_factory=dict)
    license_detail: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Any] = field(default_factory=dict)
    files: list[FileInfo] = field(default_factory=list)
    parents: list[LineageEdge] = field(default_factory=list)
    children: list[LineageEdge] = field(default_factory=list)
    recipe: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    training: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    quantize: dict[str, Any] | None = None
    descends_from_quantized: Any = None
    base_identity: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for e in d["children"]:
            e.pop("unresolved")
        # sections only some artifacts have are left out rather than null
        for key in ("training", "quality", "quantize", "descends_from_quantized", "base_identity"):
            if not d[key]:
                del d[key]
        return d


@dataclass
class Imported(Result):
    """`owl import --json`."""

    artifact: Artifact
    name: str
    converted_from: str | None = None
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def digest(self) -> str:
        return self.artifact.digest

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.artifact.to_dict(),
            "name": self.name,
            "converted_from": self.converted_from,
            "warnings": self.warnings,
            "flags": self.flags,
        }


@dataclass
class Stored(Result):
    """What a command that stores one artifact returns (`owl merge --json` and the like)."""

    digest: str
    names: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.names[0] if self.names else self.digest.removeprefix("sha256:")[:12]


@dataclass
class VerifyReport(Result):
    """`owl verify --json`: ``problems`` names each corrupt or missing file (empty when all is well)."""

    verified: int
    bytes: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class GcResult(Result):
    """`owl gc --json`. ``swept`` is False when another writer made gc leave blobs for a later run."""

    blobs_removed: int
    bytes_freed: int
    temp_removed: int
    checkouts_removed: int
    swept: bool


@dataclass
class Removed(Result):
    """`owl rm`: ``removed`` is False when only the name went (the artifact has other names)."""

    artifact: Artifact
    removed: bool
    remaining_names: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.artifact.digest,
            "removed": self.removed,
            "remaining_names": self.remaining_names,
        }


@dataclass
class ScannedFile(Result):
    """One file's verdict in `owl scan`: ``safe``, ``suspicious`` or ``dangerous``, with the reasons."""

    path: str
    kind: str
    verdict: str
    reasons: list[str]


@dataclass
class ScanReport(Result):
    """What `owl scan` found: every file's verdict and the worst of them. ``digest`` is set when a
    stored artifact was scanned, None for a path."""

    target: str
    digest: str | None
    verdict: str
    files: list[ScannedFile]

    @property
    def exit_code(self) -> int:
        """`owl scan`'s exit code: 0 all safe, 13 something suspicious, 14 something dangerous."""
        return {"safe": 0, "suspicious": 13, "dangerous": 14}[self.verdict]

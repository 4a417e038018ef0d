"""What the terms commands return: `LicenseSummary` and `LicenseDetail` (`owl licenses`), `Verdict`
(`owl terms`), `OpennessReport` (`owl openness`), `Attached` and `Detached` (`owl attach`), each
``to_dict()`` being the command's ``--json``.

The sections inside them are the terms layer's own dataclasses (a verdict's `UseVerdict`, `Step` and
`Source`; a report's `Finding`, `ClassCheck`, `OsaidVerdict`, `LayerSummary`), re-exported here for
annotations like the results themselves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from owlkit.api.results import Result
from owlkit.errors import UsageError
from owlkit.terms.kb import Clause, License
from owlkit.terms.openness.attachments import Attachment
from owlkit.terms.openness.components import Component, Rule
from owlkit.terms.openness.evidence import Match
from owlkit.terms.openness.report import ClassCheck, Finding, LayerSummary, OsaidVerdict
from owlkit.terms.openness.report import OpennessReport as _OpennessReport
from owlkit.terms.propagate import ALLOWED, OBLIGATIONS, Source, Step, UseVerdict

__all__ = [
    "Attached",
    "Attachment",
    "ClassCheck",
    "Clause",
    "Component",
    "Detached",
    "Finding",
    "LayerSummary",
    "LicenseDetail",
    "LicenseSummary",
    "Match",
    "OpennessReport",
    "OsaidVerdict",
    "Rule",
    "Source",
    "Step",
    "UseVerdict",
    "Verdict",
]


@dataclass
class LicenseSummary(Result):
    """One license of the knowledge base as `owl licenses --json` lists it: its commercial-use clause
    (value, the monthly-user threshold above which it changes, whether someone checked it against the
    license text) and how many of its clauses were checked."""

    id: str
    name: str
    family: str
    osi_approved: bool
    commercial_use: str
    mau_threshold: int | None
    verified_clauses: int
    clause_count: int
    commercial_use_verified: bool

    @classmethod
    def of(cls, lic: License) -> LicenseSummary:
        commercial = lic.clauses["commercial_use"]
        return cls(
            id=lic.id,
            name=lic.name,
            family=lic.family,
            osi_approved=lic.osi_approved,
            commercial_use=commercial.value,
            mau_threshold=commercial.mau_threshold,
            verified_clauses=lic.verified_count,
            clause_count=len(lic.clauses),
            commercial_use_verified=commercial.verified,
        )


class LicenseDetail(License, Result):
    """`owl licenses ID --json`: one license with every clause (`Clause`: value, the text and section it
    comes from, whether it was checked against that text), in the knowledge base's YAML shape."""


@dataclass
class Verdict(Result):
    """`owl terms --json`: what an artifact may be used for, through its lineage.

    ``verdicts`` holds one `UseVerdict` per use judged (the one asked, or every use); each has the
    status, the chain of ancestor -> license -> clause steps behind it and the obligations. ``sources``
    is every license that binds the artifact (its own, then its ancestors', with the route each takes);
    ``planned`` the source a model tuned on ``if_trained_on`` would add; ``licenses`` the knowledge
    base's summary of each of those licenses it holds. ``status``, ``exit_code``, ``chain`` and
    ``obligations`` read the verdict for the one use asked (``terms(ref, use=...)``)."""

    artifact: str
    digest: str
    if_trained_on: str | None
    sources: list[Source]
    verdicts: list[UseVerdict]
    planned: Source | None = None
    licenses: dict[str, LicenseSummary] = field(default_factory=dict)

    @property
    def judged(self) -> UseVerdict:
        """The verdict for the one use asked."""
        if len(self.verdicts) != 1:
            raise UsageError("terms() judged every use: pass use=... or read .verdicts (or .for_use(USE))")
        return self.verdicts[0]

    def for_use(self, use: str) -> UseVerdict:
        found = next((v for v in self.verdicts if v.use == use), None)
        if found is None:
            judged = ", ".join(v.use for v in self.verdicts)
            raise UsageError(f"no verdict for {use!r}: this one judged {judged}")
        return found

    @property
    def use(self) -> str:
        return self.judged.use

    @property
    def status(self) -> str:
        """allowed, allowed with obligations, forbidden or unknown."""
        return self.judged.status

    @property
    def verdict(self) -> str:
        """The answer for the use asked (the same as ``status``)."""
        return self.status

    @property
    def allowed(self) -> bool:
        return self.status in (ALLOWED, OBLIGATIONS)

    @property
    def exit_code(self) -> int:
        """`owl terms --use`'s exit code: 0 allowed, 10 with obligations, 11 forbidden, 12 unknown."""
        return self.judged.exit_code

    @property
    def chain(self) -> list[Step]:
        return self.judged.chain

    @property
    def obligations(self) -> list[str]:
        return self.judged.obligations

    @property
    def conflicts(self) -> list[str]:
        """Declared licenses more permissive than inherited terms (the same for every use)."""
        return self.verdicts[0].conflicts if self.verdicts else []

    @property
    def ancestors(self) -> list[Source]:
        """The licenses inherited through lineage (every source but the artifact's own)."""
        return [s for s in self.sources if s.via != "self"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact,
            "digest": self.digest,
            "if_trained_on": self.if_trained_on,
            "sources": [asdict(s) for s in self.sources],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "planned": asdict(self.planned) if self.planned else None,
            "licenses": {k: v.to_dict() for k, v in self.licenses.items()},
        }


class OpennessReport(_OpennessReport, Result):
    """`owl openness --json`: each of MOF's 17 components (`Finding`: found by which rule or attachment,
    under which license, open or not), the MOF class met (``mof_class``, each `ClassCheck`), the OSAID
    1.0 verdict (`OsaidVerdict`) and owlkit's four layers (`LayerSummary`)."""


@dataclass
class Attached(Result):
    """`owl attach --json`: the component recorded beside the artifact (its digest does not change),
    whether it replaced an earlier record, and warnings (no or unrecognised license)."""

    digest: str
    component: str
    replaced: bool
    warnings: list[str]
    url: str
    license: str
    license_given: str | None  # what was given, when it did not normalise to an SPDX id
    added_at: float
    name: str  # the artifact's name


@dataclass
class Detached(Result):
    """`owl attach --remove --json`: the attachment removed."""

    digest: str
    component: str
    removed: Attachment
    name: str  # the artifact's name

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "component": self.component,
            "removed": self.removed.to_dict(),
            "name": self.name,
        }

"""The openness report: each component found or not, the MOF class met, the OSAID verdict, the layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from owlkit.errors import Refused
from owlkit.store.store import Record, Store
from owlkit.terms.openness.attachments import attachments_of
from owlkit.terms.openness.components import CLASS_LABELS, CLASSES, LAYERS, Component, components
from owlkit.terms.openness.evidence import Context, Match, detect, gather, short_list
from owlkit.terms.openness.licenses import (
    license_fits,
    license_is_open,
    license_is_open_terms,
    license_is_osi,
)

TECHNICAL_REPORT, RESEARCH_PAPER = "Technical report", "Research paper"
# OSAID's "code" element: complete code under OSI-approved licenses
OSAID_CODE = (
    "Model architecture",
    "Training code",
    "Data preprocessing code",
    "Inference code",
    "Evaluation code",
)


@dataclass
class Finding:
    """One component on one artifact."""

    component: Component
    match: Match | None  # what counts (an attachment first, else the rule's first matching source)
    detected: list[Match] = field(default_factory=list)  # every rule source that matched
    covered_by: str | None = None  # MOF's special rule: a technical report may be omitted for a paper
    note: str | None = None

    @property
    def present(self) -> bool:
        return self.match is not None

    @property
    def license(self) -> str | None:
        return self.match.license if self.match else None

    @property
    def license_open(self) -> bool:
        return license_is_open(self.license)

    @property
    def license_fits(self) -> bool:
        return license_fits(self.license, self.component.content)

    @property
    def status(self) -> str:
        """MOT's buckets: included, unlicensed (license unknown), not-open (MOT "invalid"), missing
        (required), optional (not required and absent); "covered" when a special rule stands in."""
        if self.match is None:
            if self.covered_by:
                return "covered"
            return "missing" if self.component.required else "optional"
        if self.license in (None, "unknown"):
            return "unlicensed"
        return "included" if self.license_open else "not-open"

    @property
    def satisfied(self) -> bool:
        return self.status in ("included", "covered")

    def to_dict(self) -> dict[str, Any]:
        c = self.component
        return {
            "id": c.id,
            "name": c.name,
            "class": c.mof_class,
            "required": c.required,
            "content": c.content,
            "layer": c.layer,
            "rule": c.rule.describe(),
            "present": self.present,
            "status": self.status,
            "matched": self.match.source if self.match else None,
            "evidence": self.match.evidence if self.match else None,
            "detected": [vars(m) for m in self.detected],
            "license": self.license,
            "license_open": self.license_open if self.present else None,
            "license_fits": self.license_fits if self.present else None,
            "covered_by": self.covered_by,
            "note": self.note,
        }


@dataclass
class ClassCheck:
    mof_class: str
    met: bool  # every required component of this class and the less open ones is satisfied
    missing: list[str]  # required components introduced at this class: absent
    unlicensed: list[str]  # ... present, license unknown
    not_open: list[str]  # ... present, license not open

    @property
    def label(self) -> str:
        return CLASS_LABELS[self.mof_class]

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.mof_class,
            "label": self.label,
            "met": self.met,
            "missing": self.missing,
            "unlicensed": self.unlicensed,
            "not_open": self.not_open,
        }


@dataclass
class OsaidVerdict:
    meets: bool
    elements: dict[str, bool]  # data_information, code, parameters
    reasons: list[str]

    @property
    def verdict(self) -> str:
        return "meets" if self.meets else "does not meet"

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "meets": self.meets,
            "elements": self.elements,
            "reasons": self.reasons,
        }


@dataclass
class LayerSummary:
    layer: str
    present: list[str]
    missing: list[str]  # required components of the layer that are absent
    problems: list[str]  # present but unlicensed or not open
    total: int
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.present:
            return "closed"
        return "open" if not self.missing and not self.problems else "partial"

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "status": self.status,
            "present": self.present,
            "missing": self.missing,
            "problems": self.problems,
            "total": self.total,
            "notes": self.notes,
        }


@dataclass
class OpennessReport:
    name: str
    digest: str
    kind: str
    license: str
    findings: list[Finding]
    classes: list[ClassCheck]
    osaid: OsaidVerdict
    layers: list[LayerSummary]

    @property
    def mof_class(self) -> str:
        """The most open class met (classes are cumulative), or "none"."""
        met = [c.mof_class for c in self.classes if c.met]
        return met[-1] if met else "none"

    @property
    def mof_label(self) -> str:
        return CLASS_LABELS[self.mof_class]

    def finding(self, name: str) -> Finding:
        return next(f for f in self.findings if f.component.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "kind": self.kind,
            "license": self.license,
            "mof": {
                "class": self.mof_class,
                "label": self.mof_label,
                "classes": [c.to_dict() for c in self.classes],
            },
            "components": [f.to_dict() for f in self.findings],
            "osaid": self.osaid.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }


def assess(store: Store, rec: Record) -> OpennessReport:
    """Rate one stored model or adapter against MOF and OSAID."""
    if rec.manifest.kind == "dataset":
        raise Refused(f"{rec.name} is a dataset: owl openness rates models and adapters (MOF components)")
    ctx = gather(store, rec)
    attached = attachments_of(rec)
    findings = []
    for comp in components():
        detected = detect(comp, ctx)
        att = attached.get(comp.name)
        match = Match("attachment", att.url, att.license) if att else (detected[0] if detected else None)
        finding = Finding(comp, match, detected)
        away = ctx.unresolved.get(comp.rule.relation or "")
        if away:
            finding.note = f"{comp.rule.relation} {short_list(away)} not in the store: import it to count it"
        findings.append(finding)
    by_name = {f.component.name: f for f in findings}
    report_f, paper_f = by_name[TECHNICAL_REPORT], by_name[RESEARCH_PAPER]
    if not report_f.present and paper_f.satisfied:
        report_f.covered_by = RESEARCH_PAPER  # MOF: the technical report may be omitted for the paper
    return OpennessReport(
        name=rec.name,
        digest=rec.digest,
        kind=rec.manifest.kind,
        license=rec.manifest.license,
        findings=findings,
        classes=_classes(findings),
        osaid=_osaid(by_name, ctx),
        layers=_layers(findings, rec),
    )


def _classes(findings: list[Finding]) -> list[ClassCheck]:
    checks: list[ClassCheck] = []
    below_met = True
    for cls in CLASSES:
        own = [f for f in findings if f.component.mof_class == cls and f.component.required]
        missing = [f.component.name for f in own if f.status == "missing"]
        unlicensed = [f.component.name for f in own if f.status == "unlicensed"]
        not_open = [f.component.name for f in own if f.status == "not-open"]
        below_met = below_met and not (missing or unlicensed or not_open)
        checks.append(ClassCheck(cls, below_met, missing, unlicensed, not_open))
    return checks


def _absent_or_terms(f: Finding, test: Callable[[str | None], bool], terms: str) -> str | None:
    """Why the component fails an OSAID element (missing, or under other terms), or None."""
    if not f.present:
        return f"{f.component.name.lower()} missing"
    if not test(f.license):
        return f"{f.component.name.lower()} under {f.license}, not {terms}"
    return None


def _osaid(by_name: dict[str, Finding], ctx: Context) -> OsaidVerdict:
    reasons: list[str] = []
    # Data information: a description of the training data, and where to get it (raw data not required).
    card = by_name["Data card"]
    problem = _absent_or_terms(card, license_is_open_terms, "OSI-approved terms")
    if problem:
        reasons.append(
            f"data information: {problem} (no dataset card on a trained_on parent, no training-data section "
            "in the model card, no attachment)"
            if not card.present
            else f"data information: {problem}"
        )
    datasets = by_name["Datasets"]
    listed = datasets.present or bool(ctx.card_meta.get("datasets"))
    if not listed:
        reasons.append(
            "data information: the training data is not listed (no trained_on dataset, no card 'datasets', "
            "no Datasets attachment)"
        )
    data_ok = not problem and listed
    code_problems = [
        p
        for name in OSAID_CODE
        if (p := _absent_or_terms(by_name[name], license_is_osi, "an OSI-approved license"))
    ]
    if code_problems:
        reasons.append("code: " + "; ".join(code_problems))
    params = _absent_or_terms(
        by_name["Model parameters (Final)"], license_is_open_terms, "OSI-approved terms"
    )
    if params:
        reasons.append(f"parameters: {params}")
    elements = {"data_information": data_ok, "code": not code_problems, "parameters": params is None}
    return OsaidVerdict(all(elements.values()), elements, reasons)


def _layers(findings: list[Finding], rec: Record) -> list[LayerSummary]:
    out = []
    for layer in LAYERS:
        mine = [f for f in findings if f.component.layer == layer]
        summary = LayerSummary(
            layer=layer,
            present=[f.component.name for f in mine if f.present],
            missing=[f.component.name for f in mine if f.status == "missing"],
            problems=[
                f"{f.component.name} ({f.status})" for f in mine if f.status in ("unlicensed", "not-open")
            ],
            total=len(mine),
        )
        if layer == "governance":
            lic = rec.manifest.license
            summary.notes.append(f"license {lic}: {'open' if license_is_open(lic) else 'not open'}")
            for policy in rec.info.policy_files:
                summary.notes.append(f"use policy {policy} restricts use")
        out.append(summary)
    return out

"""How open a stored model is: the Model Openness Framework's 17 components and class, the OSAID verdict.

Sources (research notes in ``docs/openness-and-licenses.md``, sections A1 and A2):

- **MOF** (LF AI & Data, arXiv 2403.13784; Model Openness Tool ``mof.settings.yml``, ``ModelEvaluator``,
  ``LicenseHandler``, ``mof-licenses.json``): 17 components, each introduced at class III ("Open Model"),
  II ("Open Tooling") or I ("Open Science"), required or optional, with a content type (code, data,
  document). Classes are cumulative: a class is met when every required component of it and of the less
  open classes is included under an open license. Special rules: the technical report may be omitted
  when the research paper is included; evaluation results may live in the card; the data card is
  optional when the model card carries the data information.
- **License test** (``LicenseHandler::isOpenSourceLicense``): a license is open when it is OSI-approved,
  FSF-libre, one of the open-data licenses (CC0-1.0, CC-BY-*, CC-BY-SA-*, CDLA-Permissive-1.0/2.0,
  CDLA-Sharing-1.0, ODC-PDDL-1.0, ODC-By-1.0, ODbL-1.0, GFDL-1.3, OGL-Canada-2.0, OGL-UK-2.0/3.0) or
  OpenMDW-1.0. Whether the license suits the component's content type (``mof-licenses.json``: code,
  data, document lists; OpenMDW-1.0 fits all three) is only a warning, never a failure. A component
  whose license is unknown is "unlicensed" and does not count.
- **OSAID 1.0** (OSI, 2024-10-27): the preferred form to modify an AI system is data information
  (under OSI-approved terms), code (under OSI-approved licenses, complete: training, data processing,
  validation/testing, inference, architecture) and parameters (under OSI-approved terms). OSI lists no
  approved *terms* for data or weights; owlkit reads "OSI-approved terms" as an OSI-approved license or
  one of MOF's open-data licenses, and "OSI-approved license" (code) strictly.

Detection: each component has ONE rule (:class:`Rule`, data in :data:`COMPONENTS`), a list of sources
tried in a fixed order: the manifest's recipe, a lineage edge to stored datasets, model facts, the card's
YAML metadata, the card's sections, file globs. ``owl attach`` records a component that lives elsewhere
(URL and license) in the artifact's side record ("attachments"); an attachment takes precedence over
detection, since a person said so. Where a component's license comes from mirrors MOT's resolution
(component license, else the release's): an attachment's own license, a dataset's license for lineage
matches, owlkit's license for code a recorded recipe ran, and the artifact's license for its own files.

The four layers (weights, code, data, governance) are owlkit's summary grouping, not MOF's.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from owlkit.errors import NotFound, Refused, UsageError
from owlkit.store.store import Record, Store

CLASSES = ("III", "II", "I")  # from least to most open: each includes the ones before it
CLASS_LABELS = {
    "I": "Class I - Open Science",
    "II": "Class II - Open Tooling",
    "III": "Class III - Open Model",
    "none": "Unclassified",
}
LAYERS = ("weights", "code", "data", "governance")
CONTENT_TYPES = ("code", "data", "document")

# ----- licenses ---------------------------------------------------------------------------------------


def _ids(text: str) -> frozenset[str]:
    return frozenset(text.split())


# OSI-approved SPDX ids (the SPDX list's isOsiApproved flag); the knowledge base covers the rest.
OSI_APPROVED = _ids("""
    0BSD AAL AFL-1.1 AFL-1.2 AFL-2.0 AFL-2.1 AFL-3.0 AGPL-3.0 AGPL-3.0-only AGPL-3.0-or-later APL-1.0
    APSL-1.0 APSL-1.1 APSL-1.2 APSL-2.0 Apache-1.1 Apache-2.0 Artistic-1.0 Artistic-1.0-Perl
    Artistic-1.0-cl8 Artistic-2.0 BlueOak-1.0.0 BSD-1-Clause BSD-2-Clause BSD-2-Clause-Patent BSD-3-Clause
    BSD-3-Clause-LBNL BSL-1.0 CAL-1.0 CAL-1.0-Combined-Work-Exception CATOSL-1.1 CDDL-1.0 CECILL-2.1
    CERN-OHL-P-2.0 CERN-OHL-S-2.0 CERN-OHL-W-2.0 CNRI-Python CPAL-1.0 CPL-1.0 CUA-OPL-1.0 ECL-1.0 ECL-2.0
    EFL-1.0 EFL-2.0 EPL-1.0 EPL-2.0 EUDatagrid EUPL-1.1 EUPL-1.2 Entessa Fair Frameworx-1.0 GPL-2.0
    GPL-2.0-only GPL-2.0-or-later GPL-3.0 GPL-3.0-only GPL-3.0-or-later HPND ICU IPA IPL-1.0 ISC Intel
    LGPL-2.0 LGPL-2.0-only LGPL-2.0-or-later LGPL-2.1 LGPL-2.1-only LGPL-2.1-or-later LGPL-3.0
    LGPL-3.0-only LGPL-3.0-or-later LPL-1.0 LPL-1.02 LPPL-1.3c MIT MIT-0 MIT-Modern-Variant MPL-1.0
    MPL-1.1 MPL-2.0 MPL-2.0-no-copyleft-exception MS-PL MS-RL MirOS Motosoto MulanPSL-2.0 Multics NASA-1.3
    NCSA NGPL NPOSL-3.0 NTP Naumen Nokia OCLC-2.0 OFL-1.1 OFL-1.1-RFN OFL-1.1-no-RFN OGTSL OLDAP-2.8
    OSET-PL-2.1 OSL-1.0 OSL-2.0 OSL-2.1 OSL-3.0 PHP-3.0 PHP-3.01 PostgreSQL Python-2.0 QPL-1.0 RPL-1.1
    RPL-1.5 RPSL-1.0 RSCPL SISSL SPL-1.0 SimPL-2.0 Sleepycat UCL-1.0 UPL-1.0 Unicode-DFS-2016 Unlicense
    VSL-1.0 W3C Watcom-1.0 Xnet ZPL-2.0 ZPL-2.1 Zlib
""")
# FSF-libre but not OSI-approved (the SPDX list's isFsfLibre flag): part of MOF's open test.
FSF_LIBRE = _ids("""
    BSD-3-Clause-Clear BitTorrent-1.1 CC-BY-4.0 CC-BY-SA-4.0 CC0-1.0 CECILL-2.0 CECILL-B CECILL-C
    ClArtistic Condor-1.1 FTL GFDL-1.1-only GFDL-1.1-or-later GFDL-1.2-only GFDL-1.2-or-later
    GFDL-1.3-only GFDL-1.3-or-later IJG Imlib2 LPPL-1.2 LPPL-1.3a ODbL-1.0 OLDAP-2.3 OLDAP-2.7 OpenSSL
    Ruby SGI-B-2.0 StandardML-NJ Vim WTFPL X11 XFree86-1.1 YPL-1.1 ZPL-2.0 Zend-2.0 Zimbra-1.3 iMatix
    xinetd
""")
# MOF's OPEN_DATA_LICENSES (doc A2), spelled as SPDX spells them; CC-BY-* and CC-BY-SA-* are patterns.
OPEN_DATA = _ids("""
    CC0-1.0 CDLA-Permissive-1.0 CDLA-Permissive-2.0 CDLA-Sharing-1.0 ODC-PDDL-1.0 PDDL-1.0 ODC-By-1.0
    ODbL-1.0 GFDL-1.3 GFDL-1.3-only GFDL-1.3-or-later OGL-Canada-2.0 OGL-UK-2.0 OGL-UK-3.0
""")
_CC_BY = re.compile(r"CC-BY(?:-SA)?-\d\.\d(?:-[A-Za-z]+)?")  # CC-BY-4.0, CC-BY-SA-3.0-IGO; never -NC/-ND
OPENMDW = frozenset({"OpenMDW-1.0", "LicenseRef-openmdw-1.0"})  # detect spells the Hub tag as LicenseRef
# mof-licenses.json ContentType lists: licenses MOF recommends per content type (a mismatch only warns).
FITTING = {
    "code": _ids("""
        0BSD AFL-1.1 AFL-1.2 AFL-2.0 AFL-2.1 AFL-3.0 Apache-1.0 Apache-1.1 Apache-2.0 ECL-1.0 ECL-2.0 ISC
        MIT MIT-0 MulanPSL-1.0 MulanPSL-2.0 NCSA UPL-1.0
    """)
    | OPENMDW,
    "data": _ids("CDLA-Permissive-1.0 CDLA-Permissive-2.0 C-UDA-1.0 CC-PDDC CC0-1.0 PDDL-1.0") | OPENMDW,
    "document": _ids("Apache-2.0 CC-BY-4.0 CC-BY-SA-3.0 CC-BY-SA-4.0 FreeBSD-DOC CC-PDDC CC0-1.0") | OPENMDW,
}


def _kb_osi(license_id: str) -> bool:
    """The license knowledge base's OSI flag (False for an id it does not know)."""
    from owlkit.terms.kb import find_license

    try:
        return find_license(license_id).osi_approved
    except NotFound:
        return False


def _symbol_osi(key: str) -> bool:
    # The SPDX list answers for SPDX ids; the knowledge base (YAML, read once per process) is consulted
    # only for ids the list does not hold (LicenseRef-…, aliases).
    return key in OSI_APPROVED or _kb_osi(key)


def _symbol_open_data(key: str) -> bool:
    return key in OPEN_DATA or bool(_CC_BY.fullmatch(key))


def _symbol_open(key: str) -> bool:
    """MOF's open test for one license id."""
    return _symbol_osi(key) or key in FSF_LIBRE or _symbol_open_data(key) or key in OPENMDW


def _evaluate(license_id: str | None, test: Any) -> bool:
    """Apply a per-id test to an SPDX expression: AND needs every part, OR any (the user may pick),
    ``X WITH exception`` is judged by X. ``unknown`` and unparsable expressions fail."""
    if not license_id or license_id == "unknown":
        return False
    if " " not in license_id and "(" not in license_id:
        return bool(test(license_id))
    from license_expression import (
        AND,
        OR,
        ExpressionError,
        LicenseSymbol,
        LicenseWithExceptionSymbol,
        Licensing,
    )

    try:
        tree = Licensing().parse(license_id, validate=False)
    except ExpressionError:
        return False

    def walk(node: Any) -> bool:
        if isinstance(node, LicenseWithExceptionSymbol):
            return walk(node.license_symbol)
        if isinstance(node, LicenseSymbol):
            return bool(test(node.key))
        if isinstance(node, AND):
            return all(walk(a) for a in node.args)
        if isinstance(node, OR):
            return any(walk(a) for a in node.args)
        return False

    return tree is not None and walk(tree)


def license_is_osi(license_id: str | None) -> bool:
    """Whether the license (an id or SPDX expression) is OSI-approved."""
    return _evaluate(license_id, _symbol_osi)


def license_is_open(license_id: str | None) -> bool:
    """MOF's open test: OSI-approved, FSF-libre, an open-data license, or OpenMDW-1.0."""
    return _evaluate(license_id, _symbol_open)


def license_is_open_terms(license_id: str | None) -> bool:
    """OSAID's "OSI-approved terms" for data information and parameters, as owlkit reads it: an
    OSI-approved license or one of MOF's open-data licenses (OSI lists no approved data terms)."""
    return _evaluate(license_id, lambda k: _symbol_osi(k) or _symbol_open_data(k) or k in OPENMDW)


def license_fits(license_id: str | None, content: str) -> bool:
    """Whether MOF recommends the license for this content type (code, data, document)."""
    return _evaluate(license_id, FITTING[content].__contains__)


# ----- the component table ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """How a component is found on a stored artifact: the sources tried, in this order.

    ``recipes``: the manifest's recipe has one of these names. ``relation``: the catalog has edges of
    this relation to stored datasets (with ``parent_card``: every such dataset has a README.md card).
    ``facts``: these manifest facts are set. ``card``: the artifact has a README.md with YAML metadata.
    ``card_keys``: these card metadata keys are non-empty. ``card_sections``: a card heading matches one
    of these regexes and its section has text. ``globs`` / ``suffixes``: a file matches a glob (one
    without ``/`` matches the file name at any depth; case-insensitive) and ends with one of the
    suffixes (each only when given), and matches none of ``exclude``.
    """

    recipes: tuple[str, ...] = ()
    relation: str | None = None
    parent_card: bool = False
    facts: tuple[str, ...] = ()
    card: bool = False
    card_keys: tuple[str, ...] = ()
    card_sections: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.recipes:
            parts.append(f"recorded recipe {'/'.join(self.recipes)}")
        if self.relation:
            what = "a stored dataset with a README.md card" if self.parent_card else "a stored dataset"
            parts.append(f"{self.relation} edge to {what}")
        if self.facts:
            parts.append(f"manifest facts {', '.join(self.facts)}")
        if self.card:
            parts.append("README.md with YAML metadata")
        if self.card_keys:
            parts.append(f"card metadata {', '.join(self.card_keys)}")
        if self.card_sections:
            parts.append(f"card section /{'|'.join(self.card_sections)}/")
        if self.globs or self.suffixes:
            files = "files " + " ".join(self.globs or ["*"])
            if self.suffixes:
                files += " ending " + "|".join(self.suffixes)
            if self.exclude:
                files += " except " + " ".join(self.exclude)
            parts.append(files)
        return "; or ".join(parts)


@dataclass(frozen=True)
class Component:
    """One MOF component: MOT id, name, the class that introduces it, whether that class requires it,
    its content type, owlkit's layer, and its detection rule."""

    id: int
    name: str
    mof_class: str
    required: bool
    content: str
    layer: str
    rule: Rule


WEIGHT_SUFFIXES = (".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5")
CHECKPOINT_DIRS = ("checkpoint*/*", "intermediate*/*")
TUNE = ("tune",)  # recipes that train: the code that ran is owlkit's (training loop and data formatting)

# fmt: off
COMPONENTS: tuple[Component, ...] = (
    # class III, "Open Model"
    Component(
        9, "Model architecture", "III", True, "code", "code",
        Rule(facts=("architecture",), globs=("config.json", "adapter_config.json", "modeling_*.py")),
    ),
    Component(
        10, "Model parameters (Final)", "III", True, "data", "weights",
        Rule(suffixes=WEIGHT_SUFFIXES, exclude=(*CHECKPOINT_DIRS, "optimizer*")),
    ),
    Component(13, "Model card", "III", True, "document", "governance", Rule(card=True)),
    Component(
        14, "Data card", "III", True, "document", "data",
        Rule(
            relation="trained_on",
            parent_card=True,
            card_sections=(
                r"\b(training|pre-?training|fine-?tuning|instruction)( and evaluation)? data(sets?)?\b",
                r"^data(sets?)?$",
                r"\bdata(sets?)? (sources?|used)\b",
                r"\bdatasheet\b",
            ),
            globs=("datasheet*", "data_card*", "data-card*"),
        ),
    ),
    Component(
        11, "Technical report", "III", True, "document", "governance",
        Rule(globs=("*tech*report*", "report*.pdf", "report*.md")),
    ),
    Component(
        12, "Evaluation results", "III", True, "document", "governance",
        Rule(
            card_keys=("model-index", "eval_results"),
            card_sections=(r"^evaluation( results)?$", r"(?<!training )\bresults\b", r"\bbenchmarks?\b"),
            globs=("eval_results*", "evaluation_results*", "results*.json", "*benchmark*results*"),
        ),
    ),
    Component(
        20, "Sample model outputs", "III", False, "document", "governance",
        Rule(
            card_sections=(r"\b(sample|example) (model )?(outputs?|generations?|completions?)\b",),
            globs=("sample*output*", "samples/*", "*generations*.json*"),
        ),
    ),
    # class II, "Open Tooling"
    Component(
        7, "Training code", "II", True, "code", "code",
        Rule(
            recipes=TUNE,
            globs=("train*.py", "finetune*.py", "fine_tune*.py", "pretrain*.py", "train*.sh", "training/*.py"),
        ),
    ),
    Component(
        8, "Inference code", "II", True, "code", "code",
        Rule(globs=("inference*.py", "infer*.py", "generate*.py", "predict*.py", "chat*.py", "serve*.py")),
    ),
    Component(
        18, "Evaluation code", "II", True, "code", "code",
        Rule(globs=("eval*.py", "benchmark*.py", "eval*.sh", "evaluation/*.py")),
    ),
    Component(
        19, "Evaluation data", "II", True, "data", "data",
        Rule(
            relation="evaluated_on",
            globs=("eval_data*", "evaluation_data*", "eval_set*", "test_set*", "eval/*.jsonl", "eval/*.parquet"),
        ),
    ),
    Component(
        22, "Supporting libraries and tools", "II", False, "code", "code",
        Rule(
            globs=(
                "requirements*.txt", "pyproject.toml", "setup.py", "setup.cfg", "environment.yml",
                "environment.yaml", "Pipfile",
            )
        ),
    ),
    # class I, "Open Science"
    Component(
        21, "Research paper", "I", True, "document", "governance",
        Rule(
            card_sections=(r"\bcitation\b", r"\bpaper\b", r"\bpublications?\b"),
            globs=("paper*.pdf", "paper*.md", "paper*.tex"),
        ),
    ),
    Component(15, "Datasets", "I", True, "data", "data", Rule(relation="trained_on")),
    Component(
        16, "Data preprocessing code", "I", True, "code", "code",
        Rule(
            recipes=TUNE,
            globs=(
                "preprocess*.py", "prepare*.py", "data_prep*.py", "clean*.py", "filter*.py", "dedup*.py",
                "tokenize*.py", "preprocessing/*.py",
            ),
        ),
    ),
    Component(
        24, "Model parameters (Intermediate)", "I", True, "data", "weights",
        Rule(globs=CHECKPOINT_DIRS, suffixes=WEIGHT_SUFFIXES),
    ),
    Component(
        17, "Model metadata", "I", False, "data", "weights",
        Rule(
            recipes=TUNE,
            globs=(
                "training_args.json", "trainer_state.json", "train*config*.json", "train*.yaml", "train*.yml",
                "optimizer*",
            ),
        ),
    ),
)
# fmt: on

BY_NAME = {c.name: c for c in COMPONENTS}
TECHNICAL_REPORT, RESEARCH_PAPER = "Technical report", "Research paper"
OSAID_CODE = (
    "Model architecture",
    "Training code",
    "Data preprocessing code",
    "Inference code",
    "Evaluation code",
)


def _key(name: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


def find_component(name: str) -> Component:
    """The component named (case, spaces and punctuation ignored), or a one-line UsageError listing all."""
    wanted = _key(name)
    for c in COMPONENTS:
        if _key(c.name) == wanted:
            return c
    names = ", ".join(c.name for c in COMPONENTS)
    raise UsageError(f"unknown component {name!r}: choose one of {names}")


# ----- attachments ---------------------------------------------------------------------------------

ATTACHMENTS = "attachments"  # side-record key: {component name: Attachment.to_json()}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


@dataclass
class Attachment:
    """A component that lives elsewhere, recorded beside an artifact (its digest does not change)."""

    component: str
    url: str
    license: str
    added_at: float
    license_given: str | None = None  # what the user typed, when it did not normalise

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "license": self.license,
            "license_given": self.license_given,
            "added_at": self.added_at,
        }


def attachments_of(rec: Record) -> dict[str, Attachment]:
    """The artifact's attachments by component name (malformed entries are skipped)."""
    raw = rec.side.get(ATTACHMENTS)
    out: dict[str, Attachment] = {}
    if not isinstance(raw, dict):
        return out
    for name, a in raw.items():
        if name in BY_NAME and isinstance(a, dict) and isinstance(a.get("url"), str):
            lic = a.get("license") if isinstance(a.get("license"), str) else "unknown"
            given = a.get("license_given") if isinstance(a.get("license_given"), str) else None
            added = a.get("added_at") if isinstance(a.get("added_at"), int | float) else 0.0
            out[name] = Attachment(name, a["url"], lic, float(added), given)
    return out


def check_url(url: str) -> str:
    url = url.strip()
    if not _URI.fullmatch(url) or len(url) > 2000:
        raise UsageError(
            f"--url {url[:80]!r} is not a URL: give one with a scheme, e.g. https://example.org/x"
        )
    return url


def attach(
    store: Store, rec: Record, component: str, url: str, license_id: str | None
) -> tuple[Attachment, bool, list[str]]:
    """Record where a component lives and under which license; returns (attachment, replaced, warnings).

    The license is normalised (``apache 2.0`` -> ``Apache-2.0``); one not recognised is kept as
    ``unknown`` with a warning. Stored in the side record: the manifest and digest never change."""
    from owlkit.formats.license import normalize_license

    comp = find_component(component)
    url = check_url(url)
    warnings = []
    normal = normalize_license(license_id) if license_id else None
    if license_id and normal is None:
        warnings.append(
            f"license {license_id!r} is not recognised: recorded as unknown (give an SPDX id such as Apache-2.0)"
        )
    elif not license_id:
        warnings.append(f"no --license: {comp.name} is recorded as unlicensed until one is given")
    att = Attachment(comp.name, url, normal or "unknown", time.time(), license_id if normal is None else None)
    current = {name: a.to_json() for name, a in attachments_of(rec).items()}
    replaced = comp.name in current
    current[comp.name] = att.to_json()
    store.update_side(rec.digest, **{ATTACHMENTS: current})
    return att, replaced, warnings


def detach(store: Store, rec: Record, component: str) -> Attachment:
    """Remove a component's attachment; NotFound when there is none."""
    comp = find_component(component)
    current = attachments_of(rec)
    if comp.name not in current:
        raise NotFound(
            f"{rec.name} has no attachment for {comp.name!r}: `owl openness {rec.name}` lists them"
        )
    gone = current.pop(comp.name)
    store.update_side(rec.digest, **{ATTACHMENTS: {n: a.to_json() for n, a in current.items()}})
    return gone


# ----- evidence ---------------------------------------------------------------------------------------

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_PLACEHOLDER = re.compile(r"\[?more information needed\]?", re.IGNORECASE)
# a heading over an empty template section ("[More Information Needed]") is not a section
MIN_SECTION_WORDS = 3


def card_sections(body: str) -> list[tuple[str, str]]:
    """``(heading, text)`` for each Markdown heading with substantive text under it (up to the next
    heading of any level). Template comments and "[More Information Needed]" do not count; headings
    inside fenced code blocks are code, not headings."""
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in body.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            sections.append((m.group(2).strip(), []))
        elif sections:
            sections[-1][1].append(line)
    out = []
    for heading, lines in sections:
        text = _PLACEHOLDER.sub("", _COMMENT.sub("", "\n".join(lines))).strip()
        if len(re.findall(r"\w+", text)) >= MIN_SECTION_WORDS:
            out.append((heading, text))
    return out


def _glob_match(path: str, pattern: str) -> bool:
    path, pattern = path.lower(), pattern.lower()
    target = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


@dataclass
class _Context:
    """What the rules look at, gathered once per artifact."""

    rec: Record
    files: list[str]
    card_meta: dict[str, Any]
    sections: list[tuple[str, str]]
    has_card: bool
    parents: dict[str, list[Record]]  # relation -> stored parents
    unresolved: dict[str, list[str]]  # relation -> names of parents not in the store
    owlkit_license: str


def _gather(store: Store, rec: Record) -> _Context:
    from owlkit.formats.card import MAX_CARD_BYTES, parse_card

    files = [f.path for f in rec.manifest.files]
    card_meta = rec.side.get("card") if isinstance(rec.side.get("card"), dict) else {}
    readme = next((f for f in rec.manifest.files if f.path.lower() == "readme.md"), None)
    body = ""
    if readme is not None:
        try:
            with open(store.blobs.path(readme.sha256), "rb") as fh:
                body = parse_card(fh.read(MAX_CARD_BYTES).decode("utf-8", errors="replace"))[1]
        except FileNotFoundError:
            body = ""  # a missing blob is `owl verify`'s to report; the card metadata still counts
    from owlkit.terms.propagate import WEIGHT_EDGES

    parents: dict[str, list[Record]] = {}
    unresolved: dict[str, list[str]] = {}
    # A merge, quantization or conversion was trained on what its weights were trained on: data edges
    # are followed up through weight-derivative edges (as `owl terms` does).
    todo, seen = [rec.digest], {rec.digest}
    while todo:
        node = todo.pop()
        for edge in store.edges_of(node)[0]:
            if node != rec.digest and edge.relation not in ("trained_on", "evaluated_on", *WEIGHT_EDGES):
                continue
            if edge.parent is None:
                unresolved.setdefault(edge.relation, []).append(edge.parent_ref or "?")
                continue
            try:
                parent = store.get(edge.parent)
            except NotFound:
                unresolved.setdefault(edge.relation, []).append(edge.parent)
                continue
            if edge.relation in WEIGHT_EDGES:
                if parent.digest not in seen:
                    seen.add(parent.digest)
                    todo.append(parent.digest)
                if node != rec.digest:
                    continue  # only the artifact's own weight parents are listed as its parents
            if parent not in parents.setdefault(edge.relation, []):
                parents[edge.relation].append(parent)
    return _Context(
        rec=rec,
        files=files,
        card_meta=card_meta or {},
        sections=card_sections(body),
        has_card=readme is not None and bool(card_meta),
        parents=parents,
        unresolved=unresolved,
        owlkit_license=_owlkit_license(),
    )


def _owlkit_license() -> str:
    try:
        meta = metadata.metadata("owlkit")
    except metadata.PackageNotFoundError:
        return "unknown"
    from owlkit.formats.license import normalize_license

    return normalize_license(meta.get("License-Expression") or meta.get("License") or "") or "unknown"


def _join_licenses(ids: list[str]) -> str:
    unique = list(dict.fromkeys(ids))
    if "unknown" in unique:
        return "unknown"
    return unique[0] if len(unique) == 1 else " AND ".join(f"({i})" if " " in i else i for i in unique)


@dataclass
class Match:
    source: str  # recipe | lineage | facts | card | card-metadata | card-section | files | attachment
    evidence: str
    license: str


def _short_list(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _detect(comp: Component, ctx: _Context) -> list[Match]:
    """Every source of the component's rule that matches, in the rule's order."""
    r, rec = comp.rule, ctx.rec
    own = rec.manifest.license
    found: list[Match] = []
    recipe = rec.manifest.recipe
    if r.recipes and recipe is not None and recipe.name in r.recipes:
        lic = ctx.owlkit_license if comp.content == "code" else own
        found.append(Match("recipe", f"owlkit recipe {recipe.name!r} (params and seed in the manifest)", lic))
    if r.relation:
        stored = ctx.parents.get(r.relation, [])
        datasets = [p for p in stored if p.manifest.kind == "dataset"]
        carded = [
            p
            for p in datasets
            if p.side.get("card") and any(f.path.lower() == "readme.md" for f in p.manifest.files)
        ]
        picked = carded if r.parent_card else datasets
        if datasets and len(picked) == len(datasets):
            names = [f"{p.name} ({p.manifest.license})" for p in picked]
            what = "README.md card of " if r.parent_card else ""
            found.append(
                Match(
                    "lineage",
                    f"{r.relation} {what}{_short_list(names)}",
                    _join_licenses([p.manifest.license for p in picked]),
                )
            )
    if r.facts and all(rec.manifest.facts.get(k) for k in r.facts):
        shown = ", ".join(f"{k}={rec.manifest.facts[k]}" for k in r.facts)
        found.append(Match("facts", shown, own))
    if r.card and ctx.has_card:
        found.append(Match("card", "README.md with YAML metadata", own))
    keys = [k for k in r.card_keys if ctx.card_meta.get(k)]
    if keys:
        found.append(Match("card-metadata", "card metadata " + ", ".join(keys), own))
    if r.card_sections and ctx.sections:
        heads = [h for h, _ in ctx.sections if any(re.search(p, h.lower()) for p in r.card_sections)]
        if heads:
            found.append(
                Match("card-section", "README.md section " + _short_list([repr(h) for h in heads]), own)
            )
    if r.globs or r.suffixes:
        hits = [
            f
            for f in ctx.files
            if (not r.globs or any(_glob_match(f, g) for g in r.globs))
            and f.lower().endswith(r.suffixes or ("",))
            and not any(_glob_match(f, x) for x in r.exclude)
        ]
        if hits:
            found.append(Match("files", _short_list(hits), own))
    return found


# ----- the report -------------------------------------------------------------------------------------


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

    def to_json(self) -> dict[str, Any]:
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

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.mof_class,
            "label": CLASS_LABELS[self.mof_class],
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

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": "meets" if self.meets else "does not meet",
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

    def to_json(self) -> dict[str, Any]:
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

    def finding(self, name: str) -> Finding:
        return next(f for f in self.findings if f.component.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "digest": self.digest,
            "kind": self.kind,
            "license": self.license,
            "mof": {
                "class": self.mof_class,
                "label": CLASS_LABELS[self.mof_class],
                "classes": [c.to_json() for c in self.classes],
            },
            "components": [f.to_json() for f in self.findings],
            "osaid": self.osaid.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }


def assess(store: Store, rec: Record) -> OpennessReport:
    """Rate one stored model or adapter against MOF and OSAID."""
    if rec.manifest.kind == "dataset":
        raise Refused(f"{rec.name} is a dataset: owl openness rates models and adapters (MOF components)")
    ctx = _gather(store, rec)
    attached = attachments_of(rec)
    findings = []
    for comp in COMPONENTS:
        detected = _detect(comp, ctx)
        att = attached.get(comp.name)
        match = Match("attachment", att.url, att.license) if att else (detected[0] if detected else None)
        finding = Finding(comp, match, detected)
        away = ctx.unresolved.get(comp.rule.relation or "")
        if away:
            finding.note = f"{comp.rule.relation} {_short_list(away)} not in the store: import it to count it"
        findings.append(finding)
    by_name = {f.component.name: f for f in findings}
    report_f, paper_f = by_name[TECHNICAL_REPORT], by_name[RESEARCH_PAPER]
    if not report_f.present and paper_f.satisfied:
        report_f.covered_by = RESEARCH_PAPER  # MOF: the technical report may be omitted for the paper
    classes = _classes(findings)
    return OpennessReport(
        name=rec.name,
        digest=rec.digest,
        kind=rec.manifest.kind,
        license=rec.manifest.license,
        findings=findings,
        classes=classes,
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


def _osaid(by_name: dict[str, Finding], ctx: _Context) -> OsaidVerdict:
    reasons: list[str] = []

    def absent_or_terms(f: Finding, test: Any, terms: str) -> str | None:
        if not f.present:
            return f"{f.component.name.lower()} missing"
        if not test(f.license):
            return f"{f.component.name.lower()} under {f.license}, not {terms}"
        return None

    # Data information: a description of the training data, and where to get it (raw data not required).
    card = by_name["Data card"]
    problem = absent_or_terms(card, license_is_open_terms, "OSI-approved terms")
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
        if (p := absent_or_terms(by_name[name], license_is_osi, "an OSI-approved license"))
    ]
    if code_problems:
        reasons.append("code: " + "; ".join(code_problems))
    params = absent_or_terms(by_name["Model parameters (Final)"], license_is_open_terms, "OSI-approved terms")
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
            for policy in rec.side.get("policy_files") or []:
                summary.notes.append(f"use policy {policy} restricts use")
        out.append(summary)
    return out

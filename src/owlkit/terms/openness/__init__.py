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

The modules, bottom up:

- ``components``: the component table (data: ``mof.yaml``), each with ONE detection rule;
- ``licenses``: the open-license tests (data: ``spdx-licenses.json``, from the SPDX License List by
  ``scripts/spdx-licenses``, and MOF's lists in ``mof.yaml``);
- ``cards``: a model card's Markdown sections;
- ``attachments``: ``owl attach`` records of components kept elsewhere (side record, digest unchanged);
- ``evidence``: what the rules look at on one artifact, and each rule's sources tried in order (the
  manifest's recipe, a lineage edge to stored datasets, model facts, the card's YAML metadata, the
  card's sections, file globs);
- ``report``: :func:`assess`, the MOF class, the OSAID verdict and owlkit's four layers (weights, code,
  data, governance: owlkit's summary grouping, not MOF's).
"""

from owlkit.terms.openness.attachments import Attachment, attach, attachments_of, check_url, detach
from owlkit.terms.openness.cards import card_sections
from owlkit.terms.openness.components import (
    CLASS_LABELS,
    CLASSES,
    LAYERS,
    Component,
    Rule,
    components,
    find_component,
)
from owlkit.terms.openness.licenses import (
    license_fits,
    license_is_open,
    license_is_open_terms,
    license_is_osi,
)
from owlkit.terms.openness.report import (
    ClassCheck,
    Finding,
    LayerSummary,
    OpennessReport,
    OsaidVerdict,
    assess,
)

__all__ = [
    "CLASSES",
    "CLASS_LABELS",
    "LAYERS",
    "Attachment",
    "ClassCheck",
    "Component",
    "Finding",
    "LayerSummary",
    "OpennessReport",
    "OsaidVerdict",
    "Rule",
    "assess",
    "attach",
    "attachments_of",
    "card_sections",
    "check_url",
    "components",
    "detach",
    "find_component",
    "license_fits",
    "license_is_open",
    "license_is_open_terms",
    "license_is_osi",
]

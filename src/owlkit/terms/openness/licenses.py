"""Which licenses are open: MOF's open test, OSAID's "OSI-approved", and MOF's content-type fit.

The lists are data: the SPDX flags in ``spdx-licenses.json`` (regenerated from the SPDX License List by
``scripts/spdx-licenses``) and MOF's own lists in ``mof.yaml``. The license knowledge base
(``terms/licenses/*.yaml``) answers for the ids SPDX does not hold (LicenseRef-…, aliases).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owlkit.errors import NotFound
from owlkit.terms.openness.components import CONTENT_TYPES, mof_data

SPDX_DATA = Path(__file__).with_name("spdx-licenses.json")
_CC_BY = re.compile(r"CC-BY(?:-SA)?-\d\.\d(?:-[A-Za-z]+)?")  # CC-BY-4.0, CC-BY-SA-3.0-IGO; never -NC/-ND


@dataclass(frozen=True)
class LicenseLists:
    osi_approved: frozenset[str]  # the SPDX list's isOsiApproved flag
    fsf_libre: frozenset[str]  # ... and its isFsfLibre flag: part of MOF's open test
    open_data: frozenset[str]  # MOF's OPEN_DATA_LICENSES (CC-BY-* and CC-BY-SA-* match _CC_BY)
    openmdw: frozenset[str]  # OpenMDW-1.0: open, and fits every content type
    fitting: dict[str, frozenset[str]]  # content type -> the licenses MOF recommends for it


@functools.cache
def lists() -> LicenseLists:
    """The license lists, read once per process."""
    spdx = json.loads(SPDX_DATA.read_text(encoding="utf-8"))
    mof = mof_data()["licenses"]
    openmdw = frozenset(mof["openmdw"])
    return LicenseLists(
        osi_approved=frozenset(spdx["osi_approved"]),
        fsf_libre=frozenset(spdx["fsf_libre"]),
        open_data=frozenset(mof["open_data"]),
        openmdw=openmdw,
        fitting={c: frozenset(mof["fitting"][c]) | openmdw for c in CONTENT_TYPES},
    )


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
    return key in lists().osi_approved or _kb_osi(key)


def _symbol_open_data(key: str) -> bool:
    return key in lists().open_data or bool(_CC_BY.fullmatch(key))


def _symbol_open(key: str) -> bool:
    """MOF's open test for one license id."""
    return _symbol_osi(key) or key in lists().fsf_libre or _symbol_open_data(key) or key in lists().openmdw


def _symbol_open_terms(key: str) -> bool:
    return _symbol_osi(key) or _symbol_open_data(key) or key in lists().openmdw


def _evaluate(license_id: str | None, test: Callable[[str], bool]) -> bool:
    """Apply a per-id test to an SPDX expression: AND needs every part, OR any (the user may pick),
    ``X WITH exception`` is judged by X. ``unknown`` and unparsable expressions fail."""
    if not license_id or license_id == "unknown":
        return False
    if " " not in license_id and "(" not in license_id:
        return test(license_id)
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
            return test(node.key)
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
    return _evaluate(license_id, _symbol_open_terms)


def license_fits(license_id: str | None, content: str) -> bool:
    """Whether MOF recommends the license for this content type (code, data, document)."""
    return _evaluate(license_id, lists().fitting[content].__contains__)

"""Find an artifact's license: normalise declared ids and names, recognise license texts by title.

One interface for every reader (HF folders, adapters, datasets, GGUF): :func:`detect_license` takes
what a reader found and returns a :class:`~owlkit.formats.base.LicenseFinding` that says where the
answer came from. An id is an SPDX expression (``Apache-2.0``, ``MIT OR Apache-2.0``) or a
``LicenseRef-…`` id for licenses SPDX does not list; Hugging Face's own license tags become
``LicenseRef-<tag>`` (``LicenseRef-llama2``, ``LicenseRef-gemma``). Anything not identified stays
``unknown``: a wrong license is worse than none.

SPDX parsing uses the ``license-expression`` package (it knows every SPDX id, alias and exception).
It knows nothing of Hugging Face tags or of free-text names, hence the tables here.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from owlkit.formats.base import LicenseFinding

# Hugging Face license tags (hub-docs repositories-licenses.md) and their full names there. The id is
# the SPDX id when one exists; None means "LicenseRef-<tag>" (AI licenses, license families, and
# licenses absent from the SPDX list that license-expression bundles).
HF_TAGS: dict[str, tuple[str | None, str]] = {
    "apache-2.0": ("Apache-2.0", "Apache license 2.0"),
    "mit": ("MIT", "MIT"),
    "openrail": (None, "OpenRAIL license family"),
    "bigscience-openrail-m": (None, "BigScience OpenRAIL-M"),
    "creativeml-openrail-m": (None, "CreativeML OpenRAIL-M"),
    "bigscience-bloom-rail-1.0": (None, "BigScience BLOOM RAIL 1.0"),
    "bigcode-openrail-m": (None, "BigCode Open RAIL-M v1"),
    "afl-3.0": ("AFL-3.0", "Academic Free License v3.0"),
    "artistic-2.0": ("Artistic-2.0", "Artistic license 2.0"),
    "bsl-1.0": ("BSL-1.0", "Boost Software License 1.0"),
    "bsd": (None, "BSD license family"),
    "bsd-2-clause": ("BSD-2-Clause", 'BSD 2-clause "Simplified" license'),
    "bsd-3-clause": ("BSD-3-Clause", 'BSD 3-clause "New" or "Revised" license'),
    "bsd-3-clause-clear": ("BSD-3-Clause-Clear", "BSD 3-clause Clear license"),
    "c-uda": ("C-UDA-1.0", "Computational Use of Data Agreement"),
    "cc": (None, "Creative Commons license family"),
    "cc0-1.0": ("CC0-1.0", "Creative Commons Zero v1.0 Universal"),
    "cc-by-2.0": ("CC-BY-2.0", "Creative Commons Attribution 2.0"),
    "cc-by-2.5": ("CC-BY-2.5", "Creative Commons Attribution 2.5"),
    "cc-by-3.0": ("CC-BY-3.0", "Creative Commons Attribution 3.0"),
    "cc-by-4.0": ("CC-BY-4.0", "Creative Commons Attribution 4.0"),
    "cc-by-sa-3.0": ("CC-BY-SA-3.0", "Creative Commons Attribution Share Alike 3.0"),
    "cc-by-sa-4.0": ("CC-BY-SA-4.0", "Creative Commons Attribution Share Alike 4.0"),
    "cc-by-nc-2.0": ("CC-BY-NC-2.0", "Creative Commons Attribution Non Commercial 2.0"),
    "cc-by-nc-3.0": ("CC-BY-NC-3.0", "Creative Commons Attribution Non Commercial 3.0"),
    "cc-by-nc-4.0": ("CC-BY-NC-4.0", "Creative Commons Attribution Non Commercial 4.0"),
    "cc-by-nd-4.0": ("CC-BY-ND-4.0", "Creative Commons Attribution No Derivatives 4.0"),
    "cc-by-nc-nd-3.0": ("CC-BY-NC-ND-3.0", "Creative Commons Attribution Non Commercial No Derivatives 3.0"),
    "cc-by-nc-nd-4.0": ("CC-BY-NC-ND-4.0", "Creative Commons Attribution Non Commercial No Derivatives 4.0"),
    "cc-by-nc-sa-2.0": ("CC-BY-NC-SA-2.0", "Creative Commons Attribution Non Commercial Share Alike 2.0"),
    "cc-by-nc-sa-3.0": ("CC-BY-NC-SA-3.0", "Creative Commons Attribution Non Commercial Share Alike 3.0"),
    "cc-by-nc-sa-4.0": ("CC-BY-NC-SA-4.0", "Creative Commons Attribution Non Commercial Share Alike 4.0"),
    "cdla-sharing-1.0": ("CDLA-Sharing-1.0", "Community Data License Agreement – Sharing, Version 1.0"),
    "cdla-permissive-1.0": (
        "CDLA-Permissive-1.0",
        "Community Data License Agreement – Permissive, Version 1.0",
    ),
    "cdla-permissive-2.0": (
        "CDLA-Permissive-2.0",
        "Community Data License Agreement – Permissive, Version 2.0",
    ),
    "wtfpl": ("WTFPL", "Do What The F*ck You Want To Public License"),
    "ecl-2.0": ("ECL-2.0", "Educational Community License v2.0"),
    "epl-1.0": ("EPL-1.0", "Eclipse Public License 1.0"),
    "epl-2.0": ("EPL-2.0", "Eclipse Public License 2.0"),
    "etalab-2.0": ("etalab-2.0", "Etalab Open License 2.0"),
    "eupl-1.1": ("EUPL-1.1", "European Union Public License 1.1"),
    "eupl-1.2": ("EUPL-1.2", "European Union Public License 1.2"),
    # The Hub's unversioned-suffix GPL tags name the license text; SPDX reads a bare "GPL-3.0" as -only.
    "agpl-3.0": ("AGPL-3.0-only", "GNU Affero General Public License v3.0"),
    "gfdl": (None, "GNU Free Documentation License family"),
    "gpl": (None, "GNU General Public License family"),
    "gpl-2.0": ("GPL-2.0-only", "GNU General Public License v2.0"),
    "gpl-3.0": ("GPL-3.0-only", "GNU General Public License v3.0"),
    "lgpl": (None, "GNU Lesser General Public License family"),
    "lgpl-2.1": ("LGPL-2.1-only", "GNU Lesser General Public License v2.1"),
    "lgpl-3.0": ("LGPL-3.0-only", "GNU Lesser General Public License v3.0"),
    "isc": ("ISC", "ISC"),
    "h-research": (None, "H Research License"),
    "intel-research": (None, "Intel Research Use License Agreement"),
    "lppl-1.3c": ("LPPL-1.3c", "LaTeX Project Public License v1.3c"),
    "ms-pl": ("MS-PL", "Microsoft Public License"),
    "apple-ascl": (None, "Apple Sample Code license"),
    "apple-amlr": (None, "Apple Model License for Research"),
    "mpl-2.0": ("MPL-2.0", "Mozilla Public License 2.0"),
    "odc-by": ("ODC-By-1.0", "Open Data Commons License Attribution family"),
    "odbl": ("ODbL-1.0", "Open Database License family"),
    "openmdw-1.0": (None, "Open Model, Data & Weights License Agreement"),
    "openmdw-1.1": (None, "Open Model, Data & Weights License Agreement 1.1"),
    "openrail++": (None, "Open Rail++-M License"),
    "osl-3.0": ("OSL-3.0", "Open Software License 3.0"),
    "postgresql": ("PostgreSQL", "PostgreSQL License"),
    "ofl-1.1": ("OFL-1.1", "SIL Open Font License 1.1"),
    "ncsa": ("NCSA", "University of Illinois/NCSA Open Source License"),
    "unlicense": ("Unlicense", "The Unlicense"),
    "zlib": ("Zlib", "zLib License"),
    "pddl": ("PDDL-1.0", "Open Data Commons Public Domain Dedication and License"),
    "lgpl-lr": (None, "Lesser General Public License For Linguistic Resources"),
    "deepfloyd-if-license": (None, "DeepFloyd IF Research License Agreement"),
    "fair-noncommercial-research-license": (None, "FAIR Noncommercial Research License"),
    "llama2": (None, "Llama 2 Community License Agreement"),
    "llama3": (None, "Llama 3 Community License Agreement"),
    "llama3.1": (None, "Llama 3.1 Community License Agreement"),
    "llama3.2": (None, "Llama 3.2 Community License Agreement"),
    "llama3.3": (None, "Llama 3.3 Community License Agreement"),
    "llama4": (None, "Llama 4 Community License Agreement"),
    "grok2-community": (None, "Grok 2 Community License Agreement"),
    "gemma": (None, "Gemma Terms of Use"),
}

# Values that declare no license at all (the Hub's "other" asks for license_name instead).
NO_LICENSE = frozenset({"other", "unknown", "none", "noassertion", ""})

# Free-text names seen in cards, GGUF metadata and model-openness records, beyond the Hub's full names.
ALIASES: dict[str, tuple[str, ...]] = {
    "Apache-2.0": (
        "Apache License 2.0",
        "Apache License, Version 2.0",
        "Apache License v2.0",
        "Apache 2.0",
        "Apache 2",
        "Apache2",
        "Apache-2",
        "ASL 2.0",
        "Apache Software License 2.0",
    ),
    "MIT": ("MIT License", "Expat"),
    "BSD-3-Clause": (
        "BSD 3-Clause",
        "BSD-3",
        "New BSD License",
        "Modified BSD License",
        "Revised BSD License",
    ),
    "BSD-2-Clause": ("BSD 2-Clause", "BSD-2", "Simplified BSD License", "FreeBSD License"),
    "GPL-3.0-only": ("GNU GPL v3", "GPLv3", "GPL v3", "GPL 3", "GPL 3.0"),
    "GPL-3.0-or-later": ("GPLv3+", "GPL v3 or later", "GNU GPL v3 or later"),
    "GPL-2.0-only": ("GNU GPL v2", "GPLv2", "GPL v2", "GPL 2.0"),
    "AGPL-3.0-only": ("AGPLv3", "AGPL v3", "GNU AGPL v3"),
    "LGPL-3.0-only": ("LGPLv3", "LGPL v3", "GNU LGPL v3"),
    "LGPL-2.1-only": ("LGPLv2.1", "LGPL v2.1"),
    "MPL-2.0": ("Mozilla Public License Version 2.0",),
    "CC0-1.0": ("CC0", "CC0 1.0 Universal", "Creative Commons Zero"),
    "LicenseRef-llama2": ("Llama 2 Community License", "Llama 2 License", "Llama-2"),
    "LicenseRef-llama3": ("Meta Llama 3 Community License Agreement", "Meta Llama 3 License", "Llama-3"),
    "LicenseRef-llama3.1": ("Llama 3.1 Community License", "Meta Llama 3.1 Community License Agreement"),
    "LicenseRef-llama3.2": ("Llama 3.2 Community License", "Meta Llama 3.2 Community License Agreement"),
    "LicenseRef-llama3.3": ("Llama 3.3 Community License", "Meta Llama 3.3 Community License Agreement"),
    "LicenseRef-llama4": ("Llama 4 Community License", "Meta Llama 4 Community License Agreement"),
    "LicenseRef-gemma": ("Gemma Terms of Use", "Gemma License"),
    "LicenseRef-creativeml-openrail-m": ("CreativeML Open RAIL-M", "CreativeML Open RAIL-M License"),
    "LicenseRef-bigscience-openrail-m": ("BigScience Open RAIL-M", "BigScience OpenRAIL-M License"),
    "LicenseRef-bigscience-bloom-rail-1.0": ("BigScience RAIL License v1.0", "BigScience BLOOM RAIL License"),
    "LicenseRef-bigcode-openrail-m": ("BigCode OpenRAIL-M", "BigCode Open RAIL-M v1 License Agreement"),
    "LicenseRef-openrail": ("OpenRAIL", "Open RAIL"),
    "LicenseRef-openrail-plus-plus": ("OpenRAIL++", "OpenRAIL++-M"),
}

# Creative Commons: (SPDX part, words of the legal code's title).
_CC_KINDS = (
    ("BY", "Attribution"),
    ("BY-SA", "Attribution-ShareAlike"),
    ("BY-NC", "Attribution-NonCommercial"),
    ("BY-ND", "Attribution-NoDerivatives"),
    ("BY-NC-SA", "Attribution-NonCommercial-ShareAlike"),
    ("BY-NC-ND", "Attribution-NonCommercial-NoDerivatives"),
)
_CC_VERSIONS = ("2.0", "2.5", "3.0", "4.0")

_LICENSE_REF = re.compile(r"(?:DocumentRef-[A-Za-z0-9.\-]+:)?LicenseRef-[A-Za-z0-9.\-]+")
_OPERATOR = re.compile(r"[()]|\s(?:and|or|with)\s", re.IGNORECASE)
MAX_VALUE_CHARS = 1000  # a declared license longer than this is prose, not an id


def hf_tag_id(tag: str) -> str:
    """The id of a Hugging Face license tag: its SPDX id, else ``LicenseRef-<tag>`` (``+`` spelled
    ``-plus``: SPDX LicenseRef ids allow only letters, digits, ``.`` and ``-``)."""
    spdx, _ = HF_TAGS[tag]
    return spdx or "LicenseRef-" + tag.replace("+", "-plus")


def _norm_name(text: str) -> str:
    """A free-text license name reduced to compare spellings: case, punctuation and filler words go."""
    s = text.lower().replace("licence", "license").replace("\u2013", "-")
    s = re.sub(r"non[\s-]+commercial", "noncommercial", s)
    s = re.sub(r"share[\s-]+alike", "sharealike", s)
    s = re.sub(r"no[\s-]+derivatives|noderivs", "noderivatives", s)
    s = re.sub(r"\bv(?=\d)", "", s)  # "v2.0" -> "2.0"
    words = re.sub(r"[^a-z0-9.+]+", " ", s).split()
    return " ".join(w for w in words if w not in {"the", "license", "agreement", "version", "international"})


@functools.cache
def _name_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for tag, (_, full) in HF_TAGS.items():
        table.setdefault(_norm_name(full), hf_tag_id(tag))
    for code, words in _CC_KINDS:
        for version in _CC_VERSIONS:
            spdx = f"CC-{code}-{version}"
            for name in (f"Creative Commons {words} {version}", f"CC {code} {version}", f"{words} {version}"):
                table.setdefault(_norm_name(name), spdx)
    for license_id, names in ALIASES.items():
        for name in names:
            table.setdefault(_norm_name(name), license_id)
    return table


@functools.cache
def spdx_licensing() -> Any:
    """The SPDX license index as a ``license_expression.Licensing``, built once: building it reads the
    bundled index (tens of milliseconds), and every license judgement parses with it."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _spdx_symbol(text: str) -> str | None:
    """The canonical SPDX id of a single license key (any case, SPDX aliases such as ``GPL-2.0+``)."""
    from license_expression import ExpressionError, LicenseSymbol

    licensing = spdx_licensing()
    try:
        parsed = licensing.parse(text, validate=False)
    except ExpressionError:
        return None
    if isinstance(parsed, LicenseSymbol) and parsed.key in licensing.known_symbols:
        return parsed.key
    return None


def _resolve_one(text: str) -> str | None:
    """One license (no operators): Hub tag, LicenseRef, SPDX id or free-text name -> id, else None."""
    value = text.strip()
    low = value.lower()
    if low in NO_LICENSE:
        return None
    if low in HF_TAGS:
        return hf_tag_id(low)
    if _LICENSE_REF.fullmatch(value):
        return value
    return _spdx_symbol(value) or _name_table().get(_norm_name(value))


def _resolve_expression(text: str) -> str | None:
    """An SPDX-style expression whose every license resolves; rendered in canonical form."""
    from license_expression import AND, OR, ExpressionError, LicenseSymbol, LicenseWithExceptionSymbol

    licensing = spdx_licensing()
    try:
        tree = licensing.parse(text, validate=False)
    except (ExpressionError, RecursionError):
        return None

    def render(node: Any, nested: bool) -> str | None:
        if isinstance(node, LicenseWithExceptionSymbol):
            lic = render(node.license_symbol, True)
            exc = node.exception_symbol.key
            if lic is None or exc not in licensing.known_symbols:
                return None
            return f"{lic} WITH {exc}"
        if isinstance(node, LicenseSymbol):
            if node.key in licensing.known_symbols:
                return node.key
            return _resolve_one(node.key)
        if isinstance(node, AND | OR):
            parts = [render(arg, True) for arg in node.args]
            if any(p is None for p in parts):
                return None
            joined = (" AND " if isinstance(node, AND) else " OR ").join(parts)  # type: ignore[arg-type]
            return f"({joined})" if nested else joined
        return None

    return None if tree is None else render(tree, False)


def normalize_license(value: str) -> str | None:
    """A declared license (card ``license``/``license_name``, GGUF ``general.license``) as an id.

    SPDX ids in any case become their canonical spelling (``apache-2.0`` -> ``Apache-2.0``); SPDX
    expressions are kept, normalised (``mit or apache-2.0`` -> ``MIT OR Apache-2.0``); Hugging Face
    tags map to SPDX or ``LicenseRef-<tag>``; common names (``Apache License 2.0``, ``Llama 2
    Community License Agreement``) map to their id. ``other``/``unknown`` and anything unrecognised
    give None.
    """
    if not isinstance(value, str) or len(value) > MAX_VALUE_CHARS:
        return None
    value = " ".join(value.split())
    found = _resolve_one(value)
    if found is None and _OPERATOR.search(f" {value} "):
        found = _resolve_expression(value)
    return found


# --- license texts ------------------------------------------------------------------------------------

TEXT_WINDOW = 4096  # bytes of a LICENSE file examined: titles and permission notices sit at the top


def _cc_title_patterns() -> list[tuple[str, str]]:
    pats = []
    for code, words in _CC_KINDS:
        # "Attribution-NonCommercial 4.0 International" (4.0) / "... 3.0 Unported" (older legal codes)
        title = re.escape(words.lower()).replace("noderivatives", "no(?:derivatives|derivs)")
        pats.append((rf"(?<![\w-]){title} (\d\.\d) (?:international|unported|generic)", f"CC-{code}-{{0}}"))
    return pats


# (regex on lower-cased, whitespace-collapsed text, id); "{0}" takes the first group.
_TITLE_PATTERNS: list[tuple[str, str]] = [
    (r"apache license,? version 2\.0", "Apache-2.0"),
    (r"gnu affero general public license,? version 3", "AGPL-3.0-only"),
    (r"gnu lesser general public license,? version 3", "LGPL-3.0-only"),
    (r"gnu lesser general public license,? version 2\.1", "LGPL-2.1-only"),
    (r"gnu general public license,? version 3", "GPL-3.0-only"),
    (r"gnu general public license,? version 2", "GPL-2.0-only"),
    (r"mozilla public license,? version 2\.0", "MPL-2.0"),
    (r"\bcc0 1\.0 universal", "CC0-1.0"),
    *_cc_title_patterns(),
    (r"\bllama 2 community license agreement", "LicenseRef-llama2"),
    (r"\b(?:meta )?llama 3 community license agreement", "LicenseRef-llama3"),
    (r"\bllama (3\.[123]) community license agreement", "LicenseRef-llama{0}"),
    (r"\bllama 4 community license agreement", "LicenseRef-llama4"),
    (r"\bgemma terms of use", "LicenseRef-gemma"),
    (r"\bcreativeml open ?rail-m", "LicenseRef-creativeml-openrail-m"),
    (r"\bbigscience open ?rail-m", "LicenseRef-bigscience-openrail-m"),
    (r"\bbigscience (?:bloom )?rail license v?1\.0", "LicenseRef-bigscience-bloom-rail-1.0"),
    (r"\bbigcode open ?rail-m", "LicenseRef-bigcode-openrail-m"),
    (r"this is free and unencumbered software released into the public domain", "Unlicense"),
    # MIT has no fixed title; its permission notice is the fingerprint (ISC's wording differs).
    (
        r"permission is hereby granted, free of charge, to any person obtaining a copy"
        r".{0,800}the above copyright notice and this permission notice shall be included",
        "MIT",
    ),
    (r"^mit license\b", "MIT"),
    (r"\bbsd 3-clause license\b", "BSD-3-Clause"),
    (r"\bbsd 2-clause license\b", "BSD-2-Clause"),
    # Untitled BSD texts: the third clause ("Neither the name ...") tells 3-clause from 2-clause.
    (r"redistribution and use in source and binary forms.{0,1200}neither the name of", "BSD-3-Clause"),
    (r"redistribution and use in source and binary forms", "BSD-2-Clause"),
]
_COMPILED = [(re.compile(p), license_id) for p, license_id in _TITLE_PATTERNS]
_SPDX_LINE = re.compile(r"spdx-license-identifier:\s*([^\n\r*#]+)", re.IGNORECASE)


def match_license_text(text: str) -> str | None:
    """The license a LICENSE / COPYING / DATA_LICENSE text is, from its title, else None.

    Only the first :data:`TEXT_WINDOW` bytes are examined. An ``SPDX-License-Identifier:`` line wins;
    otherwise the title found EARLIEST in the text wins (a license that quotes another, such as LGPL
    citing the GPL, names itself first). GPL-family texts map to the ``-only`` ids: a bare license
    text does not say "or later".
    """
    head = text[:TEXT_WINDOW]
    tag = _SPDX_LINE.search(head)
    if tag:
        found = normalize_license(tag.group(1).strip())
        if found:
            return found
    flat = " ".join(head.lower().replace("\u2013", "-").split())
    best: tuple[int, int, str] | None = None
    for order, (pattern, license_id) in enumerate(_COMPILED):
        m = pattern.search(flat)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), order, license_id.format(*m.groups()))
    return best[2] if best else None


# --- detection ---------------------------------------------------------------------------------------

# LICENSE files in the order they are consulted; other LICENSE*/COPYING* names follow, sorted.
LICENSE_FILE_ORDER = ("LICENSE", "LICENSE.md", "LICENSE.txt", "COPYING", "DATA_LICENSE")
_LICENSE_NAME = re.compile(r"^(?:licen[cs]e|copying|data_licen[cs]e)(?:[._-].*)?$", re.IGNORECASE)


def is_license_file(name: str) -> bool:
    """Whether a file name is a license text (``LICENSE``, ``LICENSE.md``, ``LICENSE-MIT``,
    ``COPYING``, ``DATA_LICENSE``...). NOTICE and USE_POLICY files are not licenses."""
    return bool(_LICENSE_NAME.match(name))


def _file_order(names: list[str]) -> list[str]:
    def key(name: str) -> tuple[int, str]:
        base = name.rsplit("/", 1)[-1]
        return (
            LICENSE_FILE_ORDER.index(base) if base in LICENSE_FILE_ORDER else len(LICENSE_FILE_ORDER),
            name,
        )

    return sorted(names, key=key)


def _declared(values: Any) -> list[str]:
    """A card field as a list of strings: the Hub allows one string or a list."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, list) and all(isinstance(v, str) for v in values):
        return list(values)
    return []


def _join(ids: list[str]) -> str:
    """Several declared licenses, all of which apply: ``A AND B`` (compound parts parenthesised)."""
    unique = list(dict.fromkeys(ids))
    if len(unique) == 1:
        return unique[0]
    return " AND ".join(f"({i})" if " " in i else i for i in unique)


def detect_license(
    *,
    card_meta: dict | None = None,
    gguf_license: str | None = None,
    license_files: dict[str, str] | None = None,
) -> LicenseFinding:
    """The artifact's license and where it was found.

    Precedence: the card's ``license`` (unless ``other``/``unknown``), then the card's ``license_name``
    (with ``license_link``), then GGUF ``general.license``, then the texts of LICENSE, LICENSE.md,
    LICENSE.txt, COPYING, DATA_LICENSE and other LICENSE* files (``license_files`` maps file name to
    text). A card ``license`` given as a list means every listed license applies (joined with AND);
    it counts only when every entry is recognised. Nothing identified gives ``id="unknown"`` with
    ``source`` naming what was examined and ``name`` the raw declared value, if any.
    """
    meta = card_meta or {}
    link = meta.get("license_link") if isinstance(meta.get("license_link"), str) else None
    looked: list[str] = []
    raw_name: str | None = None

    declared = [v for v in _declared(meta.get("license")) if v.strip().lower() not in NO_LICENSE]
    if declared:
        source = "README.md metadata 'license'"
        looked.append(source)
        ids = [normalize_license(v) for v in declared]
        if all(ids):
            return LicenseFinding(id=_join(ids), source=source, name=None, link=link)  # type: ignore[arg-type]
        raw_name = ", ".join(declared)

    license_name = meta.get("license_name")
    if isinstance(license_name, str) and license_name.strip():
        source = "README.md metadata 'license_name'"
        looked.append(source)
        found = normalize_license(license_name)
        if found:
            return LicenseFinding(id=found, source=source, name=license_name, link=link)
        raw_name = raw_name or license_name

    if isinstance(gguf_license, str) and gguf_license.strip():
        source = "GGUF general.license"
        looked.append(source)
        found = normalize_license(gguf_license)
        if found:
            return LicenseFinding(id=found, source=source, name=None, link=link)
        raw_name = raw_name or gguf_license

    for name in _file_order(list(license_files or {})):
        looked.append(f"file {name}")
        found = match_license_text(license_files[name])  # type: ignore[index]
        if found:
            return LicenseFinding(id=found, source=f"file {name} (title match)", name=raw_name, link=link)

    return LicenseFinding(id="unknown", source=", ".join(looked) or None, name=raw_name, link=link)

"""The license knowledge base: what each license allows and requires, as data with its sources.

One YAML file per license lives in ``owlkit/terms/licenses/<id>.yaml``. Every file has the same eleven
clauses (commercial use, derivatives, share-alike, attribution, naming, use restrictions, training on
outputs, redistribution, hosted service, patent grant, termination); each clause says its value, the
text and section it comes from, and whether someone actually read that text (``verified``). Ids are
the ones :mod:`owlkit.formats.license` produces (``Apache-2.0``, ``LicenseRef-llama3.1``), so a detected
license can be looked up directly; aliases cover Hugging Face tags, ``license_name`` values seen on
the Hub and common names.

The files are checked strictly on load: a malformed file is an :class:`~owlkit.errors.InvalidFile`
naming the file and the problem, never a half-read license.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, NotFound, UsageError

LICENSES_DIR = Path(__file__).with_name("licenses")

FAMILIES = (
    "permissive",
    "copyleft",
    "weak-copyleft",
    "public-domain",
    "creative-commons",
    "open-data",
    "rail",
    "community",
    "research-only",
    "terms-of-service",
)
_PERMISSION = ("yes", "no", "conditional", "unknown")
_YES_NO = ("yes", "no", "unknown")
_OPT_STR = (str, type(None))

# clause -> (allowed values, its extra keys and their types). Extra keys are optional (default None).
# Readings used by the files: patent_grant "yes" only for an express patent license; share_alike "yes"
# when derivatives must carry the same license; outputs_training "conditional" when training on outputs
# is allowed but brings duties (a name prefix, the use restrictions); "unknown" when nobody read it.
CLAUSES: dict[str, tuple[tuple[str, ...], dict[str, tuple[type, ...]]]] = {
    "commercial_use": (_PERMISSION, {"mau_threshold": (int, type(None))}),
    "derivatives": (_PERMISSION, {}),
    "share_alike": (_YES_NO, {}),
    "attribution": (_YES_NO, {"notice_text": _OPT_STR, "notice_file": (bool,)}),
    # text: the required name prefix (or "Built with" line); display_text: a line products must also show
    "naming": (("none", "prefix", "built-with", "unknown"), {"text": _OPT_STR, "display_text": _OPT_STR}),
    "use_restrictions": (_YES_NO, {"pass_down": (bool,), "policy_url": _OPT_STR}),
    "outputs_training": (("allowed", "forbidden", "conditional", "unknown"), {}),
    "redistribution": (_PERMISSION, {}),
    "hosted_service": (_PERMISSION, {}),
    "patent_grant": (_YES_NO, {}),
    "termination": (_YES_NO, {}),
}
_CLAUSE_KEYS = frozenset({"value", "source", "verified", "note"})
_TOP_KEYS = ("id", "name", "url", "aliases", "family", "osi_approved", "version_date", "clauses")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]*")
_DATE = re.compile(r"\d{4}(-\d{2}){0,2}")
_URL = re.compile(r"https?://\S+")


@dataclass(frozen=True)
class Clause:
    """One term of a license. Extra fields apply to one clause each (``mau_threshold`` to
    commercial_use, ``notice_text``/``notice_file`` to attribution, ``text`` to naming,
    ``pass_down``/``policy_url`` to use_restrictions) and are None elsewhere."""

    name: str
    value: str
    source_url: str | None
    source_section: str | None
    verified: bool
    note: str | None = None
    mau_threshold: int | None = None
    notice_text: str | None = None
    notice_file: bool | None = None
    text: str | None = None
    pass_down: bool | None = None
    policy_url: str | None = None
    display_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The clause in the YAML schema's shape (what ``owl licenses ID --json`` prints)."""
        out: dict[str, Any] = {"value": self.value}
        for key in CLAUSES[self.name][1]:
            out[key] = getattr(self, key)
        out["note"] = self.note
        out["source"] = {"url": self.source_url, "section": self.source_section}
        out["verified"] = self.verified
        return out


@dataclass(frozen=True)
class License:
    id: str
    name: str
    url: str
    aliases: tuple[str, ...]
    family: str
    osi_approved: bool
    version_date: str | None
    clauses: dict[str, Clause]

    @property
    def verified_count(self) -> int:
        return sum(c.verified for c in self.clauses.values())

    def to_dict(self) -> dict[str, Any]:
        """The license in the YAML schema's shape: ``validate_license_data(lic.to_dict(), …)`` round-trips."""
        return {
            "id": self.id,
            "name": self.name,
            "url": self.url,
            "aliases": list(self.aliases),
            "family": self.family,
            "osi_approved": self.osi_approved,
            "version_date": self.version_date,
            "clauses": {name: clause.to_dict() for name, clause in self.clauses.items()},
        }


def _show(value: Any) -> str:
    """A value for a one-line message: short, no newlines."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _clause(filename: str, name: str, raw: Any) -> Clause:
    def bad(problem: str) -> InvalidFile:
        return InvalidFile(f"{filename}: clause '{name}': {problem}; see src/owlkit/terms/kb.py CLAUSES")

    allowed, extras = CLAUSES[name]
    if not isinstance(raw, dict):
        raise bad(f"expected a mapping with value/source/verified, got {_show(raw)}")
    unknown = sorted(set(raw) - _CLAUSE_KEYS - set(extras), key=str)
    if unknown:
        raise bad(f"unknown key {_show(unknown[0])} (allowed: {', '.join([*sorted(_CLAUSE_KEYS), *extras])})")
    for key in ("value", "source", "verified"):
        if key not in raw:
            raise bad(f"missing key '{key}'")
    value = raw["value"]
    if isinstance(value, bool):  # YAML 1.1 reads a bare yes/no as a boolean
        value = "yes" if value else "no"
    if value not in allowed:
        raise bad(f"value {_show(value)} is not one of {', '.join(allowed)}")
    source = raw["source"]
    if not isinstance(source, dict) or set(source) != {"url", "section"}:
        raise bad(f"source must be a mapping {{url: …, section: …}}, got {_show(source)}")
    url, section = source["url"], source["section"]
    if url is not None and not (isinstance(url, str) and _URL.fullmatch(url)):
        raise bad(f"source url {_show(url)} is not an http(s) URL or null")
    if section is not None and not isinstance(section, str):
        raise bad(f"source section {_show(section)} must be text or null")
    verified = raw["verified"]
    if not isinstance(verified, bool):
        raise bad(f"verified must be true or false, got {_show(verified)}")
    if verified and url is None:
        raise bad("a verified clause needs source.url (the text that was read)")
    note = raw.get("note")
    if note is not None and not isinstance(note, str):
        raise bad(f"note must be text or null, got {_show(note)}")
    fields: dict[str, Any] = {}
    for key, types in extras.items():
        if key in raw:
            # bool is an int subclass: a threshold of `true` is a typo, not 1
            if not isinstance(raw[key], types) or (bool not in types and isinstance(raw[key], bool)):
                raise bad(f"{key} has the wrong type: {_show(raw[key])}")
            fields[key] = raw[key]
    return Clause(name, value, url, section, verified, note, **fields)


def validate_license_data(data: Any, filename: str) -> License:
    """Check one license file's parsed YAML against the schema and build its :class:`License`.

    Raises :class:`~owlkit.errors.InvalidFile` naming ``filename`` and the first problem found.
    Cross-file checks (duplicate ids and aliases) are :func:`load_license_dir`'s.
    """

    def bad(problem: str) -> InvalidFile:
        return InvalidFile(f"{filename}: {problem}; see src/owlkit/terms/kb.py for the license schema")

    if not isinstance(data, dict):
        raise bad(f"expected a mapping of license fields, got {_show(data)}")
    for key in _TOP_KEYS:
        if key not in data:
            raise bad(f"missing key '{key}'")
    unknown = sorted(set(data) - set(_TOP_KEYS), key=str)
    if unknown:
        raise bad(f"unknown key {_show(unknown[0])} (allowed: {', '.join(_TOP_KEYS)})")
    lid, name, url = data["id"], data["name"], data["url"]
    if not (isinstance(lid, str) and _ID.fullmatch(lid)):
        raise bad(f"id {_show(lid)} is not an SPDX id or LicenseRef-… (letters, digits, '.', '-', '+')")
    if not (isinstance(name, str) and name.strip()):
        raise bad(f"name must be non-empty text, got {_show(name)}")
    if not (isinstance(url, str) and _URL.fullmatch(url)):
        raise bad(f"url {_show(url)} is not an http(s) URL")
    aliases = data["aliases"]
    if not isinstance(aliases, list):
        raise bad(f"aliases must be a list, got {_show(aliases)}")
    for alias in aliases:
        if not (isinstance(alias, str) and alias.strip()) or alias != alias.lower():
            raise bad(f"alias {_show(alias)} must be non-empty lowercase text")
    if len(set(aliases)) != len(aliases):
        dup = next(a for a in aliases if aliases.count(a) > 1)
        raise bad(f"alias {_show(dup)} is listed twice")
    if data["family"] not in FAMILIES:
        raise bad(f"family {_show(data['family'])} is not one of {', '.join(FAMILIES)}")
    if not isinstance(data["osi_approved"], bool):
        raise bad(f"osi_approved must be true or false, got {_show(data['osi_approved'])}")
    version_date = data["version_date"]
    if isinstance(version_date, datetime.date):  # an unquoted 2023-07-18 is a YAML date
        version_date = version_date.isoformat()
    if version_date is not None and not (isinstance(version_date, str) and _DATE.fullmatch(version_date)):
        raise bad(f"version_date {_show(version_date)} is not YYYY, YYYY-MM, YYYY-MM-DD or null")
    clauses = data["clauses"]
    if not isinstance(clauses, dict):
        raise bad(f"clauses must be a mapping, got {_show(clauses)}")
    for clause in CLAUSES:
        if clause not in clauses:
            raise bad(f"missing clause '{clause}'")
    unknown = sorted(set(clauses) - set(CLAUSES), key=str)
    if unknown:
        raise bad(f"unknown clause {_show(unknown[0])} (allowed: {', '.join(CLAUSES)})")
    return License(
        id=lid,
        name=name,
        url=url,
        aliases=tuple(aliases),
        family=data["family"],
        osi_approved=data["osi_approved"],
        version_date=version_date,
        clauses={c: _clause(filename, c, clauses[c]) for c in CLAUSES},
    )


def load_license_file(path: Path) -> License:
    """Read and validate one license YAML (``yaml.safe_load``: plain data, no tags)."""
    import yaml  # only when the knowledge base is first read: importing owlkit stays fast

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidFile(f"{path.name}: not UTF-8 text ({e.reason}); save the license file as UTF-8") from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise InvalidFile(
            f"{path.name}: YAML syntax error{where}: {problem}; fix the file (quote text with ':' or '\"')"
        ) from e
    return validate_license_data(data, path.name)


def _index(licenses: Iterable[tuple[str, License]]) -> dict[str, str]:
    """Every lowercase id and alias -> id; a name claimed twice is an error naming both files."""
    index: dict[str, str] = {}
    owner: dict[str, str] = {}  # id -> file name, for the message
    for filename, lic in licenses:
        if lic.id in owner:
            raise InvalidFile(
                f"{filename}: id '{lic.id}' is already defined in {owner[lic.id]}; keep one file per license"
            )
        owner[lic.id] = filename
        for key in {lic.id.lower(), *lic.aliases}:
            other = index.get(key)
            if other is not None and other != lic.id:
                raise InvalidFile(
                    f"{filename}: alias '{key}' is already used by {other} ({owner[other]}); an alias names one license"
                )
            index[key] = lic.id
    return index


def _load(folder: Path) -> tuple[dict[str, License], dict[str, str]]:
    found: list[tuple[str, License]] = []
    for path in sorted(folder.glob("*.yaml")):
        lic = load_license_file(path)
        if path.name != f"{lic.id}.yaml":
            raise InvalidFile(f"{path.name}: holds license '{lic.id}'; rename the file to '{lic.id}.yaml'")
        found.append((path.name, lic))
    index = _index(found)
    return {lic.id: lic for _, lic in found}, index


def load_license_dir(folder: Path) -> dict[str, License]:
    """Every ``*.yaml`` license in ``folder``, validated, by id. File names must be ``<id>.yaml``."""
    return _load(folder)[0]


@functools.cache
def _kb() -> tuple[dict[str, License], dict[str, str]]:
    return _load(LICENSES_DIR)


def load_kb() -> dict[str, License]:
    """The packaged knowledge base by id (read once per process; treat it as read-only)."""
    return _kb()[0]


def find_license(id_or_alias: str) -> License:
    """A license by id, alias, Hugging Face tag or common name, in any case.

    Names the index does not hold go through :func:`owlkit.formats.license.normalize_license`
    (``Apache License, Version 2.0`` -> ``Apache-2.0``). Unknown names raise
    :class:`~owlkit.errors.NotFound` suggesting the closest ids.
    """
    licenses, index = _kb()
    key = " ".join(str(id_or_alias).split()).lower()
    found = index.get(key)
    if found is None and key:
        from owlkit.formats.license import normalize_license

        normalized = normalize_license(id_or_alias)
        found = index.get(normalized.lower()) if normalized else None
    if found is not None:
        return licenses[found]
    import difflib

    close = dict.fromkeys(index[k] for k in difflib.get_close_matches(key, list(index), n=5, cutoff=0.6))
    hint = f"did you mean {', '.join(list(close)[:3])}? " if close else ""
    raise NotFound(
        f"license '{id_or_alias}' is not in owlkit's license knowledge base; {hint}`owl licenses` lists the known ones"
    )


def licenses_in(expression: str) -> list[str]:
    """The licenses an SPDX expression names, in order, without operators or exceptions.

    ``"mit OR apache-2.0"`` -> ``["MIT", "Apache-2.0"]``; Hugging Face tags are normalised first
    (``"llama3.1 AND cc-by-nc-4.0"`` -> ``["LicenseRef-llama3.1", "CC-BY-NC-4.0"]``). The ids are
    not checked against the knowledge base: look each up with :func:`find_license`.
    """
    from license_expression import ExpressionError, LicenseWithExceptionSymbol

    from owlkit.formats.license import normalize_license, spdx_licensing

    licensing = spdx_licensing()
    try:
        parsed = licensing.parse(normalize_license(expression) or expression, validate=False)
    except (ExpressionError, RecursionError) as e:
        raise UsageError(f"license expression {_show(expression)} does not parse: {e}") from e
    if parsed is None:
        return []
    keys: list[str] = []
    for symbol in licensing.license_symbols(parsed, unique=True, decompose=False):
        if isinstance(symbol, LicenseWithExceptionSymbol):
            symbol = symbol.license_symbol
        if symbol.key not in keys:
            keys.append(symbol.key)
    return keys

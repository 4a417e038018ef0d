"""MOF's 17 components and the rule owlkit finds each by, read from ``mof.yaml`` beside this module.

The table is data (a maintainer edits the YAML, not code); it is read once per process, on first use, so
importing owlkit costs nothing for it.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, UsageError

MOF_DATA = Path(__file__).with_name("mof.yaml")
CLASSES = ("III", "II", "I")  # from least to most open: each includes the ones before it
CLASS_LABELS = {
    "I": "Class I - Open Science",
    "II": "Class II - Open Tooling",
    "III": "Class III - Open Model",
    "none": "Unclassified",
}
LAYERS = ("weights", "code", "data", "governance")
CONTENT_TYPES = ("code", "data", "document")


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


@functools.cache
def mof_data() -> dict[str, Any]:
    """``mof.yaml`` as parsed (read once per process; treat it as read-only)."""
    import yaml

    return yaml.safe_load(MOF_DATA.read_text(encoding="utf-8"))


def _rule(raw: dict[str, Any]) -> Rule:
    known = {f.name for f in fields(Rule)}
    unknown = set(raw) - known
    if unknown:  # a typo in the packaged table would otherwise make a rule silently match less
        raise InvalidFile(f"mof.yaml: unknown rule keys {sorted(unknown)}; reinstall owlkit")
    return Rule(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def _component(raw: dict[str, Any]) -> Component:
    comp = Component(
        id=raw["id"],
        name=raw["name"],
        mof_class=raw["class"],
        required=raw["required"],
        content=raw["content"],
        layer=raw["layer"],
        rule=_rule(raw["rule"]),
    )
    if comp.mof_class not in CLASSES or comp.content not in CONTENT_TYPES or comp.layer not in LAYERS:
        raise InvalidFile(f"mof.yaml: {comp.name}: unknown class, content or layer; reinstall owlkit")
    return comp


@functools.cache
def components() -> tuple[Component, ...]:
    """The 17 components, from the least open class to the most, as the table lists them."""
    return tuple(_component(raw) for raw in mof_data()["components"])


@functools.cache
def by_name() -> dict[str, Component]:
    return {c.name: c for c in components()}


def _key(name: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", name.lower()).split())


def find_component(name: str) -> Component:
    """The component named (case, spaces and punctuation ignored), or a one-line UsageError listing all."""
    wanted = _key(name)
    for c in components():
        if _key(c.name) == wanted:
            return c
    names = ", ".join(c.name for c in components())
    raise UsageError(f"unknown component {name!r}: choose one of {names}")

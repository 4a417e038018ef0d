"""Finding a component on a stored artifact: what the rules look at (files, card, lineage, recipe),
gathered once per artifact, and each rule's sources tried in order."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from owlkit.errors import NotFound
from owlkit.store.store import Record, Store
from owlkit.terms.openness.cards import card_sections
from owlkit.terms.openness.components import Component


@dataclass
class Match:
    source: str  # recipe | lineage | facts | card | card-metadata | card-section | files | attachment
    evidence: str
    license: str


@dataclass
class Context:
    """What the rules look at, gathered once per artifact."""

    rec: Record
    files: list[str]
    card_meta: dict[str, Any]
    sections: list[tuple[str, str]]
    has_card: bool
    parents: dict[str, list[Record]]  # relation -> stored parents
    unresolved: dict[str, list[str]]  # relation -> names of parents not in the store
    owlkit_license: str


def gather(store: Store, rec: Record) -> Context:
    from owlkit.formats.card import MAX_CARD_BYTES, parse_card

    card_meta = rec.info.card
    readme = next((f for f in rec.manifest.files if f.path.lower() == "readme.md"), None)
    body = ""
    if readme is not None:
        try:
            with open(store.blobs.path(readme.sha256), "rb") as fh:
                body = parse_card(fh.read(MAX_CARD_BYTES).decode("utf-8", errors="replace"))[1]
        except FileNotFoundError:
            body = ""  # a missing blob is `owl verify`'s to report; the card metadata still counts
    parents, unresolved = _lineage(store, rec)
    return Context(
        rec=rec,
        files=[f.path for f in rec.manifest.files],
        card_meta=card_meta or {},
        sections=card_sections(body),
        has_card=readme is not None and bool(card_meta),
        parents=parents,
        unresolved=unresolved,
        owlkit_license=_owlkit_license(),
    )


def _lineage(store: Store, rec: Record) -> tuple[dict[str, list[Record]], dict[str, list[str]]]:
    """The artifact's stored parents by relation, and the names of those not in the store.

    A merge, quantization or conversion was trained on what its weights were trained on: data edges
    are followed up through weight-derivative edges (as `owl terms` does)."""
    from owlkit.terms.propagate import WEIGHT_EDGES

    parents: dict[str, list[Record]] = {}
    unresolved: dict[str, list[str]] = {}
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
    return parents, unresolved


def _owlkit_license() -> str:
    """owlkit's own license: the license of the code a recorded recipe ran."""
    from importlib import metadata  # slow to import: only when an artifact is rated

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


def short_list(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _glob_match(path: str, pattern: str) -> bool:
    path, pattern = path.lower(), pattern.lower()
    target = path if "/" in pattern else path.rsplit("/", 1)[-1]
    return fnmatch.fnmatchcase(target, pattern)


def detect(comp: Component, ctx: Context) -> list[Match]:
    """Every source of the component's rule that matches, in the rule's order.

    Where a match's license comes from mirrors MOT's resolution (component license, else the
    release's): a dataset's license for lineage matches, owlkit's license for code a recorded recipe
    ran, and the artifact's license for its own files, facts and card."""
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
            if p.info.card and any(f.path.lower() == "readme.md" for f in p.manifest.files)
        ]
        picked = carded if r.parent_card else datasets
        if datasets and len(picked) == len(datasets):
            names = [f"{p.name} ({p.manifest.license})" for p in picked]
            what = "README.md card of " if r.parent_card else ""
            found.append(
                Match(
                    "lineage",
                    f"{r.relation} {what}{short_list(names)}",
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
                Match("card-section", "README.md section " + short_list([repr(h) for h in heads]), own)
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
            found.append(Match("files", short_list(hits), own))
    return found

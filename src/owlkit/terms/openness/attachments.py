"""``owl attach``: components that live elsewhere (a paper, a code repository, a dataset), recorded with
their license in the artifact's side record, so its manifest and digest never change.

An attachment takes precedence over detection, since a person said so.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from owlkit.errors import NotFound, UsageError
from owlkit.store.store import Record, Store
from owlkit.terms.openness.components import by_name, find_component

ATTACHMENTS = "attachments"  # side-record key: {component name: Attachment.to_dict()}
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+")


@dataclass
class Attachment:
    """A component that lives elsewhere, recorded beside an artifact (its digest does not change)."""

    component: str
    url: str
    license: str
    added_at: float
    license_given: str | None = None  # what the user typed, when it did not normalise

    def to_dict(self) -> dict[str, Any]:
        """The side record's entry (the component is its key)."""
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
    known = by_name()
    for name, a in raw.items():
        if name in known and isinstance(a, dict) and isinstance(a.get("url"), str):
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
    current = {name: a.to_dict() for name, a in attachments_of(rec).items()}
    replaced = comp.name in current
    current[comp.name] = att.to_dict()
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
    store.update_side(rec.digest, **{ATTACHMENTS: {n: a.to_dict() for n, a in current.items()}})
    return gone

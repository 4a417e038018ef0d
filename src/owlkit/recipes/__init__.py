"""Recipes: every command that derives an artifact is ``inputs + params (a dataclass) -> new artifact``.

A recipe records its name, params, input digests and seed in the new manifest (hashed), and library
versions, host facts and timings in the side record (not hashed). :func:`store_output` is the one way a
recipe's output folder becomes an artifact.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from importlib import metadata
from typing import Any

from owlkit.formats.base import Inspected
from owlkit.store.manifest import FileEntry, Manifest, Parent, Recipe
from owlkit.store.store import Record, Store

TRACKED_LIBRARIES = ("owlkit", "torch", "transformers", "tokenizers", "safetensors", "gguf", "peft", "numpy")


def environment() -> dict[str, Any]:
    """What bit-identity depends on, recorded beside (not inside) every derived manifest."""
    libs = {}
    for lib in TRACKED_LIBRARIES:
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    return {
        "libraries": libs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


def make_recipe(name: str, params: Any, inputs: dict[str, str], seed: int | None = None) -> Recipe:
    return Recipe(name=name, params=asdict(params), inputs=inputs, seed=seed)


def store_output(
    store: Store,
    ins: Inspected,
    *,
    recipe: Recipe,
    parents: list[Parent],
    license: str,
    side: dict[str, Any],
    name: str | None,
    started: float,
) -> str:
    """Hash a recipe's output (described by a format reader) into the store and commit it."""
    with store.session() as s:
        files = []
        for rel in ins.files:
            hexdigest, size = s.put_file(ins.path_of(rel))
            files.append(FileEntry(rel, size, hexdigest))
        manifest = Manifest(
            kind=ins.kind,
            format=ins.format,
            files=files,
            facts=ins.facts,
            license=license,
            parents=parents,
            recipe=recipe,
        )
        full_side = {
            "flags": ins.flags,
            "warnings": ins.warnings,
            **ins.side,
            **side,
            "environment": environment(),
            "seconds": round(time.time() - started, 3),
        }
        return store.commit(manifest, full_side, name=name)


def inherited_license(source: Record, relation: str) -> dict[str, Any]:
    lic = dict(source.side.get("license") or {})
    lic["id"] = source.manifest.license
    lic["source"] = f"{source.name} via {relation}"
    return lic


def derived_origin(source: Record, recipe: str) -> dict[str, Any]:
    origin = {"derived_from": source.digest, "recipe": recipe}
    up = source.side.get("origin") or {}
    for key in ("repo_id", "revision"):
        if up.get(key):
            origin[key] = up[key]
    return origin

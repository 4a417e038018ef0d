"""Recipes: every command that derives an artifact is ``inputs + params (a dataclass) -> new artifact``.

A recipe records its name, params, input digests and seed in the new manifest (hashed), and library
versions, host facts and timings in the side record (not hashed). :func:`store_output` is the one way a
recipe's output becomes an artifact (or, for `owl rebuild`, a captured folder that
:func:`store_captured` may store later).

Each recipe module exports ``NAME`` (the name its manifests record), ``Params`` (its dataclass) and
``run(store, inputs, params, *, name=None, capture=None)``; ``recipes/registry.py`` lists them all.
The same package holds the rest of the store-bound work on artifacts: import (``importer.py``), rebuild
and diff.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from owlkit.formats.base import Inspected, sha256_file
from owlkit.store.manifest import FileEntry, Manifest, Parent, Recipe
from owlkit.store.store import Record, Store

TRACKED_LIBRARIES = ("owlkit", "torch", "transformers", "tokenizers", "safetensors", "gguf", "peft", "numpy")


def environment() -> dict[str, Any]:
    """What bit-identity depends on, recorded beside (not inside) every derived manifest."""
    import platform
    from importlib import metadata

    libs = {}
    for lib in TRACKED_LIBRARIES:
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "libraries": libs,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        **_cpu(),
    }
    torch = sys.modules.get("torch")  # only when the recipe used it: recording must not import it
    if torch is not None:
        env["threads"] = torch.get_num_threads()
        env["deterministic_algorithms"] = torch.are_deterministic_algorithms_enabled()
    return env


# The instruction sets whose presence changes which kernels torch, oneDNN and ggml pick (and so the
# rounding of their results); the full flag list holds many that do not matter.
_SIMD = ("sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
         "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile", "asimd", "sve", "sve2")  # fmt: skip


def _cpu() -> dict[str, Any]:
    """The CPU model and its SIMD flags, from /proc/cpuinfo (Linux); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and model is None:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "cpu_flags": [f for f in _SIMD if f in flags]}


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
    capture: Path | None = None,
) -> str:
    """Hash a recipe's output (described by a format reader) into the store and commit it; its digest.

    With ``capture`` (`owl rebuild`), nothing is stored: the files, manifest and side record go under
    that folder (``files/``, ``manifest.json``, ``side.json``) and the digest is the one it would have."""
    side = {**side, "inputs": _inputs_side(store, recipe)}
    with contextlib.nullcontext() if capture is not None else store.session() as session:
        files = []
        for rel in ins.files:
            hexdigest, size = _put(session, capture, ins.path_of(rel), rel)
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
        if capture is None:
            return store.commit(manifest, full_side, name=name)
    (capture / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))
    (capture / "side.json").write_text(json.dumps(full_side, indent=1, sort_keys=True, default=str))
    return manifest.digest()


def _put(session: Any, capture: Path | None, src: Path, rel: str) -> tuple[str, int]:
    """(sha256, size) of one output file, put into the store's session, or copied into the capture folder."""
    if capture is None:
        return session.put_file(src)
    dest = capture / "files" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return sha256_file(dest), dest.stat().st_size


def read_captured(capture: Path) -> tuple[Manifest, dict[str, Any]]:
    """The manifest and side record :func:`store_output` wrote under ``capture``."""
    manifest = Manifest.from_json(json.loads((capture / "manifest.json").read_text()))
    return manifest, json.loads((capture / "side.json").read_text())


def store_captured(store: Store, capture: Path, *, name: str | None, side: dict[str, Any]) -> str:
    """Store what :func:`store_output` captured, its side record updated with ``side``; its digest."""
    manifest, recorded = read_captured(capture)
    with store.session() as session:
        for f in manifest.files:
            session.put_file(capture / "files" / f.path)
        return store.commit(manifest, {**recorded, **side}, name=name)


def _inputs_side(store: Store, recipe: Recipe) -> dict[str, Any]:
    """Each input's name and origin when the recipe ran, so a rebuild can say where a missing one came from."""
    out = {}
    for role, digest in recipe.inputs.items():
        try:
            rec = store.get(digest)
        except Exception:  # an input removed meanwhile: its digest is still in the recipe
            continue
        out[role] = {"digest": digest, "name": rec.name, "origin": rec.side.get("origin")}
    return out


def write_card(folder: Path, meta: dict[str, Any], body: str) -> None:
    """A model card: YAML front matter (sorted keys, so the same inputs give the same bytes) + Markdown."""
    import yaml

    (folder / "README.md").write_text(
        "---\n" + yaml.safe_dump(meta, sort_keys=True) + "---\n" + body, encoding="utf-8"
    )


def inherited_license(source: Record, relation: str) -> dict[str, Any]:
    lic = source.info.license
    lic["id"] = source.manifest.license
    lic["source"] = f"{source.name} via {relation}"
    return lic


def derived_origin(source: Record, recipe: str) -> dict[str, Any]:
    origin = {"derived_from": source.digest, "recipe": recipe}
    up = source.info.origin
    if up.repo_id:
        origin["repo_id"] = up.repo_id
    if up.revision:
        origin["revision"] = up.revision
    return origin

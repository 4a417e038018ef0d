"""Recipes: every command that derives an artifact is ``inputs + params (a dataclass) -> new artifact``.

A recipe records its name, params, input digests and seed in the new manifest (hashed), and library
versions, host facts and timings in the side record (not hashed). :func:`store_output` is the one way a
recipe's output folder becomes an artifact.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from owlkit.formats.base import Inspected, sha256_file
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


_capture: Path | None = None  # set by `owl rebuild`'s child: recipe outputs go here, not into the store


@contextmanager
def capture_outputs(folder: Path) -> Iterator[None]:
    """While active, :func:`store_output` writes the output's files, manifest and side record under
    ``folder`` (``files/``, ``manifest.json``, ``side.json``) instead of committing it: `owl rebuild`
    compares a re-derived artifact without adding it to the store."""
    global _capture
    _capture = folder
    try:
        yield
    finally:
        _capture = None


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
    """Hash a recipe's output (described by a format reader) into the store and commit it; while
    :func:`capture_outputs` is active, write it under the capture folder instead (see there)."""
    side = {**side, "inputs": _inputs_side(store, recipe)}
    with contextlib.nullcontext() if _capture is not None else store.session() as session:
        files = []
        for rel in ins.files:
            hexdigest, size = _put(session, ins.path_of(rel), rel)
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
        if _capture is None:
            return store.commit(manifest, full_side, name=name)
    (_capture / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=1, sort_keys=True))
    (_capture / "side.json").write_text(json.dumps(full_side, indent=1, sort_keys=True, default=str))
    return manifest.digest()


def _put(session: Any, src: Path, rel: str) -> tuple[str, int]:
    """(sha256, size) of one output file, put into the store's session, or copied into the capture folder."""
    if session is not None:
        return session.put_file(src)
    assert _capture is not None
    dest = _capture / "files" / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return sha256_file(dest), dest.stat().st_size


def capturing() -> bool:
    """Whether outputs are being captured for `owl rebuild` rather than stored."""
    return _capture is not None


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

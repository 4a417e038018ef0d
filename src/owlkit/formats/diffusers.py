"""diffusers pipelines: a folder with ``model_index.json`` naming one sub-folder per component
(``unet/``, ``vae/``, ``text_encoder/``...). Read from JSON and safetensors headers; diffusers is not
imported."""

from __future__ import annotations

from pathlib import Path

from owlkit.errors import InvalidFile
from owlkit.formats.base import Inspected
from owlkit.formats.hf_folder import (
    folder_notes,
    folder_origin,
    read_json,
    scan_weights,
    walk_folder,
)

INDEX = "model_index.json"


def _component(rel: str) -> str:
    """A file's pipeline component: its top folder ("" for files at the top)."""
    return rel.split("/", 1)[0] if "/" in rel else ""


def inspect_pipeline(path: Path) -> Inspected:
    """A diffusers pipeline folder as an artifact (kind "pipeline", format "diffusers").

    facts: ``pipeline_class`` (``_class_name``) and ``components`` (sorted names of the components
    model_index.json sets; ``[null, null]`` entries are absent components). Pickles are left out per
    component when that component has safetensors weights.
    """
    path = Path(path)
    warnings: list[str] = []
    files = walk_folder(path, warnings)
    if INDEX not in files:
        raise InvalidFile(f"{path}: no {INDEX}, so not a diffusers pipeline folder")
    index = read_json(path, INDEX)
    pipeline_class = index.get("_class_name")
    if not isinstance(pipeline_class, str) or not pipeline_class:
        raise InvalidFile(f"{INDEX}: no '_class_name'; not a diffusers pipeline index, re-save the pipeline")
    components = sorted(
        name
        for name, spec in index.items()
        if not name.startswith("_") and isinstance(spec, list) and len(spec) == 2 and spec[1] is not None
    )
    weights = scan_weights(path, files, group=_component)
    warnings += weights.warnings
    missing = [c for c in components if not any(rel.startswith(c + "/") for rel in files)]
    if missing:
        warnings.append(f"{INDEX}: components without a folder: {', '.join(missing)}")

    flags, side, terms = folder_notes(path, weights, files, {}, warnings)
    side["diffusers_version"] = index.get("_diffusers_version")

    return Inspected(
        kind="pipeline",
        format="diffusers",
        root=path,
        files=weights.files,
        facts={"pipeline_class": pipeline_class, "components": components},
        license=terms.license,
        origin=folder_origin(path),
        flags=flags,
        warnings=warnings,
        side=side,
    )

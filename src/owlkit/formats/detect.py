"""Which reader understands a path: the one dispatch ``owl import`` uses."""

from __future__ import annotations

from pathlib import Path

from owlkit.errors import InvalidFile, NotFound
from owlkit.formats.base import Inspected, Origin

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".txt")


def inspect_path(path: Path) -> Inspected:
    """Describe ``path`` (file or folder) as an artifact, validating every file it would store."""
    if not path.exists():
        raise NotFound(f"{path}: no such file or folder")
    if path.is_dir():
        return _inspect_folder(path)
    return _inspect_file(path)


def _inspect_folder(path: Path) -> Inspected:
    if (path / "adapter_config.json").is_file():
        from owlkit.formats.peft import inspect_peft

        return inspect_peft(path)
    if (path / "model_index.json").is_file():
        from owlkit.formats.diffusers import inspect_pipeline

        return inspect_pipeline(path)
    if (path / "config.json").is_file():
        from owlkit.formats.hf_folder import inspect_hf_folder

        return inspect_hf_folder(path)
    if any(p.suffix.lower() in DATA_SUFFIXES for p in path.iterdir() if p.is_file()):
        from owlkit.formats.datasets import inspect_dataset

        return inspect_dataset(path)
    raise InvalidFile(
        f"{path}: not a model, adapter, dataset or pipeline folder "
        "(expected config.json, adapter_config.json, model_index.json or data files)"
    )


def _inspect_file(path: Path) -> Inspected:
    suffix = path.suffix.lower()
    if suffix == ".gguf":
        return inspect_gguf(path)
    if suffix == ".safetensors":
        return inspect_safetensors(path)
    from owlkit.formats.pickles import PICKLE_SUFFIXES, looks_like_pickle

    if suffix in PICKLE_SUFFIXES or looks_like_pickle(path):
        return Inspected(
            kind="model",
            format="pickle",
            root=path,
            files=[path.name],
            origin=Origin(source_path=str(path.resolve())),
            flags=["pickle-weights"],
            side={"pickle_weights": [path.name]},
        )
    if suffix in DATA_SUFFIXES:
        from owlkit.formats.datasets import inspect_dataset

        return inspect_dataset(path)
    raise InvalidFile(
        f"{path.name}: unrecognised file type; owl imports .gguf, .safetensors, model folders and datasets"
    )


def inspect_gguf(path: Path) -> Inspected:
    from owlkit.formats.gguf import gguf_facts, gguf_license, gguf_origin, gguf_type_histogram, read_gguf
    from owlkit.formats.license import detect_license

    g = read_gguf(path)
    repo_id, revision, via = gguf_origin(g)
    template = g.metadata.get("tokenizer.chat_template")
    return Inspected(
        kind="adapter" if g.metadata.get("general.type") == "adapter" else "model",
        format="gguf",
        root=path,
        files=[path.name],
        facts=gguf_facts(g),
        license=detect_license(gguf_license=gguf_license(g)),
        origin=Origin(source_path=str(path.resolve()), repo_id=repo_id, revision=revision, via=via),
        warnings=list(g.warnings),
        side={
            "gguf": {
                "version": g.version,
                "name": g.metadata.get("general.name"),
                "tensor_types": gguf_type_histogram(g),
                "has_chat_template": isinstance(template, str),
            }
        },
    )


def inspect_safetensors(path: Path) -> Inspected:
    from owlkit.formats.safetensors import read_safetensors_header

    h = read_safetensors_header(path)
    return Inspected(
        kind="model",
        format="safetensors",
        root=path,
        files=[path.name],
        facts={"parameters": h.parameters, "dtype": h.dtype_summary()},
        origin=Origin(source_path=str(path.resolve())),
        side={"safetensors_metadata": h.metadata},
    )

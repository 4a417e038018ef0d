"""PEFT adapters (``adapter_config.json`` + ``adapter_model.safetensors``), as peft's ``save_pretrained``
writes them. Read from JSON and the safetensors header alone: peft is not imported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile
from owlkit.formats.base import Inspected
from owlkit.formats.hf_folder import (
    folder_notes,
    folder_origin,
    read_json,
    scan_weights,
    walk_folder,
    weight_facts,
)

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLE_WEIGHTS = "adapter_model.bin"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_config(config: dict) -> None:
    """Reject configs whose fields have the wrong types: they would mislead every later step."""

    def bad(field: str, expected: str) -> None:
        raise InvalidFile(
            f"{CONFIG}: '{field}' must be {expected}, found {config[field]!r}; fix or re-save the adapter"
        )

    if not isinstance(config.get("peft_type"), str) or not config["peft_type"]:
        raise InvalidFile(f"{CONFIG}: no 'peft_type'; not a PEFT adapter config, re-save it with peft")
    if "r" in config and not (type(config["r"]) is int and config["r"] > 0):
        bad("r", "a positive integer")
    if config.get("lora_alpha") is not None and not _number(config["lora_alpha"]):
        bad("lora_alpha", "a number")
    targets = config.get("target_modules")
    if targets is not None and not (
        isinstance(targets, str) or (isinstance(targets, list) and all(isinstance(t, str) for t in targets))
    ):
        bad("target_modules", "a list of module names or a regex string")
    for key in ("use_rslora", "use_dora"):
        if config.get(key) is not None and not isinstance(config[key], bool):
            bad(key, "true or false")
    for key in ("task_type", "base_model_name_or_path", "revision"):
        if config.get(key) is not None and not isinstance(config[key], str):
            bad(key, "a string")
    saved = config.get("modules_to_save")
    if saved is not None and not (isinstance(saved, list) and all(isinstance(m, str) for m in saved)):
        bad("modules_to_save", "a list of module names")


def inspect_peft(path: Path) -> Inspected:
    """A PEFT adapter folder as an artifact (kind "adapter", format "peft").

    ``base_ref`` is the config's ``base_model_name_or_path`` (its ``revision`` goes to side as
    ``base_revision``). facts: peft_type, r, lora_alpha, use_rslora, use_dora, target_modules (sorted
    list, or the regex string), task_type, modules_to_save, parameters and dtype (from the header).
    """
    path = Path(path)
    warnings: list[str] = []
    files = walk_folder(path, warnings)
    if CONFIG not in files:
        raise InvalidFile(f"{path}: no {CONFIG}, so not a PEFT adapter folder")
    config = read_json(path, CONFIG)
    _check_config(config)
    weights = scan_weights(path, files)
    warnings += weights.warnings
    if WEIGHTS not in weights.headers and PICKLE_WEIGHTS not in weights.pickle_weights:
        raise InvalidFile(f"{path}: no {WEIGHTS} beside {CONFIG}; the adapter weights are missing")
    parameters, dtype = weight_facts([weights.headers[WEIGHTS]] if WEIGHTS in weights.headers else [])

    targets = config.get("target_modules")
    saved = config.get("modules_to_save")
    facts: dict[str, Any] = {
        "peft_type": config["peft_type"],
        "r": config.get("r"),
        "lora_alpha": config.get("lora_alpha"),
        "use_rslora": config.get("use_rslora", False),
        "use_dora": config.get("use_dora", False),
        "target_modules": sorted(set(targets)) if isinstance(targets, list) else targets,
        "task_type": config.get("task_type"),
        "modules_to_save": sorted(saved) if isinstance(saved, list) else None,
        "parameters": parameters,
        "dtype": dtype,
    }

    flags, side, terms = folder_notes(path, weights, files, {CONFIG: config}, warnings)
    if config.get("revision"):
        side["base_revision"] = config["revision"]

    return Inspected(
        kind="adapter",
        format="peft",
        root=path,
        files=weights.files,
        facts=facts,
        license=terms.license,
        origin=folder_origin(path),
        base_ref=config.get("base_model_name_or_path"),
        flags=flags,
        warnings=warnings,
        side=side,
    )

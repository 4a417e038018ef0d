"""Combine PEFT LoRA adapters of one base into one adapter with PEFT's own ``add_weighted_adapter``:
paths in, a PEFT folder out.

The base is loaded once with every adapter; the combination is PEFT's, so its semantics (linear on the
A and B factors, svd of the summed deltas, ties / dare_ties trimming) are exactly PEFT's. Only the
combined adapter is saved. The result is a pure function of (adapters, weights, method, density,
svd_rank, seed): torch is seeded right before the combination (dare_ties draws random masks) and runs
with deterministic algorithms, and the saved config's set-valued fields are sorted (PEFT writes
``list(set)``, whose order changes between processes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, Refused, UsageError, missing_extra, with_article

METHODS = ("linear", "svd", "ties", "dare_ties")
DENSITY_METHODS = ("ties", "dare_ties")
_COMBINED = "combined"  # PEFT adapter name of the result while it lives in the model


def adapter_ranks(config: dict[str, Any]) -> list[int]:
    """Every rank an adapter uses: ``r`` and its per-module ``rank_pattern`` overrides."""
    return sorted({int(config.get("r") or 0), *(int(v) for v in (config.get("rank_pattern") or {}).values())})


def check_combinable(names: list[str], configs: list[dict[str, Any]], method: str) -> None:
    """Refuse, before any loading, what ``add_weighted_adapter`` cannot combine correctly.

    ``names`` label the adapters in messages; ``configs`` are their ``adapter_config.json`` contents."""
    for name, cfg in zip(names, configs, strict=True):
        if cfg.get("peft_type") != "LORA":
            raise Refused(
                f"{name} is {with_article(cfg.get('peft_type'))} adapter; owl merge-adapters combines LoRA adapters"
            )
        if cfg.get("use_dora"):
            # PEFT combines the A/B factors but not DoRA's magnitude vectors: the result would be wrong.
            raise Refused(
                f"{name} is a DoRA adapter, which PEFT's add_weighted_adapter cannot combine "
                "(it drops the magnitude vectors): merge it into its base with `owl merge` instead"
            )
        if cfg.get("use_rslora"):
            # The combined config inherits use_rslora with lora_alpha = r, scaling the result by sqrt(r).
            raise Refused(
                f"{name} uses rsLoRA scaling, which PEFT's add_weighted_adapter mis-scales in the result: "
                "combine plain LoRA adapters, or `owl merge` it into its base"
            )
    if method == "svd":
        return
    ranks = [adapter_ranks(c) for c in configs]
    if len({tuple(r) for r in ranks}) > 1 or any(len(r) > 1 for r in ranks):
        shown = ", ".join(f"{n} r={'/'.join(map(str, r))}" for n, r in zip(names, ranks, strict=True))
        raise UsageError(
            f"--method {method} needs adapters of equal rank ({shown}): use --method svd "
            "(optionally --svd-rank R) to combine unequal ranks"
        )


def combine_adapters(
    model: Any,
    adapter_dirs: list[Path],
    out_dir: Path,
    *,
    weights: list[float],
    method: str,
    density: float | None,
    svd_rank: int | None,
    seed: int,
    base_ref: str | None,
) -> None:
    """Load ``adapter_dirs`` onto ``model`` (a transformers model, loaded once) and write their PEFT
    ``method`` combination with ``weights`` as a PEFT folder ``out_dir`` (created, must not exist).
    ``base_ref`` becomes the saved config's ``base_model_name_or_path``."""
    import torch

    try:
        from peft import PeftModel
    except ImportError:
        raise missing_extra("peft", "ml", "combining adapters") from None
    if method not in METHODS:
        raise UsageError(f"--method {method!r} is not supported: choose one of {', '.join(METHODS)}")
    if len(weights) != len(adapter_dirs):
        raise UsageError(
            f"{len(weights)} weights for {len(adapter_dirs)} adapters: give one weight per adapter"
        )
    names = [f"a{i}" for i in range(len(adapter_dirs))]
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dirs[0]), adapter_name=names[0])
        for name, folder in zip(names[1:], adapter_dirs[1:], strict=True):
            peft_model.load_adapter(str(folder), adapter_name=name)
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidFile(f"peft cannot load the adapters onto their base ({first})") from None

    kwargs: dict[str, Any] = {}
    if method in DENSITY_METHODS:
        kwargs["density"] = density
    if method == "svd" and svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)  # right before: dare_ties' masks (and svd) draw from the global generator
        with torch.no_grad():
            peft_model.add_weighted_adapter(
                names, list(weights), _COMBINED, combination_type=method, **kwargs
            )
    except ValueError as e:  # PEFT's own checks (modules_to_save overlap, mixed target_modules types)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Refused(f"PEFT cannot combine these adapters with --method {method}: {first}") from None
    finally:
        torch.use_deterministic_algorithms(was_deterministic)

    tmp = out_dir.parent / (out_dir.name + ".save")
    try:
        # save_embedding_layers=False: only the adapter's own tensors (and no Hub look-up of the base).
        peft_model.save_pretrained(str(tmp), selected_adapters=[_COMBINED], save_embedding_layers=False)
        nested = tmp / _COMBINED  # PEFT saves a non-"default" adapter in a subfolder named after it
        shutil.move(str(nested if nested.is_dir() else tmp), str(out_dir))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _normalise_config(out_dir / "adapter_config.json", base_ref)


def _normalise_config(path: Path, base_ref: str | None) -> None:
    """Same combination, same bytes: set-valued fields sorted, keys sorted, the base named."""
    config = json.loads(path.read_text(encoding="utf-8"))
    for key, value in config.items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            config[key] = sorted(value)
    config["base_model_name_or_path"] = base_ref or None
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

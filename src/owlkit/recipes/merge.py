"""The ``merge`` recipe: a stored base model + a stored PEFT adapter -> one stored HF model.

Merging happens at full precision only. A GGUF base is refused with the hint to ``owl convert`` it
first, and so is any base whose facts say it is quantized: merging into quantized weights means
dequantizing and requantizing, and owlkit never requantizes silently. The adapter must have been
trained on a model of the same base identity (``check_adapter_applies`` says what differs). The result
has two ``merged_from`` edges, to the base and to the adapter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from owlkit.adapt.merge import MERGE_DTYPES
from owlkit.errors import Refused, UsageError
from owlkit.recipes import derived_origin, inherited_license, make_recipe, store_output, write_card
from owlkit.recipes.tune import resolve_input
from owlkit.store.lineage import check_adapter_applies
from owlkit.store.manifest import Parent
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Record, Store

NAME = "merge"


@dataclass
class MergeParams:
    dtype: str = "float32"
    """Weights dtype of the merged model: float32 (default) or bfloat16 (merged in float32, then rounded)."""

    def __post_init__(self) -> None:
        if self.dtype not in MERGE_DTYPES:
            raise UsageError(
                f"--dtype {self.dtype!r} is not supported: choose one of {', '.join(MERGE_DTYPES)}"
            )


Params = MergeParams


def run(
    store: Store,
    inputs: dict[str, str],
    params: MergeParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """:func:`merge` from the inputs a manifest records (``{"base": digest, "adapter": digest}``)."""
    return merge(store, inputs["base"], inputs["adapter"], params, name=name, capture=capture)


def merge(
    store: Store,
    base_ref: str,
    adapter_ref: str,
    params: MergeParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """Merge ``adapter_ref`` into ``base_ref`` and store the result; returns its digest (``capture``:
    see :func:`owlkit.recipes.store_output`)."""
    from owlkit.adapt.merge import merge_adapter
    from owlkit.formats.hf_folder import inspect_hf_folder
    from owlkit.formats.tokenizer import tokenizer_digest_hf

    started = time.time()
    base = resolve_input(store, base_ref, "model")
    check_mergeable_base(base)
    adapter = resolve_input(store, adapter_ref, "adapter")
    if adapter.manifest.format != "peft":
        raise Refused(f"{adapter.name} is {adapter.manifest.format}; owl merge merges PEFT adapters")
    warnings = check_adapter_applies(store, adapter, base)
    out_name = name or default_name(f"{base.name.split(':')[0]}-{adapter.name.split(':')[0]}-merged")
    parse_name(out_name)  # before the work, not after
    with store.session() as scratch:  # a live session: gc leaves its temp files alone
        out = scratch.dir / "out"
        merge_adapter(store.checkout(base.digest), store.checkout(adapter.digest), out, dtype=params.dtype)
        _write_card(out, base, adapter)
        ins = inspect_hf_folder(out)
        ins.facts["tokenizer_digest"] = tokenizer_digest_hf(out)
        ins.warnings.extend(warnings)
        lic = inherited_license(base, "merged_from")
        lic["adapter"] = inherited_license(adapter, "merged_from")
        return store_output(
            store,
            ins,
            recipe=make_recipe(NAME, params, {"base": base.digest, "adapter": adapter.digest}),
            parents=[Parent(base.digest, "merged_from"), Parent(adapter.digest, "merged_from")],
            license=base.manifest.license,
            side={"origin": derived_origin(base, "merge"), "license": lic},
            name=out_name,
            started=started,
            capture=capture,
        )


def check_mergeable_base(base: Record) -> None:
    """Refused unless ``base`` is a full-precision HF folder (merging never requantizes silently)."""
    fmt = base.manifest.format
    if fmt == "gguf":
        raise Refused(
            f"{base.name} is a quantized GGUF; merging needs full-precision weights: "
            f"run `owl convert {base.name} --to hf` first and merge into that"
        )
    if fmt != "hf":
        raise Refused(f"{base.name} is {fmt}; owl merge merges into Hugging Face model folders")
    quant = base.facts.quantization
    if quant is not None:
        raise Refused(
            f"{base.name} is quantized ({quant}); merging needs full-precision weights and owlkit never "
            "requantizes silently: merge into its unquantized model (`owl convert` a GGUF to hf) instead"
        )


def _write_card(out: Path, base: Record, adapter: Record) -> None:
    """A model card with Hub-style YAML metadata naming the base and the merged adapter by digest."""
    from owlkit.recipes.tune import card_license

    upstream = base.info.origin.repo_id
    meta = {
        "base_model": upstream or base.name,
        "library_name": "transformers",
        **card_license(base.manifest.license),
        "tags": ["owlkit", "merge"],
        "owlkit": {"merged_from": {"base": base.digest, "adapter": adapter.digest}},
    }
    body = (
        f"# {base.name.split(':')[0]} + {adapter.name.split(':')[0]}\n\n"
        f"`{adapter.name}` merged into the weights of `{base.name}` by owlkit. The digests above identify\n"
        "the exact inputs; `owl show` lists the recipe.\n"
    )
    write_card(out, meta, body)

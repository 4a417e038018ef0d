"""The ``merge-adapters`` recipe: stored PEFT LoRA adapters of one base -> one stored adapter.

The adapters must all apply to the first one's base (``check_adapter_applies``: same base identity);
the combination itself is PEFT's ``add_weighted_adapter`` (``owlkit.adapt.combine``). The result is an
adapter like any other: an ``adapter_of`` edge to that base, a ``merged_from`` edge to each input, and
the base's digest and identity in its facts. Its recipe records the weights, method, density, svd rank
and seed, so ``owl rebuild`` re-derives it bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from owlkit.adapt.combine import DENSITY_METHODS, METHODS
from owlkit.errors import Refused, UsageError
from owlkit.recipes import derived_origin, inherited_license, make_recipe, store_output, write_card
from owlkit.recipes.tune import card_license, resolve_input
from owlkit.store.lineage import adapter_base, base_identity, check_adapter_applies
from owlkit.store.manifest import Parent
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Record, Store

NAME = "merge-adapters"


@dataclass
class MergeAdaptersParams:
    weights: list[float]
    """One weight per adapter, in the order the adapters are given (negative subtracts)."""
    method: str
    """PEFT combination_type: linear (equal ranks), svd, ties or dare_ties."""
    density: float | None = None
    """Fraction of values kept by ties / dare_ties (0 < d <= 1; 0.5 when not given); unused otherwise."""
    svd_rank: int | None = None
    """Rank of the svd result (default: the largest input rank); svd only."""
    seed: int = 0
    """Seeds torch right before combining: dare_ties' random masks."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method!r} is not supported: choose one of {', '.join(METHODS)}")
        if not self.weights:
            raise UsageError("no --weights given: give one weight per adapter, e.g. --weights 0.5,0.5")
        self.weights = [float(w) for w in self.weights]
        if not all(math.isfinite(w) for w in self.weights):
            raise UsageError(f"--weights {self.weights}: every weight must be a finite number")
        if self.method in DENSITY_METHODS:
            self.density = 0.5 if self.density is None else float(self.density)
            if not 0 < self.density <= 1:
                raise UsageError(f"--density {self.density} is out of range: give a fraction in (0, 1]")
        elif self.density is not None:
            raise UsageError(f"--density applies to ties and dare_ties, not --method {self.method}: drop it")
        if self.svd_rank is not None:
            if self.method != "svd":
                raise UsageError(f"--svd-rank applies to --method svd, not {self.method}: drop it")
            if type(self.svd_rank) is not int or self.svd_rank < 1:
                raise UsageError(f"--svd-rank {self.svd_rank!r}: give a positive integer")
        if type(self.seed) is not int or self.seed < 0:
            raise UsageError(f"--seed {self.seed!r}: give a non-negative integer")


Params = MergeAdaptersParams


def run(
    store: Store,
    inputs: dict[str, str],
    params: MergeAdaptersParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """:func:`merge_adapters` from the inputs a manifest records (``base``, ``adapter1``, ``adapter2``...:
    the adapters in their numbered order; the base is the first adapter's)."""
    adapters = [inputs[k] for k in sorted(inputs, key=_adapter_order) if k.startswith("adapter")]
    return merge_adapters(store, adapters, params, name=name, capture=capture)


def _adapter_order(role: str) -> int:
    digits = role.removeprefix("adapter")
    return int(digits) if digits.isdigit() else 0


def merge_adapters(
    store: Store,
    adapter_refs: list[str],
    params: MergeAdaptersParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """Combine the adapters ``adapter_refs`` (stored refs or folders to import) and store the result;
    returns its digest (``capture``: see :func:`owlkit.recipes.store_output`)."""
    from owlkit.adapt.combine import check_combinable, combine_adapters
    from owlkit.formats.peft import inspect_peft
    from owlkit.recipes.loading import load_for_inference

    started = time.time()
    if len(adapter_refs) < 2:
        raise UsageError("owl merge-adapters needs at least two adapters: A B [C...]")
    if len(params.weights) != len(adapter_refs):
        raise UsageError(
            f"{len(params.weights)} weights for {len(adapter_refs)} adapters: give one weight per adapter"
        )
    adapters = [resolve_input(store, ref, "adapter") for ref in adapter_refs]
    seen: dict[str, str] = {}
    for a in adapters:
        if a.manifest.format != "peft":
            raise Refused(f"{a.name} is {a.manifest.format}; owl merge-adapters combines PEFT adapters")
        if a.digest in seen:
            raise UsageError(f"{a.name} is given twice: give it once, with the sum of its weights")
        seen[a.digest] = a.name
    base = adapter_base(store, adapters[0])
    if base is None:
        raise Refused(
            f"{adapters[0].name} names a base that is not in the store: "
            "import its base model first, then re-import the adapter"
        )
    warnings: list[str] = []
    for a in adapters:
        warnings += check_adapter_applies(store, a, base)
    folders = [store.checkout(a.digest) for a in adapters]
    configs = [_read_config(folder) for folder in folders]
    check_combinable([a.name for a in adapters], configs, params.method)
    out_name = name or default_name(f"{adapters[0].name.split(':')[0]}-{params.method}")
    parse_name(out_name)  # before the work, not after
    identity = base_identity(store, base).digest
    upstream = base.info.origin.repo_id

    model, _, more = load_for_inference(store, base)
    warnings += more
    with store.session() as scratch:  # a live session: gc leaves its temp files alone
        out = scratch.dir / "out"
        combine_adapters(
            model,
            folders,
            out,
            weights=params.weights,
            method=params.method,
            density=params.density,
            svd_rank=params.svd_rank,
            seed=params.seed,
            base_ref=upstream or base.name.split(":")[0],
        )
        _write_card(out, base, identity, adapters, params)
        ins = inspect_peft(out)
        ins.facts["base_digest"] = base.digest
        ins.facts["base_identity"] = identity
        ins.warnings.extend(warnings)
        inputs = {"base": base.digest, **{f"adapter{i}": a.digest for i, a in enumerate(adapters, 1)}}
        lic = inherited_license(base, "adapter_of")
        lic["adapters"] = [inherited_license(a, "merged_from") for a in adapters]
        return store_output(
            store,
            ins,
            recipe=make_recipe(NAME, params, inputs, seed=params.seed),
            parents=[Parent(base.digest, "adapter_of"), *(Parent(a.digest, "merged_from") for a in adapters)],
            license=base.manifest.license,
            side={"origin": derived_origin(base, "merge-adapters"), "license": lic},
            name=out_name,
            started=started,
            capture=capture,
        )


def _read_config(folder: Path) -> dict:
    import json

    from owlkit.formats.peft import CONFIG

    return json.loads((folder / CONFIG).read_text(encoding="utf-8"))


def _write_card(
    out: Path, base: Record, identity: str, adapters: list[Record], params: MergeAdaptersParams
) -> None:
    """A model card with Hub-style YAML metadata naming the base, the inputs, their weights and the method."""
    upstream = base.info.origin.repo_id
    extra = {"density": params.density} if params.density is not None else {}
    if params.svd_rank is not None:
        extra["svd_rank"] = params.svd_rank
    meta = {
        "base_model": upstream or base.name,
        "library_name": "peft",
        **card_license(base.manifest.license),
        "tags": ["owlkit", "merge-adapters", params.method],
        "owlkit": {
            "base_digest": base.digest,
            "base_identity": identity,
            "merged_from": [
                {"adapter": a.digest, "weight": w} for a, w in zip(adapters, params.weights, strict=True)
            ],
            "method": params.method,
            "seed": params.seed,
            **extra,
        },
    }
    rows = "\n".join(f"| `{a.name}` | {w:g} |" for a, w in zip(adapters, params.weights, strict=True))
    body = (
        f"# {len(adapters)} adapters of {base.name.split(':')[0]}, combined ({params.method})\n\n"
        f"A LoRA adapter made by owlkit with PEFT's `add_weighted_adapter` (combination_type "
        f"`{params.method}`{''.join(f', {k} {v}' for k, v in extra.items())}, seed {params.seed}) from:\n\n"
        f"| adapter | weight |\n|---|---|\n{rows}\n\n"
        "The digests above identify the exact inputs; `owl show` lists the recipe.\n"
    )
    write_card(out, meta, body)

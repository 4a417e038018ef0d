"""The ``tune`` recipe at the store level: stored base + stored dataset -> adapter (or full fine-tune).

The training loop itself is ``owlkit.adapt.train`` (paths in, PEFT folder out). This module resolves
the inputs (importing paths on the fly), refuses what cannot be trained, writes the model card, and stores
the result with ``adapter_of``/``finetune_of`` and ``trained_on`` edges. The base's digest and identity
go in the manifest facts and the card metadata, never as extra adapter_config keys (PEFT warns on them).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from owlkit.adapt.params import TuneParams
from owlkit.errors import Refused, with_article
from owlkit.recipes import derived_origin, inherited_license, make_recipe, store_output, write_card
from owlkit.store.lineage import base_identity
from owlkit.store.manifest import Parent, canonical_json
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Record, Store

NAME = "tune"
TRAINABLE_DATA = ("alpaca", "sharegpt", "openai-messages")
# The engine (adapt/train.py) takes the same dataclass, so it lives beside the engine.
Params = TuneParams


def resolve_input(store: Store, ref: str, kind: str) -> Record:
    """A stored artifact by reference, or a path imported on the fly."""
    path = Path(ref).expanduser()
    if path.exists():
        from owlkit.recipes.importer import import_path

        return store.get(import_path(store, path).digest)
    rec = store.find(ref)
    if rec.manifest.kind != kind:
        raise Refused(f"{rec.name} is {with_article(rec.manifest.kind)}, not {with_article(kind)}")
    return rec


def run(
    store: Store,
    inputs: dict[str, str],
    params: TuneParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """:func:`tune` from the inputs a manifest records (``{"base": digest, "data": digest}``)."""
    return tune(store, inputs["base"], inputs["data"], params, name=name, capture=capture)


def tune(
    store: Store,
    base_ref: str,
    data_ref: str,
    params: TuneParams,
    *,
    name: str | None = None,
    resume: bool = False,
    progress: Any = None,
    capture: Path | None = None,
) -> str:
    """Train and store the result; its digest. Under torchrun every rank calls this and only rank 0
    stores: the other ranks return an empty string. ``capture``: see :func:`owlkit.recipes.store_output`
    (a captured run also trains in a fresh folder, out of reach of the original run's checkpoints)."""
    from owlkit.adapt.train import train
    from owlkit.formats.hf_folder import inspect_hf_folder
    from owlkit.formats.peft import inspect_peft
    from owlkit.formats.tokenizer import tokenizer_digest_hf

    started = time.time()
    base = resolve_input(store, base_ref, "model")
    if base.manifest.format == "gguf":
        raise Refused(
            f"{base.name} is a GGUF, which cannot be trained: run `owl convert {base.name} --to hf` first"
        )
    if base.manifest.format != "hf":
        raise Refused(f"{base.name} is {base.manifest.format}; owl tune trains Hugging Face model folders")
    data = resolve_input(store, data_ref, "dataset")
    fmt = data.facts.data_format
    if fmt not in TRAINABLE_DATA:
        raise Refused(
            f"{data.name} is {fmt or 'an unknown'} data; owl tune trains {', '.join(TRAINABLE_DATA)} rows"
        )
    full = params.method == "full"
    out_name = name or default_name(f"{base.name.split(':')[0]}-{params.method}")
    parse_name(out_name)  # before minutes of training
    identity = base_identity(store, base).digest
    upstream = base.info.origin.repo_id
    # Resume state outlives one process (a crash, Ctrl-C) but belongs to exactly these inputs and params.
    key = hashlib.sha256(canonical_json([base.digest, data.digest, asdict(params)])).hexdigest()[:16]
    with store.session() as scratch:
        work = scratch.dir / "run" if capture is not None else store.home / "runs" / key
        out = scratch.dir / "out"
        result = train(
            store.checkout(base.digest),
            store.checkout(data.digest),
            fmt,
            params,
            out,
            work_dir=work,
            resume=resume,
            progress=progress,
            base_ref=upstream or base.name.split(":")[0],
        )
        if result.rank != 0:
            return ""  # one rank of a torchrun group: rank 0 stores the artifact
        _write_card(out, base, data, identity, params, full=full)
        ins = inspect_hf_folder(out) if full else inspect_peft(out)
        if full:
            ins.facts["tokenizer_digest"] = tokenizer_digest_hf(out)
        ins.facts["base_digest"] = base.digest
        ins.facts["base_identity"] = identity
        relation = "finetune_of" if full else "adapter_of"
        digest = store_output(
            store,
            ins,
            recipe=make_recipe(NAME, params, {"base": base.digest, "data": data.digest}, seed=params.seed),
            parents=[Parent(base.digest, relation), Parent(data.digest, "trained_on")],
            license=base.manifest.license,
            side={
                "origin": derived_origin(base, "tune"),
                "license": inherited_license(base, relation),
                "training": {
                    "log": result.log,
                    "data": result.data_report,
                    "data_order_digest": result.data_order_digest,
                    "initial_eval_loss": result.initial_eval_loss,
                    "final_eval_loss": result.final_eval_loss,
                    "tokens_per_s": result.tokens_per_s,
                    "steps": result.steps,
                    "threads": result.num_threads,
                    "deterministic": result.deterministic,
                    "notes": result.notes,
                    # only for data-parallel runs, so one-process records stay as they were
                    **(
                        {"world_size": result.world_size, "threads_per_rank": result.threads_per_rank}
                        if result.world_size > 1
                        else {}
                    ),
                },
            },
            name=out_name,
            started=started,
            capture=capture,
        )
    return digest


def _write_card(out: Path, base: Record, data: Record, identity: str, params: Any, *, full: bool) -> None:
    """A model card with YAML metadata like the Hub's, plus owlkit's lineage (base digest and identity)."""
    upstream = base.info.origin.repo_id
    meta = {
        "base_model": upstream or base.name,
        "library_name": "transformers" if full else "peft",
        **card_license(base.manifest.license),
        "tags": ["owlkit", params.method],
        "owlkit": {
            "base_digest": base.digest,
            "base_identity": identity,
            "trained_on": data.digest,
            "method": params.method,
        },
    }
    body = (
        f"# {base.name.split(':')[0]} {params.method}\n\n"
        f"{'Fine-tuned' if full else 'A ' + params.method.upper() + ' adapter'} trained by owlkit on "
        f"`{data.name}` ({data.manifest.license}). The base and data digests above identify the exact inputs;\n"
        "`owl show` lists the recipe (parameters, seed, data order) and the training log.\n"
    )
    write_card(out, meta, body)


def card_license(license_id: str) -> dict[str, str]:
    """Hub card convention: an SPDX id as a lower-case tag, anything else as ``other`` plus its name."""
    if license_id == "unknown":
        return {"license": "other"}
    if license_id.startswith("LicenseRef-"):
        return {"license": "other", "license_name": license_id.removeprefix("LicenseRef-")}
    return {"license": license_id.lower()}

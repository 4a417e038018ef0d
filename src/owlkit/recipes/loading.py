"""Loading a stored artifact for inference: the one store-bound entry point. `load_for_inference` gives
the model object (an HF folder, a GGUF dequantized by transformers, or a PEFT adapter on the base it was
trained on, checked by base identity first) for the backends, the evaluation runner and the recipes that
need a model in memory (merge-adapters). Paths in, model out is `owlkit.runtime.load.load_causal_lm`
(the engine) underneath."""

from __future__ import annotations

from typing import Any

from owlkit.errors import NotFound, Refused, with_article
from owlkit.store.lineage import adapter_base, check_adapter_applies
from owlkit.store.store import Record, Store


def peft_adapter(store: Store, rec: Record) -> Record:
    """The PEFT adapter ``rec`` is: itself, or the one a stored GGUF LoRA was exported from (which
    carries the lineage to its base)."""
    m = rec.manifest
    if m.kind != "adapter":
        raise Refused(f"{rec.name} is {with_article(m.kind)}, not an adapter")
    if m.format == "peft":
        return rec
    if m.format != "gguf":
        raise Refused(
            f"{rec.name} is {with_article(m.format)} adapter; owlkit runs PEFT and GGUF LoRA adapters"
        )
    sources = [p.digest for p in rec.manifest.parents if p.relation == "quantized_from"]
    try:
        return store.get(sources[0])
    except (IndexError, NotFound):
        raise Refused(
            f"{rec.name}: the PEFT adapter it was exported from is not in the store, so its base "
            "cannot be checked; import that adapter and serve it instead"
        ) from None


def adapter_target(store: Store, rec: Record, base: Record | None = None) -> Record:
    """The model an adapter runs on: ``base`` when given, else the stored base it was trained on."""
    target = base or adapter_base(store, peft_adapter(store, rec))
    if target is None:
        raise NotFound(f"{rec.name}: its base {rec.info.base_ref!r} is not in the store: import it first")
    return target


def load_for_inference(
    store: Store, rec: Record, *, base: Record | None = None
) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, warnings). ``base`` picks another model of the same base identity for an adapter."""
    from owlkit.runtime.load import load_causal_lm

    warnings: list[str] = []
    if rec.manifest.kind == "adapter":
        target = adapter_target(store, rec, base)
        warnings += check_adapter_applies(store, rec, target)
        model, tok, more = load_for_inference(store, target)
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(store.checkout(rec.digest)), is_trainable=False)
        model.eval()
        return model, tok, warnings + more
    fmt = rec.manifest.format
    folder = store.checkout(rec.digest)
    if fmt == "gguf":
        model, tok = load_causal_lm(folder, gguf_file=rec.manifest.files[0].path)
    elif fmt == "hf":
        model, tok = load_causal_lm(folder)
    else:
        raise Refused(
            f"{rec.name} is {with_article(rec.manifest.kind)}/{fmt}, which `owl run` cannot load: run a model or adapter"
        )
    return model, tok, warnings

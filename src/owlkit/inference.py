"""Load a stored artifact for inference: an HF folder, a GGUF (dequantized by transformers), or a PEFT
adapter on the base it was trained on (checked by base identity first)."""

from __future__ import annotations

from typing import Any

from owlkit.errors import NotFound, Refused, with_article
from owlkit.store.lineage import adapter_base, check_adapter_applies
from owlkit.store.store import Record, Store


def load_for_inference(
    store: Store, rec: Record, *, base: Record | None = None
) -> tuple[Any, Any, list[str]]:
    """(model, tokenizer, warnings). ``base`` picks another model of the same base identity for an adapter."""
    from owlkit.runtime.load import load_causal_lm

    warnings: list[str] = []
    if rec.manifest.kind == "adapter":
        target = base or adapter_base(store, rec)
        if target is None:
            raise NotFound(
                f"{rec.name}: its base {rec.side.get('base_ref')!r} is not in the store: import it first"
            )
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

"""Loading a stored artifact for inference, the one store-bound entry point: `load_for_inference` gives
the model object (an HF folder, a GGUF dequantized by transformers, or a PEFT adapter on the base it was
trained on, checked by base identity first) and `open_for` a backend serving it (`owl run`, `owl chat`).
Paths in, model out is `owlkit.runtime.load.load_causal_lm` (the engine) underneath both."""

from __future__ import annotations

from typing import Any

from owlkit.backends.adapters import applies, attach, peft_adapter
from owlkit.backends.base import Backend, open_backend
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
        target = base or adapter_base(store, peft_adapter(store, rec))
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


def open_for(
    store: Store, rec: Record, backend_name: str = "torch", base: Record | None = None, **options: Any
) -> tuple[Backend, str | None]:
    """A backend for ``rec`` as `owl run` and `owl chat` take it: a model is the base; an adapter is
    added to its own base (or to ``base``, another model of the same base identity). Returns the
    backend and the adapter name to put in requests (None for a model)."""
    kind = rec.manifest.kind
    if kind not in ("model", "adapter"):
        raise Refused(
            f"{rec.name} is {with_article(kind)}, not a model or an adapter: give a model or adapter REF"
        )
    if kind == "model":
        return open_backend(store, rec, backend_name, **options), None
    target = base or adapter_base(store, peft_adapter(store, rec))
    if target is None:
        raise NotFound(
            f"{rec.name}: its base {rec.side.get('base_ref')!r} is not in the store: import it first"
        )
    checked = applies(store, rec, target)  # refuse a mismatch before spending time loading the base
    backend = open_backend(store, target, backend_name, **options)
    try:
        attach(backend, rec.name, rec, checked=checked)
    except BaseException:
        backend.close()
        raise
    return backend, rec.name

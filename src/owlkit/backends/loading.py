"""`open_for`: a backend serving a stored model or adapter (`owl run`, `owl chat`). The model object
itself comes from the one loading entry point, `owlkit.recipes.loading.load_for_inference`."""

from __future__ import annotations

from typing import Any

from owlkit.backends.adapters import applies, attach
from owlkit.backends.base import Backend, open_backend
from owlkit.errors import Refused, with_article
from owlkit.recipes.loading import adapter_target
from owlkit.store.store import Record, Store


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
    target = adapter_target(store, rec, base)
    checked = applies(store, rec, target)  # refuse a mismatch before spending time loading the base
    backend = open_backend(store, target, backend_name, **options)
    try:
        attach(backend, rec.name, rec, checked=checked)
    except BaseException:
        backend.close()
        raise
    return backend, rec.name

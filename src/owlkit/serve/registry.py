"""What one `owl serve` process serves: bases (one backend each) and the adapters attached to them.

A request names a model: a base by the REF it was served as, or an adapter by its name; the adapter
runs on its base's backend, so every adapter shares its base's weights. With a declared use
(``--use commercial``), every artifact's terms verdict is checked before anything is loaded, and again
for each adapter loaded at run time: a forbidding lineage is refused with the ancestor and clause.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.errors import NotFound, Refused, TermsForbid, UsageError, with_article

if TYPE_CHECKING:
    from owlkit.backends.base import Backend
    from owlkit.store.store import Record, Store


@dataclass
class Served:
    """One name a request may pick."""

    name: str
    record: Record
    backend: Backend
    parent: str | None = None  # the base's served name, for an adapter
    terms: dict[str, str] | None = None  # {"use", "status"} for the declared use
    warnings: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.created = int(self.record.created_at) or self.created  # when the artifact entered the store

    @property
    def adapter(self) -> str | None:
        """The name the backend knows the adapter by (None: the base itself)."""
        return self.name if self.parent is not None else None


def terms_check(store: Store, rec: Record, use: str | None) -> tuple[dict[str, str] | None, list[str]]:
    """The verdict of ``rec`` for ``use`` as {use, status}, plus warnings; TermsForbid when forbidden."""
    if use is None:
        return None, []
    from owlkit.terms.propagate import FORBIDDEN, UNKNOWN, verdict

    v = verdict(store, rec, use)
    if v.status == FORBIDDEN:
        step = next(s for s in v.chain if s.status == FORBIDDEN)
        clause = f"{step.clause}: {step.reason}" if step.clause else step.reason
        ancestor = "its own license" if step.artifact == rec.name else f"its ancestor {step.artifact}"
        raise TermsForbid(
            f"{rec.name} may not be used for {use}: {ancestor} is {step.license} ({clause}); "
            f"see `owl terms {rec.name} --use {use}`, serve another model or declare another --use"
        )
    warnings = []
    if v.status == UNKNOWN:
        step = next((s for s in v.chain if s.status == UNKNOWN), None)
        why = f" ({step.artifact}: {step.license}, {step.reason})" if step else ""
        warnings.append(f"{rec.name}: terms for {use} are unknown{why}; check them before relying on it")
    return {"use": use, "status": v.status}, warnings


class Server:
    """The registry of served models and the server's settings. Build it with :meth:`open` (or add
    bases and adapters one by one), hand it to :func:`owlkit.serve.app.create_app`, close it at exit."""

    def __init__(
        self,
        store: Store,
        *,
        api_key: str | None = None,
        use: str | None = None,
        allow_adapter_paths: bool = False,
        backend: str = "torch",
        max_batch: int = 8,
        max_queue: int = 64,
        **backend_options: Any,
    ) -> None:
        if use is not None:
            from owlkit.terms.propagate import USES

            if use not in USES:
                raise UsageError(f"--use {use!r} is not a use owlkit judges: choose one of {', '.join(USES)}")
        self.store, self.api_key, self.use = store, api_key or None, use
        self.allow_adapter_paths = allow_adapter_paths
        self.backend_name = backend
        self.backend_options = {"max_batch": max_batch, "max_queue": max_queue, **backend_options}
        self.models: dict[str, Served] = {}
        self.warnings: list[str] = []  # for the CLI to print at start
        self.stats: Counter[str] = Counter()  # requests, disconnects, ... (tests and /health read them)

    @classmethod
    def open(
        cls, store: Store, bases: list[str], adapters: list[tuple[str | None, str]] = (), **settings: Any
    ) -> Server:
        """Check every artifact (kind, terms, which base each adapter applies to) before loading any
        backend, then load them; on failure nothing stays loaded. ``adapters`` are (name or None, REF)."""
        if not bases:
            raise UsageError("owl serve needs at least one model REF")
        server = cls(store, **settings)
        base_recs = [server._base_record(ref) for ref in bases]
        plans = []
        for name, ref in adapters:
            rec = server._adapter_record(ref)
            plans.append((name or ref, rec, *server._pick_base(rec, base_recs, bases)))
        checked = {}  # digest -> (terms, warnings): every verdict before any loading, each once
        for rec in base_recs + [p[1] for p in plans]:
            checked[rec.digest] = terms_check(store, rec, use=server.use)
            server.warnings += checked[rec.digest][1]
        names = list(bases) + [p[0] for p in plans]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise UsageError(f"{dup!r} is served twice: give each adapter its own name (--adapter NAME=REF)")
        try:
            for ref, rec in zip(bases, base_recs, strict=True):
                server._load_base(ref, rec, *checked[rec.digest])
            for name, rec, base, applies in plans:
                server._attach(name, rec, base, applies, checked[rec.digest])
        except BaseException:
            server.close()
            raise
        return server

    # ----- looking up ------------------------------------------------------------------------------
    def resolve(self, model: str | None) -> Served:
        """The served model a request names; with one base, an empty name means it (as LoRAX)."""
        if not model:
            bases = [m for m in self.models.values() if m.parent is None]
            if len(bases) == 1:
                return bases[0]
            raise UsageError(f"name a model: this server serves {self.names()}")
        served = self.models.get(model)
        if served is None:
            raise NotFound(f"model {model!r} is not served here; served: {self.names()}")
        return served

    def names(self) -> str:
        return ", ".join(self.models) or "nothing"

    # ----- bases -------------------------------------------------------------------------------------
    def _base_record(self, ref: str) -> Record:
        rec = self.store.find(ref)
        if rec.manifest.kind != "model":
            hint = (
                f"; serve its base and add it with --adapter {ref}" if rec.manifest.kind == "adapter" else ""
            )
            raise UsageError(f"{ref} is {with_article(rec.manifest.kind)}, not a model{hint}")
        return rec

    def add_base(self, ref: str) -> Served:
        """Load one more base under the name ``ref``."""
        if ref in self.models:
            raise UsageError(f"{ref!r} is already served")
        rec = self._base_record(ref)
        terms, warnings = terms_check(self.store, rec, self.use)
        self.warnings += warnings
        return self._load_base(ref, rec, terms, warnings)

    def _load_base(self, ref: str, rec: Record, terms: dict | None, warnings: list[str]) -> Served:
        from owlkit.backends.base import open_backend

        backend = open_backend(self.store, rec, self.backend_name, **self.backend_options)
        served = Served(ref, rec, backend, terms=terms, warnings=list(warnings or []))
        self.models[ref] = served
        return served

    # ----- adapters ----------------------------------------------------------------------------------
    def _adapter_record(self, ref: str) -> Record:
        rec = self.store.find(ref)
        if rec.manifest.kind != "adapter":
            raise UsageError(
                f"{ref} is {with_article(rec.manifest.kind)}, not an adapter: serve it as a model REF"
            )
        return rec

    def _pick_base(self, rec: Record, candidates: list[Record], names: list[str]) -> tuple[str, list[str]]:
        """The served name of the first base the adapter applies to (same base identity), and the
        warnings of that check (quantization differs): the one check of this adapter, which
        :meth:`_attach` passes on rather than running again."""
        from owlkit.backends.adapters import applies

        reasons = []
        for base_rec, name in zip(candidates, names, strict=True):
            try:
                return name, applies(self.store, rec, base_rec)
            except Refused as e:
                reasons.append(str(e))
        raise Refused(f"{rec.name} applies to none of the served bases ({', '.join(names)}): {reasons[0]}")

    def add_adapter(self, ref: str, name: str | None = None) -> Served:
        """Attach a stored adapter (REF) under ``name`` to the base it applies to; terms checked first."""
        name = name or ref
        if name in self.models:
            raise UsageError(f"{name!r} is already served: unload it first or pick another name")
        rec = self._adapter_record(ref)
        bases = [m for m in self.models.values() if m.parent is None]
        base, applies = self._pick_base(rec, [b.record for b in bases], [b.name for b in bases])
        return self._attach(name, rec, base, applies)

    def import_adapter_path(self, path: str, name: str) -> str:
        """Import an adapter folder into the store (as `owl import` does) under a free name near
        ``name``; returns its digest for :meth:`add_adapter`. Only with --allow-adapter-paths."""
        from owlkit.recipes.importer import import_path

        if not self.allow_adapter_paths:
            raise UsageError(
                f"{path!r} is not a stored adapter; loading from a path needs a server started with "
                "--allow-adapter-paths (or `owl import` it and pass its name)"
            )
        p = Path(path).expanduser()
        if not p.exists():
            raise NotFound(f"{path} does not exist on the server")
        rec_name = self._free_store_name(name)
        return import_path(self.store, p, name=rec_name).digest

    def _free_store_name(self, wanted: str) -> str:
        """A store name for an adapter imported at run time that moves no existing name."""
        from owlkit.store.names import default_name

        stem = default_name(wanted)
        for i in range(1, 1000):
            candidate = stem if i == 1 else f"{stem}-{i}"
            try:
                self.store.resolve(candidate)
            except NotFound:
                return candidate
        raise UsageError(f"no free store name near {stem!r}: pick another lora_name")

    def _attach(
        self,
        name: str,
        rec: Record,
        base: str,
        applies: list[str],
        checked: tuple[dict | None, list[str]] | None = None,
    ) -> Served:
        """Load the adapter on its base's backend; ``applies`` are _pick_base's warnings, ``checked`` its
        terms_check result when already known."""
        from owlkit.backends.adapters import attach

        terms, warnings = checked or terms_check(self.store, rec, self.use)
        warnings = warnings + applies
        base_served = self.models[base]
        attach(base_served.backend, name, rec, checked=applies)
        served = Served(name, rec, base_served.backend, parent=base, terms=terms, warnings=warnings)
        self.models[name] = served
        return served

    def remove_adapter(self, name: str) -> Served:
        served = self.models.get(name)
        if served is None:
            raise NotFound(f"adapter {name!r} is not loaded; served: {self.names()}")
        if served.parent is None:
            raise UsageError(f"{name!r} is a base model, not an adapter: it cannot be unloaded")
        del self.models[name]  # new requests for it are refused from now on
        served.backend.remove_adapter(name)
        return served

    def close(self) -> None:
        """Stop every backend (requests still queued finish with "abort")."""
        for served in list(self.models.values()):
            if served.parent is None:
                served.backend.close()
        self.models.clear()

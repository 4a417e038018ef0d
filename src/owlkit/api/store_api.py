"""The store commands: import, ls, show, verify, tag, rm, gc, export, upgrade."""

from __future__ import annotations

from pathlib import Path

from owlkit.api.base import ApiBase, Ref, artifact, ref_str
from owlkit.api.progress import Progress, counter
from owlkit.api.results import (
    Artifact,
    ArtifactDetail,
    FileInfo,
    GcResult,
    Imported,
    LineageEdge,
    Removed,
    VerifyReport,
)
from owlkit.errors import UsageError


class StoreApi(ApiBase):
    def import_(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        convert_pickle: bool = False,
        progress: Progress | None = None,
    ) -> Imported:
        """Validate every file of a model folder, .gguf, .safetensors, PEFT adapter or dataset and
        store it. ``convert_pickle`` scans a pickle checkpoint, loads it weights-only and stores
        safetensors (pickles are refused otherwise)."""
        from owlkit.recipes.importer import import_path, plan, total_bytes
        from owlkit.store.names import parse_name

        path = Path(path)
        if name:
            parse_name(name)  # a bad name fails before any work
        ins = plan(path)
        with self._store(write=True) as store:
            res = import_path(
                store,
                path,
                name=name,
                convert_pickle=convert_pickle,
                progress=counter(progress, f"importing {path.name}", total_bytes(ins), "bytes"),
                inspected=ins,
            )
            return Imported(
                artifact(store.get(res.digest)), res.name, res.converted_from, res.warnings, list(ins.flags)
            )

    def ls(self, kind: str | None = None) -> list[Artifact]:
        """Every stored artifact (of one ``kind``: model, adapter, dataset or pipeline), oldest first."""
        from owlkit.store.manifest import KINDS

        if kind and kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")
        with self._store() as store:
            return [artifact(r) for r in store.list(kind)]

    def get(self, ref: Ref) -> Artifact:
        """The artifact a ref names (NotFound / Ambiguous otherwise)."""
        with self._store() as store:
            return artifact(self._record(store, ref))

    def show(self, ref: Ref) -> ArtifactDetail:
        """One artifact with its facts, license, origin, files, lineage, recipe and training log."""
        from owlkit.store.lineage import base_identity

        with self._store() as store:
            rec = self._record(store, ref)
            up, down = store.edges_of(rec.digest)
            m, info = rec.manifest, rec.info
            return ArtifactDetail(
                **vars(artifact(rec)),
                facts=m.facts,
                license_detail=info.license,
                origin=dict(rec.side.get("origin") or {}),  # as stored: every key, for display
                files=[FileInfo(f.path, f.size, f.sha256) for f in m.files],
                parents=[
                    LineageEdge(
                        e.relation,
                        e.parent,
                        store.label(e.parent) if e.parent else None,
                        e.parent_ref if not e.parent else None,
                    )
                    for e in up
                ],
                children=[LineageEdge(e.relation, e.child, store.label(e.child)) for e in down],
                recipe=m.recipe.to_json() if m.recipe else None,
                flags=info.flags,
                warnings=info.warnings,
                training=info.training or None,
                quality=info.quality or None,
                quantize=info.quantize or None,
                descends_from_quantized=info.descends_from_quantized or None,
                base_identity=base_identity(store, rec).digest if m.kind == "model" else None,
            )

    def verify(self, ref: Ref | None = None, *, progress: Progress | None = None) -> VerifyReport:
        """Re-hash the files of one artifact (or, with no ref, of every artifact). The report names each
        corrupt or missing file; it does not raise for them."""
        with self._store() as store:
            records = store.list() if ref is None else [self._record(store, ref)]
            blobs = {f.sha256: f.size for r in records for f in r.manifest.files}
            advance = counter(progress, "verifying", sum(blobs.values()), "bytes")
            problems: list[str] = []
            seen: dict[str, str | None] = {}
            for r in records:
                problems += store.verify(r.digest, seen, advance)
            return VerifyReport(len(records), sum(r.manifest.size for r in records), problems)

    def tag(self, ref: Ref, new: str) -> Artifact:
        """Give an artifact another ``NAME[:TAG]`` (no files move)."""
        with self._store(write=True) as store:
            return artifact(store.get(store.tag(ref_str(ref), new)))

    def untag(self, name: str) -> None:
        """Remove one name; the artifact stays."""
        with self._store(write=True) as store:
            store.untag(name)

    def rm(self, ref: Ref, *, force: bool = False) -> Removed:
        """Remove an artifact (its blobs are freed by `gc`); refused when others derive from it unless
        ``force``. A name that is one of several only removes that name."""
        from owlkit.store.names import format_name, parse_name

        with self._store(write=True) as store:
            rec, removed = store.remove(ref_str(ref), force=force)
            gone = format_name(*parse_name(ref)) if isinstance(ref, str) and not removed else None
            return Removed(artifact(rec), removed, [t for t in rec.tags if t != gone] if not removed else [])

    def gc(self) -> GcResult:
        """Delete blobs no artifact references and temp files of interrupted writers (safe while another
        import runs)."""
        with self._store(write=True) as store:
            return GcResult(**vars(store.gc()))

    def export(self, ref: Ref, dest: str | Path, *, link: bool = False) -> Path:
        """Write an artifact as a folder transformers / peft / llama.cpp load directly; ``link`` hardlinks
        instead of copying (replace such files, never edit them in place)."""
        with self._store() as store:
            rec = self._record(store, ref)
            return store.export(rec.digest, Path(dest), link=link)

    def upgrade(self) -> str:
        """Migrate the catalog to this owlkit's schema; returns the schema version."""
        from owlkit.store import catalog

        with self._store(write=True):  # opening for write applies migrations
            return catalog.SCHEMA_HEAD

"""``owl import``: turn a file or folder into a stored artifact.

Reads and validates with ``owlkit.formats`` (which knows nothing of the store), hashes every file into
the store while copying it, resolves the parents it names, then commits the catalog row last. A pickle
checkpoint (with ``convert_pickle``) is stored as it came and converted by the ``convert-pickle`` recipe,
so that `owl rebuild` can re-derive the conversion from the stored original.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import NotFound, Refused, UsageError
from owlkit.formats.base import Inspected
from owlkit.formats.detect import inspect_path
from owlkit.store.blobs import Session
from owlkit.store.manifest import FileEntry, Manifest, Parent
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Store
from owlkit.version import __version__

Progress = Callable[[int], None]


@dataclass
class ImportResult:
    digest: str
    name: str
    inspected: Inspected
    warnings: list[str] = field(default_factory=list)
    converted_from: str | None = None  # digest of the stored pickle original, with --convert-pickle


def plan(path: Path) -> Inspected:
    """Inspect without storing (and size the progress bar). Each file's identity is noted, so a file
    that changes between validation and storing is caught (see _put_files)."""
    ins = inspect_path(path)
    ins.stats = {
        rel: _identity(ins.path_of(rel)) for rel in {*ins.files, *(ins.side.get("pickle_weights") or [])}
    }
    _fill_tokenizer_digest(ins)
    return ins


def _identity(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def total_bytes(ins: Inspected) -> int:
    return sum(ins.path_of(rel).stat().st_size for rel in ins.files)


def import_path(
    store: Store,
    path: Path,
    *,
    name: str | None = None,
    convert_pickle: bool = False,
    progress: Progress | None = None,
    inspected: Inspected | None = None,
) -> ImportResult:
    started = time.time()
    ins = inspected or plan(path)
    ref = name or default_name(_stem(ins))
    parse_name(ref)  # validate before any I/O
    pickles = list(ins.side.get("pickle_weights") or [])
    if pickles and not convert_pickle:
        raise Refused(
            f"{pickles[0]}: pickle checkpoints can run code when loaded and are not imported; "
            "re-run with --convert-pickle to scan it and store it as safetensors"
        )
    with store.session() as s:
        # a folder's pickle weights are stored with the original (never loaded), then converted
        files = _put_files(s, ins, sorted(set(ins.files) | set(pickles)), progress)
        parents, unresolved, warnings = _parents(store, ins)
        side = _side(ins, started)
        manifest = Manifest(
            kind=ins.kind,
            format=ins.format,
            files=files,
            facts=ins.facts,
            license=ins.license.id,
            parents=parents,
        )
        if pickles:
            from owlkit.recipes import convert_pickle

            params = convert_pickle.Params.for_pickles(pickles)
            converted = convert_pickle.convert(s, store.blobs, files, params)  # refuses before any commit
            original = store.commit(manifest, side, unresolved=unresolved)
            digest = convert_pickle.store_converted(
                store, store.get(original), converted, params, name=ref, started=started
            )
            return ImportResult(digest, ref, ins, warnings + ins.warnings, converted_from=original)
        digest = store.commit(manifest, side, name=ref, unresolved=unresolved)
    if ins.kind == "model" and ins.origin and ins.origin.repo_id:
        store.resolve_unresolved(ins.origin.repo_id, digest)  # adapters imported before their base
    return ImportResult(digest, ref, ins, warnings + ins.warnings)


def _stem(ins: Inspected) -> str:
    if ins.origin and ins.origin.repo_id:
        return ins.origin.repo_id.split("/")[-1]
    return ins.root.stem if ins.root.is_file() else ins.root.name


def _put_files(s: Session, ins: Inspected, rels: list[str], progress: Progress | None) -> list[FileEntry]:
    out = []
    for rel in rels:
        src = ins.path_of(rel)
        hexdigest, size = s.put_file(src, progress)
        if rel in ins.stats and _identity(src) != ins.stats[rel]:
            raise Refused(
                f"{rel} changed while it was being imported (still downloading?): import it again when it is complete"
            )
        out.append(FileEntry(rel, size, hexdigest))
    return out


def _parents(store: Store, ins: Inspected) -> tuple[list[Parent], list[tuple[str, str]], list[str]]:
    """An adapter's base, resolved by store name, upstream repo id, or source path; else unresolved."""
    if ins.kind != "adapter" or not ins.base_ref:
        return [], [], []
    digest = find_by_reference(store, ins.base_ref)
    if digest:
        return [Parent(digest, "adapter_of")], [], []
    return (
        [],
        [("adapter_of", ins.base_ref)],
        [f"base {ins.base_ref!r} is not in the store; recorded as unresolved (import it to link them)"],
    )


def find_by_reference(store: Store, ref: str) -> str | None:
    """The stored model a name refers to: an owl name, an upstream repo id, or a local source path."""
    try:
        return store.resolve(ref)
    except (NotFound, UsageError):  # not an owl name (Ambiguous is a NotFound too): try the origins
        pass
    candidates = [ref]
    p = Path(ref).expanduser()
    if p.exists():
        candidates.append(str(p.resolve()))
    for rec in reversed(store.list(kind="model")):  # newest first
        origin = rec.info.origin
        if origin.repo_id in candidates or origin.source_path in candidates:
            return rec.digest
    return None


def _side(ins: Inspected, started: float) -> dict[str, Any]:
    origin = ins.origin
    return {
        "origin": {k: v for k, v in vars(origin).items() if v is not None} if origin else {},
        "license": {k: v for k, v in vars(ins.license).items() if v is not None},
        "flags": ins.flags,
        "warnings": ins.warnings,
        "base_ref": ins.base_ref,
        "imported_at": started,
        "import_seconds": round(time.time() - started, 3),
        "owlkit": __version__,
        **ins.side,
    }


def _fill_tokenizer_digest(ins: Inspected) -> None:
    """The normalised tokenizer digest (part of base identity) needs the `ml` extra; without it the
    fact stays None and a warning says why."""
    if ins.kind != "model" or ins.format not in ("hf", "gguf") or ins.facts.get("tokenizer_digest"):
        return
    try:
        from owlkit.formats import tokenizer as tk
    except ImportError:
        ins.warnings.append("tokenizer digest not computed: pip install 'owlkit[ml]'")
        return
    try:
        ins.facts["tokenizer_digest"] = (
            tk.tokenizer_digest_gguf(ins.root) if ins.format == "gguf" else tk.tokenizer_digest_hf(ins.root)
        )
    except ImportError:
        ins.warnings.append("tokenizer digest not computed: pip install 'owlkit[ml]'")

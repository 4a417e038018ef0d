"""The ``convert-pickle`` recipe: a stored pickle checkpoint (a bare file, or a folder with pickle weights)
-> the same artifact with safetensors weights.

`owl import --convert-pickle` stores the pickle original as it came (its bytes stay in the store and are
never loaded again by anything else), converts it with :func:`convert` before committing anything (a
refused pickle leaves nothing behind), then stores the result with :func:`store_converted`; :func:`run`
does both from the stored original, which is what `owl rebuild` re-runs. Each pickle is scanned twice and
loaded weights-only (``formats/pickles.py``). The result has a ``converted_from`` edge to the original and
keeps its kind, facts, license and side record (origin, license detail), with the pickles named in
``converted_pickles``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from owlkit.errors import Corrupt, Refused
from owlkit.formats.base import Inspected
from owlkit.recipes import make_recipe, store_output
from owlkit.store.blobs import Blobs, Session
from owlkit.store.manifest import FileEntry, Parent, check_rel_path
from owlkit.store.store import Record, Store

NAME = "convert-pickle"
SHARDED_INDEX = "model.safetensors.index.json"  # what a sharded pickle's .bin.index.json becomes


@dataclass
class ConvertPickleParams:
    files: dict[str, str]
    """Each pickle's path in the original -> the path of the safetensors file it becomes."""

    @classmethod
    def for_pickles(cls, pickles: list[str]) -> ConvertPickleParams:
        return cls({rel: converted_name(rel) for rel in pickles})


Params = ConvertPickleParams


def converted_name(rel: str) -> str:
    p = Path(rel)
    return str(p.with_name(p.stem.replace("pytorch_model", "model") + ".safetensors"))


@dataclass
class Converted:
    """A conversion written inside a store session, not stored yet: ``folder`` holds ``files`` (the
    safetensors files, and links to the original's other files); ``sources`` maps each safetensors
    file to the sha256 of the pickle it came from."""

    folder: Path
    files: list[str]
    sources: dict[str, str]


def run(
    store: Store,
    inputs: dict[str, str],
    params: ConvertPickleParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """Convert the stored original ``inputs["source"]`` again and store the result; its digest
    (``capture``: see :func:`owlkit.recipes.store_output`)."""
    started = time.time()
    original = store.find(inputs["source"])
    with store.session() as session:
        conv = convert(session, store.blobs, original.manifest.files, params)
        return store_converted(store, original, conv, params, name=name, started=started, capture=capture)


def convert(
    session: Session, blobs: Blobs, original: list[FileEntry], params: ConvertPickleParams
) -> Converted:
    """Convert the pickles among ``original`` (stored files, read from their blobs) into a folder of
    ``session``. Refused or InvalidFile, naming the pickle, for one that fails a scan or the load."""
    from owlkit.formats.pickles import convert_pickle_to_safetensors

    by_path = {f.path: f for f in original}
    missing = sorted(set(params.files) - set(by_path))
    if missing:
        raise Refused(f"the recipe converts {missing[0]}, which the original does not hold")
    # The original's files under their own names, so that every message names the file, not its blob.
    named = session.dir / "original"
    for f in original:
        _link(blobs.path(f.sha256), named / f.path)
    out = session.dir / "converted"
    out.mkdir()
    sources: dict[str, str] = {}
    files: list[str] = []
    for rel, new in params.files.items():
        dest = out / check_rel_path(new)
        dest.parent.mkdir(parents=True, exist_ok=True)
        info = convert_pickle_to_safetensors(named / rel, dest)
        if info["source_sha256"] != by_path[rel].sha256:
            raise Corrupt(f"{rel}: its stored copy no longer matches its sha256; import it again")
        sources[new] = info["source_sha256"]
        files.append(new)
    for f in original:
        if f.path in params.files:
            continue
        if f.path.endswith(".bin.index.json"):  # a sharded pickle's index -> the safetensors index
            index = json.loads((named / f.path).read_text(encoding="utf-8"))
            index["weight_map"] = {k: params.files.get(v, v) for k, v in index.get("weight_map", {}).items()}
            (out / SHARDED_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
            files.append(SHARDED_INDEX)
        else:
            _link(blobs.path(f.sha256), out / f.path)
            files.append(f.path)
    return Converted(out, files, sources)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def store_converted(
    store: Store,
    original: Record,
    conv: Converted,
    params: ConvertPickleParams,
    *,
    name: str | None,
    started: float,
    capture: Path | None = None,
) -> str:
    """Store a :func:`convert` result as the original's safetensors twin; its digest."""
    m = original.manifest
    facts = dict(m.facts)
    if m.format == "pickle":  # a bare checkpoint: its weight facts come from what was written
        from owlkit.formats.safetensors import read_safetensors_header

        header = read_safetensors_header(conv.folder / next(iter(params.files.values())))
        facts.update(parameters=header.parameters, dtype=header.dtype_summary())
    side = {k: v for k, v in original.side.items() if k not in ("flags", "warnings", "pickle_weights")}
    ins = Inspected(
        kind=m.kind,
        format="hf" if m.format == "hf" else "safetensors",
        root=conv.folder,
        files=conv.files,
        facts=facts,
        flags=[f for f in original.info.flags if f != "pickle-weights"],
        warnings=original.info.warnings,
        side=side,
    )
    return store_output(
        store,
        ins,
        recipe=make_recipe(NAME, params, {"source": original.digest}),
        parents=[Parent(original.digest, "converted_from")],
        license=m.license,
        side={"converted_pickles": conv.sources},
        name=name,
        started=started,
        capture=capture,
    )

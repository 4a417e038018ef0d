"""What every part of the API shares: the store's home, opening it, and turning refs into records."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from owlkit.api.results import Artifact, Stored
from owlkit.errors import UsageError
from owlkit.store.store import Record, Store, default_home


@runtime_checkable
class HasDigest(Protocol):
    """Anything the API returned that names one stored artifact: `Artifact`, `Stored`, `TuneResult` …"""

    @property
    def digest(self) -> str: ...


Ref = str | HasDigest
"""A name, ``name:tag``, digest or digest prefix, or a result naming a stored artifact."""


def ref_str(ref: Ref) -> str:
    if isinstance(ref, str):
        return ref
    digest = getattr(ref, "digest", None)
    if not isinstance(digest, str):
        raise UsageError(
            f"{type(ref).__name__} names no stored artifact: pass a name, a digest or an Artifact"
        )
    return digest


Input = Ref | Path
"""A stored artifact (as `Ref`), or a file or folder to import first."""


def input_str(ref: Input) -> str:
    """What the recipes' resolve-or-import takes: a ref, or a path as a string."""
    return str(ref) if isinstance(ref, Path) else ref_str(ref)


def artifact(rec: Record) -> Artifact:
    m, facts = rec.manifest, rec.facts
    return Artifact(
        digest=rec.digest,
        names=list(rec.tags),
        kind=m.kind,
        format=m.format,
        architecture=facts.architecture,
        parameters=facts.parameters,
        dtype=facts.dtype,
        quantization=facts.quantization,
        license=m.license,
        size=m.size,
        created_at=rec.created_at,
    )


class ApiBase:
    """The store an `Owl` works on. Each call opens it for as long as it needs and closes it."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()

    def __repr__(self) -> str:
        return f"Owl(home={str(self.home)!r})"

    @contextmanager
    def _store(self, *, write: bool = False) -> Iterator[Store]:
        store = Store(self.home, write=write)
        try:
            yield store
        finally:
            store.close()

    def _record(self, store: Store, ref: Ref) -> Record:
        return store.find(ref_str(ref))

    def _stored(self, store: Store, digest: str) -> Stored:
        rec = store.get(digest)
        return Stored(digest, list(rec.tags), rec.info.warnings)

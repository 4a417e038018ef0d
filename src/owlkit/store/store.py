"""The store facade: every read and write of artifacts goes through :class:`Store`.

Layout under ``OWL_HOME`` (default: platformdirs' user data dir for "owlkit")::

    blobs/sha256/ab/cdef…     content-addressed files, read-only, stored once across all artifacts
    catalog.db                SQLite catalog (WAL) unless OWL_DB names another database
    tmp/session-*/            writers' temp files and pins (see blobs.Session)
    checkouts/<hex>/          read-only views of an artifact's files as links, for loaders that need a folder
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from owlkit.errors import Ambiguous, Corrupt, NotFound, Refused
from owlkit.store import catalog as cat
from owlkit.store.blobs import Blobs, Session, dead_sessions, fsync_dir
from owlkit.store.manifest import Manifest, canonical_json, check_rel_path
from owlkit.store.names import digest_prefix, format_name, parse_name


def default_home() -> Path:
    env = os.environ.get("OWL_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("owlkit", appauthor=False))


@dataclass
class Record:
    """An artifact as the catalog holds it."""

    digest: str
    manifest: Manifest
    side: dict[str, Any]
    created_at: float
    tags: list[str] = field(default_factory=list)

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]

    @property
    def name(self) -> str:
        return self.tags[0] if self.tags else self.short


@dataclass
class Edge:
    child: str
    relation: str
    parent: str | None
    parent_ref: str | None = None


@dataclass
class GcReport:
    blobs_removed: int = 0
    bytes_freed: int = 0
    temp_removed: int = 0
    checkouts_removed: int = 0


class Store:
    def __init__(self, home: Path, *, write: bool) -> None:
        self.home = home
        self.write = write
        self.blobs = Blobs(home)
        if write:
            home.mkdir(parents=True, exist_ok=True)
        url = os.environ.get("OWL_DB") or cat.sqlite_url(home)
        self.is_sqlite = url.startswith("sqlite")
        self.exists = not self.is_sqlite or (home / "catalog.db").exists()
        self.engine = cat.make_engine(url, write=write)
        if write:
            cat.upgrade(self.engine, home / "catalog.lock")
            self.exists = True
        elif self.exists:
            with self.engine.connect() as conn:
                if cat.check_schema(conn) is None:
                    self.exists = False

    def close(self) -> None:
        self.engine.dispose()

    # ----- reading -------------------------------------------------------------------------------
    def _records(self, where: Any = None) -> list[Record]:
        if not self.exists:
            return []
        q = select(
            cat.artifacts.c.digest, cat.artifacts.c.manifest, cat.artifacts.c.side, cat.artifacts.c.created_at
        )
        if where is not None:
            q = q.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(cat.artifacts.c.created_at)).all()
            tag_rows = conn.execute(select(cat.tags.c.digest, cat.tags.c.name, cat.tags.c.tag)).all()
        tag_map: dict[str, list[str]] = {}
        for d, n, t in sorted(tag_rows, key=lambda r: (r[1], r[2])):
            tag_map.setdefault(d, []).append(format_name(n, t))
        return [
            Record(d, Manifest.from_json(json.loads(m)), json.loads(s), c, tag_map.get(d, []))
            for d, m, s, c in rows
        ]

    def list(self, kind: str | None = None) -> list[Record]:
        return self._records(cat.artifacts.c.kind == kind if kind else None)

    def get(self, digest: str) -> Record:
        recs = self._records(cat.artifacts.c.digest == digest)
        if not recs:
            raise NotFound(f"artifact {digest} is not in the store: run `owl ls` to see what is")
        return recs[0]

    def find(self, ref: str) -> Record:
        return self.get(self.resolve(ref))

    def resolve(self, ref: str) -> str:
        """A name, ``name:tag``, full digest or digest prefix -> the digest. Unknown or ambiguous refs
        raise with close matches listed."""
        if not self.exists:
            raise NotFound(
                f"{ref!r} not found: the store at {self.home} is empty; add something with `owl import PATH`"
            )
        with self.engine.connect() as conn:
            if ":" not in ref or not ref.startswith("sha256:"):
                try:
                    name, tag = parse_name(ref)
                except Exception:
                    name, tag = None, None
                if name is not None:
                    row = conn.execute(
                        select(cat.tags.c.digest).where(cat.tags.c.name == name, cat.tags.c.tag == tag)
                    ).first()
                    if row:
                        return row[0]
            prefix = digest_prefix(ref)
            if prefix:
                hits = [
                    r[0]
                    for r in conn.execute(
                        select(cat.artifacts.c.digest).where(
                            cat.artifacts.c.digest.startswith("sha256:" + prefix)
                        )
                    ).all()
                ]
                if len(hits) == 1:
                    return hits[0]
                if len(hits) > 1:
                    shown = ", ".join(h.removeprefix("sha256:")[:16] for h in hits[:5])
                    raise Ambiguous(
                        f"{ref!r} matches {len(hits)} artifacts ({shown}): give more digest characters"
                    )
            names = [
                format_name(n, t) for n, t in conn.execute(select(cat.tags.c.name, cat.tags.c.tag)).all()
            ]
        close = difflib.get_close_matches(ref, names, n=3, cutoff=0.5) or difflib.get_close_matches(
            ref, [n.split(":")[0] for n in names], n=3, cutoff=0.5
        )
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `owl ls` to see what is stored"
        raise NotFound(f"{ref!r} not found in the store{hint}")

    def edges_of(self, digest: str) -> tuple[list[Edge], list[Edge]]:
        """(edges to parents, edges from children) of one artifact."""
        e = cat.edges.c
        with self.engine.connect() as conn:
            up = conn.execute(
                select(e.child, e.relation, e.parent, e.parent_ref).where(e.child == digest)
            ).all()
            down = conn.execute(
                select(e.child, e.relation, e.parent, e.parent_ref).where(e.parent == digest)
            ).all()
        return [Edge(*r) for r in up], [Edge(*r) for r in down]

    def count(self) -> int:
        if not self.exists:
            return 0
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(cat.artifacts)).scalar_one()

    # ----- writing -------------------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A writer's session: put blobs inside it, then :meth:`commit` the manifest before it closes."""
        self._require_write()
        s = Session(self.blobs)
        try:
            yield s
        finally:
            s.close()

    def commit(
        self,
        manifest: Manifest,
        side: dict[str, Any],
        *,
        name: str | None = None,
        unresolved: Iterable[tuple[str, str]] = (),
    ) -> str:
        """Add the catalog row for an artifact whose blobs are all stored. Idempotent: the same
        manifest committed twice (even by two processes at once) yields one artifact."""
        self._require_write()
        for f in manifest.files:
            if not self.blobs.exists(f.sha256):
                raise Corrupt(f"cannot commit: blob for {f.path} (sha256:{f.sha256}) is not in the store")
        digest = manifest.digest()
        now = time.time()
        body = manifest.canonical().decode()
        with self.engine.begin() as conn:
            exists = conn.execute(
                select(cat.artifacts.c.digest).where(cat.artifacts.c.digest == digest)
            ).first()
            if not exists:
                try:
                    with conn.begin_nested():  # a savepoint: losing the race must not abort the tag update
                        self._insert(conn, digest, manifest, body, side, now, unresolved)
                except IntegrityError:
                    pass  # another writer committed the same artifact first (non-SQLite backends)
            if name:
                self._set_tag(conn, name, digest, now)
        return digest

    def _insert(
        self, conn: Any, digest: str, manifest: Manifest, body: str, side: dict, now: float, unresolved
    ) -> None:
        conn.execute(
            insert(cat.artifacts).values(
                digest=digest,
                kind=manifest.kind,
                format=manifest.format,
                license=manifest.license,
                size=manifest.size,
                manifest=body,
                side=canonical_json(side).decode(),
                created_at=now,
            )
        )
        if manifest.files:
            conn.execute(
                insert(cat.files),
                [
                    {"artifact": digest, "path": f.path, "sha256": f.sha256, "size": f.size}
                    for f in manifest.files
                ],
            )
        edge_rows = [
            {"child": digest, "relation": p.relation, "parent": p.digest, "parent_ref": None}
            for p in manifest.parents
        ]
        edge_rows += [
            {"child": digest, "relation": rel, "parent": None, "parent_ref": ref} for rel, ref in unresolved
        ]
        if edge_rows:
            conn.execute(insert(cat.edges), edge_rows)

    def _set_tag(self, conn: Any, ref: str, digest: str, now: float) -> None:
        name, tag = parse_name(ref)
        t = cat.tags.c
        if conn.execute(select(t.digest).where(t.name == name, t.tag == tag)).first():
            conn.execute(
                update(cat.tags).where(t.name == name, t.tag == tag).values(digest=digest, updated_at=now)
            )
        else:
            conn.execute(insert(cat.tags).values(name=name, tag=tag, digest=digest, updated_at=now))

    def tag(self, ref: str, new: str) -> str:
        """Point ``new`` (``name[:tag]``) at the artifact ``ref`` names; like Ollama's copy, no files move."""
        self._require_write()
        parse_name(new)
        digest = self.resolve(ref)
        with self.engine.begin() as conn:
            self._set_tag(conn, new, digest, time.time())
        return digest

    def untag(self, ref: str) -> None:
        self._require_write()
        name, tag = parse_name(ref)
        with self.engine.begin() as conn:
            n = conn.execute(delete(cat.tags).where(cat.tags.c.name == name, cat.tags.c.tag == tag)).rowcount
        if not n:
            raise NotFound(f"tag {name}:{tag} not found: run `owl ls` to see tags")

    def update_side(self, digest: str, **changes: Any) -> None:
        """Merge keys into an artifact's side record (unhashed: evaluations, notes, attachments)."""
        self._require_write()
        rec = self.get(digest)
        rec.side.update(changes)
        with self.engine.begin() as conn:
            conn.execute(
                update(cat.artifacts)
                .where(cat.artifacts.c.digest == digest)
                .values(side=canonical_json(rec.side).decode())
            )

    def resolve_unresolved(self, ref: str, digest: str) -> int:
        """Attach edges that named ``ref`` but found no parent to the artifact now stored as ``digest``."""
        self._require_write()
        e = cat.edges.c
        with self.engine.begin() as conn:
            return conn.execute(
                update(cat.edges).where(e.parent.is_(None), e.parent_ref == ref).values(parent=digest)
            ).rowcount

    def remove(self, ref: str, *, force: bool = False) -> Record:
        """Remove an artifact's catalog entry and tags; its blobs go at the next ``gc``."""
        self._require_write()
        digest = self.resolve(ref)
        rec = self.get(digest)
        _, children = self.edges_of(digest)
        if children and not force:
            names = ", ".join(sorted({self._label(c.child) for c in children}))
            raise Refused(f"{rec.name} has dependents ({names}): remove them first, or use --force")
        with self.engine.begin() as conn:
            conn.execute(delete(cat.tags).where(cat.tags.c.digest == digest))
            conn.execute(delete(cat.files).where(cat.files.c.artifact == digest))
            # dependents keep their edge, now unresolved, naming what they were made from
            conn.execute(
                update(cat.edges).where(cat.edges.c.parent == digest).values(parent=None, parent_ref=digest)
            )
            conn.execute(delete(cat.edges).where(cat.edges.c.child == digest))
            conn.execute(delete(cat.artifacts).where(cat.artifacts.c.digest == digest))
        return rec

    def _label(self, digest: str) -> str:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(cat.tags.c.name, cat.tags.c.tag).where(cat.tags.c.digest == digest)
            ).first()
        return format_name(*row) if row else digest.removeprefix("sha256:")[:12]

    def label(self, digest: str | None) -> str:
        return self._label(digest) if digest else "?"

    def gc(self) -> GcReport:
        """Mark and sweep: remove blobs no artifact references, dead writers' temp files, stale checkouts.
        Safe while other writers run: their sessions are locked and their blobs pinned."""
        self._require_write()
        report = GcReport()
        on_disk = list(self.blobs.iter_all())  # 1. list first...
        dead, pinned = dead_sessions(self.blobs)  # 2. ...then live writers' pins...
        with self.engine.connect() as conn:  # 3. ...then what the catalog references (see blobs.py)
            referenced = {r[0] for r in conn.execute(select(cat.files.c.sha256).distinct()).all()}
            live = {r[0].removeprefix("sha256:") for r in conn.execute(select(cat.artifacts.c.digest)).all()}
        for d in dead:
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
            report.temp_removed += 1
        for hexdigest, path in on_disk:
            if hexdigest in referenced or hexdigest in pinned:
                continue
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            report.blobs_removed += 1
            report.bytes_freed += size
        checkouts = self.home / "checkouts"
        if checkouts.is_dir():
            for d in checkouts.iterdir():
                if d.name not in live:
                    shutil.rmtree(d, ignore_errors=True)
                    report.checkouts_removed += 1
        return report

    # ----- files out ---------------------------------------------------------------------------
    def verify(self, digest: str) -> list[str]:
        """Re-hash every file of an artifact; return one problem line per corrupt or missing file."""
        rec = self.get(digest)
        problems = []
        for f in rec.manifest.files:
            try:
                self.blobs.verify(f.sha256)
            except Corrupt as e:
                problems.append(f"{rec.name}: {f.path}: {e}")
        return problems

    def export(self, digest: str, dest: Path, *, link: bool = False) -> Path:
        """Write an artifact's files as a folder. Copies by default, so editing the folder can never
        touch the store; ``link`` hardlinks (fast, shares the files: edit only by replacing them)."""
        rec = self.get(digest)
        if dest.exists() and any(dest.iterdir()):
            raise Refused(f"{dest} exists and is not empty: choose a new folder")
        dest.mkdir(parents=True, exist_ok=True)
        for f in rec.manifest.files:
            check_rel_path(f.path)
            src = self.blobs.path(f.sha256)
            if not src.is_file():
                raise Corrupt(f"{rec.name}: {f.path} is missing from the store: run `owl verify {rec.name}`")
            out = dest / f.path
            out.parent.mkdir(parents=True, exist_ok=True)
            if link:
                os.link(src, out)
            else:
                shutil.copyfile(src, out)
                os.chmod(out, 0o644)
        return dest

    def checkout(self, digest: str) -> Path:
        """A folder of symlinks to an artifact's blobs, for loaders that need real paths. Built in a
        temp dir and renamed into place, so it is either whole or absent."""
        rec = self.get(digest)
        hexd = digest.removeprefix("sha256:")
        final = self.home / "checkouts" / hexd
        if final.is_dir():
            return final
        with self.session() as s:
            tmp = s.dir / "checkout"
            for f in rec.manifest.files:
                out = tmp / check_rel_path(f.path)
                out.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(self.blobs.path(f.sha256), out)
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(tmp, final)
                fsync_dir(final.parent)
            except OSError:
                if not final.is_dir():  # someone else won the race otherwise
                    raise
        return final

    def _require_write(self) -> None:
        if not self.write:
            raise RuntimeError("store opened read-only")  # a programming error, not a user error


def open_store(home: Path | None = None, *, write: bool = False) -> Store:
    return Store(home or default_home(), write=write)

"""The store facade: every read and write of artifacts goes through :class:`Store`.

Layout under ``OWL_HOME`` (default: platformdirs' user data dir for "owlkit")::

    blobs/sha256/ab/cdef…     content-addressed files, read-only, stored once across all artifacts
    catalog.db                SQLite catalog (WAL) unless OWL_DB names another database
    tmp/session-*/            writers' temp files (see blobs.Session); gc.lock keeps gc and writers apart
    checkouts/<hex>/          read-only views of an artifact's files as links, for loaders that need a folder
"""

from __future__ import annotations

import difflib
import errno
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import Ambiguous, Corrupt, NotFound, Refused, UsageError
from owlkit.store import writer as writes
from owlkit.store.blobs import Blobs, Session, dead_sessions, exclusive_gc, fsync_dir
from owlkit.store.manifest import Manifest, check_digest, check_rel_path
from owlkit.store.names import digest_prefix, format_name, parse_name
from owlkit.store.reader import SCHEMA_HEAD, Reader, sqlite_url
from owlkit.store.records import Facts, SideInfo
from owlkit.store.writer import Writer


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
    def facts(self) -> Facts:
        """The manifest's facts, typed (``manifest.facts`` is the raw dict)."""
        return Facts(self.manifest.facts)

    @property
    def info(self) -> SideInfo:
        """The side record, typed (``side`` is the raw dict)."""
        return SideInfo(self.side)

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
    swept: bool = False  # False when active writers made gc leave blobs for a later run


class Store:
    def __init__(self, home: Path, *, write: bool) -> None:
        home = Path(
            os.path.abspath(home)
        )  # checkouts link to blobs by path; a relative home would break them
        self.home = home
        self.write = write
        self.blobs = Blobs(home)
        self.url = os.environ.get("OWL_DB") or sqlite_url(home)
        self.reader = Reader(self.url)
        self._writer: Writer | None = None
        if write:
            home.mkdir(parents=True, exist_ok=True)
            if self.reader.revision() != SCHEMA_HEAD:  # create or migrate: the one time Alembic loads
                from owlkit.store import catalog

                catalog.upgrade(self.url, home / "catalog.lock")
            self.exists = True
        else:
            sqlite_file = self.url.removeprefix("sqlite:///") if self.url.startswith("sqlite:///") else None
            self.exists = (
                sqlite_file is None or Path(sqlite_file).exists()
            ) and self.reader.check_schema() is not None

    @property
    def writer(self) -> Writer:
        """The catalog's write side (plain SQL; store/writer.py)."""
        self._require_write()
        if self._writer is None:
            self._writer = Writer(self.url)
        return self._writer

    def close(self) -> None:
        self.reader.close()
        if self._writer is not None:
            self._writer.close()

    # ----- reading -------------------------------------------------------------------------------
    def _records(self, where: str = "", **params: Any) -> list[Record]:
        if not self.exists:
            return []
        rows = self.reader.rows(
            f"SELECT digest, manifest, side, created_at FROM artifacts {where} ORDER BY created_at", **params
        )
        tag_map: dict[str, list[str]] = {}
        for d, n, t in self.reader.rows("SELECT digest, name, tag FROM tags ORDER BY name, tag"):
            tag_map.setdefault(d, []).append(format_name(n, t))
        return [Record(d, _manifest(d, m), json.loads(s), c, tag_map.get(d, [])) for d, m, s, c in rows]

    def list(self, kind: str | None = None) -> list[Record]:
        return self._records("WHERE kind = :kind", kind=kind) if kind else self._records()

    def get(self, digest: str) -> Record:
        recs = self._records("WHERE digest = :digest", digest=digest)
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
        if not ref.startswith("sha256:"):
            try:
                name, tag = parse_name(ref)
            except UsageError:
                name, tag = None, None
            if name is not None:
                rows = self.reader.rows(
                    "SELECT digest FROM tags WHERE name = :name AND tag = :tag", name=name, tag=tag
                )
                if rows:
                    return rows[0][0]
        prefix = digest_prefix(ref)
        if prefix:
            hits = [
                r[0]
                for r in self.reader.rows(
                    "SELECT digest FROM artifacts WHERE substr(digest, 1, :n) = :p",
                    n=7 + len(prefix),
                    p="sha256:" + prefix,
                )
            ]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                shown = ", ".join(h.removeprefix("sha256:")[:16] for h in hits[:5])
                raise Ambiguous(
                    f"{ref!r} matches {len(hits)} artifacts ({shown}): give more digest characters"
                )
        names = [format_name(n, t) for n, t in self.reader.rows("SELECT name, tag FROM tags")]
        close = difflib.get_close_matches(ref, names, n=3, cutoff=0.5) or difflib.get_close_matches(
            ref, [n.split(":")[0] for n in names], n=3, cutoff=0.5
        )
        hint = f"; did you mean {', '.join(close)}?" if close else "; run `owl ls` to see what is stored"
        raise NotFound(f"{ref!r} not found in the store{hint}")

    def edges_of(self, digest: str) -> tuple[list[Edge], list[Edge]]:
        """(edges to parents, edges from children) of one artifact."""
        cols = "SELECT child, relation, parent, parent_ref FROM edges"
        up = self.reader.rows(f"{cols} WHERE child = :d ORDER BY id", d=digest)
        down = self.reader.rows(f"{cols} WHERE parent = :d ORDER BY id", d=digest)
        return [Edge(*r) for r in up], [Edge(*r) for r in down]

    def count(self) -> int:
        return self.reader.rows("SELECT count(*) FROM artifacts")[0][0] if self.exists else 0

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
        row = {
            "digest": digest,
            "kind": manifest.kind,
            "format": manifest.format,
            "license": manifest.license,
            "size": manifest.size,
            "manifest": manifest.canonical().decode(),
            "side": side_json(side),
            "created_at": now,
        }
        files = [
            {"artifact": digest, "path": f.path, "sha256": f.sha256, "size": f.size} for f in manifest.files
        ]
        edges = [
            {"child": digest, "relation": p.relation, "parent": p.digest, "parent_ref": None}
            for p in manifest.parents
        ]
        edges += [
            {"child": digest, "relation": rel, "parent": None, "parent_ref": ref} for rel, ref in unresolved
        ]
        with self.writer.transaction() as tx:
            # ON CONFLICT says whether this writer stored it (another may have, even at the same moment)
            if writes.insert_artifact(tx, row, files, edges):
                writes.attach_unresolved(tx, digest, digest)  # children whose parent was removed, now back
            if name:
                writes.set_tag(tx, *parse_name(name), digest, now)
        return digest

    def tag(self, ref: str, new: str) -> str:
        """Point ``new`` (``name[:tag]``) at the artifact ``ref`` names; like Ollama's copy, no files move."""
        self._require_write()
        name, tag = parse_name(new)
        digest = self.resolve(ref)
        with self.writer.transaction() as tx:
            writes.set_tag(tx, name, tag, digest, time.time())
        return digest

    def untag(self, ref: str) -> None:
        self._require_write()
        name, tag = parse_name(ref)
        with self.writer.transaction() as tx:
            n = writes.delete_tag(tx, name, tag)
        if not n:
            raise NotFound(f"tag {name}:{tag} not found: run `owl ls` to see tags")

    def update_side(self, digest: str, **changes: Any) -> None:
        """Merge keys into an artifact's side record (unhashed: evaluations, notes, attachments)."""
        with self.writer.transaction() as tx:  # read and write in one write transaction: no lost updates
            side = json.loads(writes.get_side(tx, digest))
            side.update(changes)
            writes.set_side(tx, digest, side_json(side))

    def resolve_unresolved(self, ref: str, digest: str) -> int:
        """Attach edges that named ``ref`` but found no parent to the artifact now stored as ``digest``."""
        self._require_write()
        with self.writer.transaction() as tx:
            return writes.attach_unresolved(tx, ref, digest)

    def remove(self, ref: str, *, force: bool = False) -> tuple[Record, bool]:
        """Remove an artifact's catalog entry and tags; its blobs go at the next ``gc``. A name that is
        one of several only untags (returns False as the second item), like ``docker rmi``."""
        self._require_write()
        digest = self.resolve(ref)
        rec = self.get(digest)
        if len(rec.tags) > 1 and not digest_prefix(ref) and not ref.startswith("sha256:"):
            # like `docker rmi` on one of several tags: drop this name, keep the artifact
            self.untag(ref)
            return rec, False
        _, children = self.edges_of(digest)
        if children and not force:
            names = ", ".join(sorted({self._label(c.child) for c in children}))
            raise Refused(f"{rec.name} has dependents ({names}): remove them first, or use --force")
        with self.writer.transaction() as tx:
            writes.delete_artifact(tx, digest)
        return rec, True

    def _label(self, digest: str) -> str:
        rows = self.reader.rows("SELECT name, tag FROM tags WHERE digest = :d ORDER BY name, tag", d=digest)
        return format_name(*rows[0]) if rows else digest.removeprefix("sha256:")[:12]

    def label(self, digest: str | None) -> str:
        return self._label(digest) if digest else "?"

    def gc(self) -> GcReport:
        """Mark and sweep: remove dead writers' temp files, then (when no writer is active) every blob no
        artifact references and stale checkouts. Never blocks: with writers active the sweep waits for a
        later run (``report.swept`` False), as a blob a writer placed is referenced only once it commits."""
        self._require_write()
        report = GcReport()
        for d in dead_sessions(self.blobs):
            shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
            report.temp_removed += 1
        with exclusive_gc(self.blobs) as acquired:
            if not acquired:
                return report
            report.swept = True
            referenced = {r[0] for r in self.reader.rows("SELECT DISTINCT sha256 FROM files")}
            live = {r[0].removeprefix("sha256:") for r in self.reader.rows("SELECT digest FROM artifacts")}
            for hexdigest, path in self.blobs.iter_all():
                if hexdigest in referenced:
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
    def verify(
        self,
        digest: str,
        seen: dict[str, str | None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Re-hash every file of an artifact; return one problem line per corrupt or missing file.
        ``seen`` carries results across calls so a blob shared by many artifacts is hashed once."""
        rec = self.get(digest)
        seen = {} if seen is None else seen
        problems = []
        if rec.manifest.digest() != digest:
            problems.append(
                f"{rec.name}: its manifest no longer hashes to {digest[:19]} (catalog tampered with)"
            )
        listed = {
            (r[0], r[1])
            for r in self.reader.rows("SELECT path, sha256 FROM files WHERE artifact = :d", d=digest)
        }
        if listed != {(f.path, f.sha256) for f in rec.manifest.files}:
            problems.append(
                f"{rec.name}: the catalog's file list differs from its manifest (catalog tampered with)"
            )
        for f in rec.manifest.files:
            if f.sha256 not in seen:
                try:
                    self.blobs.verify(f.sha256, progress)
                    seen[f.sha256] = None
                except Corrupt as e:
                    seen[f.sha256] = str(e)
            if seen[f.sha256]:
                problems.append(f"{rec.name}: {f.path}: {seen[f.sha256]}")
        return problems

    def export(self, digest: str, dest: Path, *, link: bool = False) -> Path:
        """Write an artifact's files as a folder. Copies by default, so editing the folder can never
        touch the store; ``link`` hardlinks (fast, shares the files: edit only by replacing them)."""
        rec = self.get(digest)
        if dest.exists() and not dest.is_dir():
            raise Refused(f"{dest} is a file, not a folder: choose a new folder")
        if dest.exists() and any(dest.iterdir()):
            raise Refused(f"{dest} exists and is not empty: choose a new folder")
        dest.mkdir(parents=True, exist_ok=True)
        try:
            self._export_files(rec, dest, link)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)  # never leave half an export behind
            raise
        return dest

    def _export_files(self, rec: Record, dest: Path, link: bool) -> None:
        for f in rec.manifest.files:
            check_rel_path(f.path)
            src = self.blobs.path(f.sha256)
            if not src.is_file():
                raise Corrupt(f"{rec.name}: {f.path} is missing from the store: run `owl verify {rec.name}`")
            out = dest / f.path
            out.parent.mkdir(parents=True, exist_ok=True)
            if link:
                try:
                    os.link(src, out)
                    continue
                except OSError as e:
                    if e.errno != errno.EXDEV:
                        raise
                    link = False  # another file system: hardlinks are impossible there, copy instead
            shutil.copyfile(src, out)
            os.chmod(out, 0o644)

    def checkout(self, digest: str) -> Path:
        """A folder of symlinks to an artifact's blobs, for loaders that need real paths. Built in a
        temp dir and renamed into place, so it is either whole or absent."""
        rec = self.get(check_digest(digest))
        hexd = digest.removeprefix("sha256:")
        final = self.home / "checkouts" / hexd
        if final.is_dir():
            return final
        with self.session() as s:
            tmp = s.dir / "checkout"
            for f in rec.manifest.files:
                out = tmp / check_rel_path(f.path)
                out.parent.mkdir(parents=True, exist_ok=True)
                # relative links keep working if the whole store is moved
                target = self.blobs.path(f.sha256)
                os.symlink(os.path.relpath(target, final / os.path.dirname(f.path)), out)
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


def side_json(side: dict[str, Any]) -> str:
    """Side records are not hashed and may carry what canonical JSON refuses (NaN from a config,
    odd types): keep them rather than fail an import after its files are stored."""
    return json.dumps(side, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _manifest(digest: str, text: str) -> Manifest:
    """Parse a catalog row's manifest; a tampered or damaged row is Corrupt, naming the artifact."""
    try:
        check_digest(digest)
        return Manifest.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise Corrupt(
            f"catalog entry {digest[:19]} is damaged ({e}); remove it with `owl rm --force {digest[:19]}`"
        ) from None


def open_store(home: Path | None = None, *, write: bool = False) -> Store:
    return Store(home or default_home(), write=write)

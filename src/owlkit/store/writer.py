"""Catalog writes as plain SQL that SQLite and PostgreSQL both run (upserts with ``ON CONFLICT``).

A SQLite catalog is written through the stdlib ``sqlite3`` driver, like reader.py reads it: importing
SQLAlchemy costs about 0.15 s, which was a third of a small ``owl import``. Any other database
(``OWL_DB``) runs the same SQL text through SQLAlchemy. The schema itself (tables for Alembic, the
migrations) stays in catalog.py, imported only when a catalog must be created or migrated.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from owlkit.store.reader import Connections

T = TypeVar("T")


class Tx:
    """One write transaction: ``execute`` returns the rows it changed, ``first`` the first row."""

    def __init__(self, run: Callable[[str, Any], Any]) -> None:
        self._run = run

    def execute(self, sql: str, **params: Any) -> int:
        return self._run(sql, params).rowcount

    def execute_many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._run(sql, rows)

    def first(self, sql: str, **params: Any) -> tuple | None:
        row = self._run(sql, params).fetchone()
        return tuple(row) if row is not None else None


class Writer(Connections):
    def _connect_sqlite(self) -> sqlite3.Connection:
        if self._sqlite is None:
            # autocommit mode: transactions are ours (BEGIN IMMEDIATE below), never the driver's
            conn = sqlite3.connect(
                self.url.removeprefix("sqlite:///"), timeout=60, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")  # a committed catalog row survives power loss
            retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))  # readers never block writers
            self._sqlite = conn
        return self._sqlite

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        if self.url.startswith("sqlite:///"):
            conn = self._connect_sqlite()
            # Take the write lock up front: a deferred transaction that later upgrades to a write fails
            # at once with SQLITE_BUSY under WAL instead of waiting for the busy timeout.
            retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"))
            try:
                yield Tx(
                    lambda sql, p: conn.executemany(sql, p) if isinstance(p, list) else conn.execute(sql, p)
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return
        from sqlalchemy import text

        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        with self._engine.begin() as c:
            yield Tx(lambda sql, p: c.execute(text(sql), p))


def retry_busy(run: Callable[[], T], seconds: float = 60.0) -> T:
    """SQLite answers some lock conflicts with SQLITE_BUSY at once instead of calling its busy handler
    (to avoid deadlocks, e.g. while another process turns a brand-new catalog into WAL mode); two
    processes creating one store at the same moment met it once. Retry those for ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return run()
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ----- the writes ---------------------------------------------------------------------------------
ARTIFACT_COLUMNS = ("digest", "kind", "format", "license", "size", "manifest", "side", "created_at")


def insert_artifact(tx: Tx, row: dict[str, Any], file_rows: list[dict], edge_rows: list[dict]) -> bool:
    """One artifact with its files and edges; False when another writer stored it first (then nothing
    else is written: its files and edges are the same, the digest covers them)."""
    cols = ", ".join(ARTIFACT_COLUMNS)
    values = ", ".join(f":{c}" for c in ARTIFACT_COLUMNS)
    if not tx.execute(
        f"INSERT INTO artifacts ({cols}) VALUES ({values}) ON CONFLICT (digest) DO NOTHING", **row
    ):
        return False
    tx.execute_many(
        "INSERT INTO files (artifact, path, sha256, size) VALUES (:artifact, :path, :sha256, :size)",
        file_rows,
    )
    tx.execute_many(
        "INSERT INTO edges (child, relation, parent, parent_ref) VALUES (:child, :relation, :parent, :parent_ref)",
        edge_rows,
    )
    return True


def set_tag(tx: Tx, name: str, tag: str, digest: str, now: float) -> None:
    tx.execute(
        "INSERT INTO tags (name, tag, digest, updated_at) VALUES (:name, :tag, :digest, :now) "
        "ON CONFLICT (name, tag) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at",
        name=name,
        tag=tag,
        digest=digest,
        now=now,
    )


def delete_tag(tx: Tx, name: str, tag: str) -> int:
    return tx.execute("DELETE FROM tags WHERE name = :name AND tag = :tag", name=name, tag=tag)


def get_side(tx: Tx, digest: str) -> str:
    row = tx.first("SELECT side FROM artifacts WHERE digest = :d", d=digest)
    if row is None:
        from owlkit.errors import NotFound

        raise NotFound(f"artifact {digest} is not in the store: run `owl ls` to see what is")
    return row[0]


def set_side(tx: Tx, digest: str, side_json: str) -> None:
    tx.execute("UPDATE artifacts SET side = :side WHERE digest = :d", side=side_json, d=digest)


def attach_unresolved(tx: Tx, ref: str, digest: str) -> int:
    return tx.execute(
        "UPDATE edges SET parent = :digest WHERE parent IS NULL AND parent_ref = :ref", digest=digest, ref=ref
    )


def delete_artifact(tx: Tx, digest: str) -> None:
    tx.execute("DELETE FROM tags WHERE digest = :d", d=digest)
    tx.execute("DELETE FROM files WHERE artifact = :d", d=digest)
    # dependents keep their edge, now unresolved, naming what they were made from
    tx.execute("UPDATE edges SET parent = NULL, parent_ref = :d WHERE parent = :d", d=digest)
    tx.execute("DELETE FROM edges WHERE child = :d", d=digest)
    tx.execute("DELETE FROM artifacts WHERE digest = :d", d=digest)

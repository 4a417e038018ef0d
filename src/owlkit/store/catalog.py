"""The catalog: artifacts, their files, tags and lineage edges, in SQL (SQLAlchemy 2 Core).

SQLite in WAL mode by default (``<home>/catalog.db``); any SQLAlchemy URL in ``OWL_DB`` works too
(PostgreSQL for a shared hub). The schema is managed by Alembic from the first table on. Write
commands migrate to head on open (importing Alembic only when the schema is behind); read commands
check the version with one query and never import Alembic.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from owlkit.store.reader import KNOWN_REVISIONS, SCHEMA_HEAD, check_revision

metadata = MetaData()

artifacts = Table(
    "artifacts",
    metadata,
    Column("digest", String(71), primary_key=True),  # "sha256:" + 64 hex
    Column("kind", String(16), nullable=False),
    Column("format", String(32), nullable=False),
    Column("license", String(200), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("manifest", Text, nullable=False),  # canonical JSON, hashed
    Column("side", Text, nullable=False),  # side record JSON, not hashed
    Column("created_at", Float, nullable=False),
)

files = Table(
    "files",
    metadata,
    Column("artifact", String(71), ForeignKey("artifacts.digest", ondelete="CASCADE"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Index("ix_files_sha256", "sha256"),
)

tags = Table(
    "tags",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("tag", String(128), primary_key=True),
    Column("digest", String(71), ForeignKey("artifacts.digest", ondelete="CASCADE"), nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_tags_digest", "digest"),
)

edges = Table(
    "edges",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("child", String(71), ForeignKey("artifacts.digest", ondelete="CASCADE"), nullable=False),
    Column("relation", String(32), nullable=False),
    # parent is NULL when the parent is named but not in the store (an adapter's base not yet imported)
    Column("parent", String(71), nullable=True),
    Column("parent_ref", String(500), nullable=True),  # the name the child gave its parent, when unresolved
    Index("ix_edges_child", "child"),
    Index("ix_edges_parent", "parent"),
)


def _sqlite_pragmas(engine: Engine, *, immediate: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # pysqlite must not issue its own BEGIN; we do below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA synchronous = FULL")  # a committed catalog row survives power loss
        if immediate:  # readers never block writers (persists in the file)
            _retry_busy(lambda: cur.execute("PRAGMA journal_mode = WAL"))
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that later upgrades to a write
        # fails at once with SQLITE_BUSY under WAL instead of waiting for the busy timeout.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _retry_busy(run: Any, seconds: float = 60.0) -> Any:
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


def make_engine(url: str, *, write: bool) -> Engine:
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        _sqlite_pragmas(engine, immediate=write)
    return engine


def current_revision(conn: Connection) -> str | None:
    """The schema version on an open SQLAlchemy connection. None for an empty database."""
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(engine: Engine, lock_path: Path) -> str | None:
    """Apply Alembic migrations up to head; returns the revision before. Concurrent callers serialise."""
    with engine.connect() as conn:
        before = current_revision(conn)
    if before == SCHEMA_HEAD:
        return before
    if before is not None and before not in KNOWN_REVISIONS:
        check_revision(before)  # raises: a newer owlkit wrote this catalog; never migrate it backwards
    from alembic import command
    from alembic.config import Config

    with _file_lock(lock_path):
        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return before


# ----- writes (reads are plain SQL in reader.py) ---------------------------------------------------
def artifact_exists(conn: Connection, digest: str) -> bool:
    return conn.execute(select(artifacts.c.digest).where(artifacts.c.digest == digest)).first() is not None


def insert_artifact(
    conn: Connection, row: dict[str, Any], file_rows: list[dict], edge_rows: list[dict]
) -> None:
    """One artifact with its files and edges. Losing a race to another writer of the same artifact is
    fine: a savepoint keeps the surrounding transaction (and its tag update) alive."""
    try:
        with conn.begin_nested():
            conn.execute(insert(artifacts).values(**row))
            if file_rows:
                conn.execute(insert(files), file_rows)
            if edge_rows:
                conn.execute(insert(edges), edge_rows)
    except IntegrityError:
        if not artifact_exists(conn, row["digest"]):
            raise


def set_tag(conn: Connection, name: str, tag: str, digest: str, now: float) -> None:
    t = tags.c
    if conn.execute(select(t.digest).where(t.name == name, t.tag == tag)).first():
        conn.execute(update(tags).where(t.name == name, t.tag == tag).values(digest=digest, updated_at=now))
    else:
        conn.execute(insert(tags).values(name=name, tag=tag, digest=digest, updated_at=now))


def delete_tag(conn: Connection, name: str, tag: str) -> int:
    return conn.execute(delete(tags).where(tags.c.name == name, tags.c.tag == tag)).rowcount


def get_side(conn: Connection, digest: str) -> str:
    return conn.execute(select(artifacts.c.side).where(artifacts.c.digest == digest)).scalar_one()


def set_side(conn: Connection, digest: str, side_json: str) -> None:
    conn.execute(update(artifacts).where(artifacts.c.digest == digest).values(side=side_json))


def attach_unresolved(conn: Connection, ref: str, digest: str) -> int:
    e = edges.c
    return conn.execute(
        update(edges).where(e.parent.is_(None), e.parent_ref == ref).values(parent=digest)
    ).rowcount


def delete_artifact(conn: Connection, digest: str) -> None:
    conn.execute(delete(tags).where(tags.c.digest == digest))
    conn.execute(delete(files).where(files.c.artifact == digest))
    # dependents keep their edge, now unresolved, naming what they were made from
    conn.execute(update(edges).where(edges.c.parent == digest).values(parent=None, parent_ref=digest))
    conn.execute(delete(edges).where(edges.c.child == digest))
    conn.execute(delete(artifacts).where(artifacts.c.digest == digest))

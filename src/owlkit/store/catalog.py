"""The catalog's schema: artifacts, their files, tags and lineage edges (SQLAlchemy 2 Core tables).

SQLite in WAL mode by default (``<home>/catalog.db``); any SQLAlchemy URL in ``OWL_DB`` works too
(PostgreSQL for a shared hub). The schema is managed by Alembic from the first table on. This module is
imported only to create or migrate a catalog (a write command finding the schema behind); reads are
plain SQL in reader.py, writes in writer.py.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
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
    event,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, ProgrammingError

from owlkit.store.reader import KNOWN_REVISIONS, SCHEMA_HEAD, check_revision
from owlkit.store.writer import retry_busy

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


def make_engine(url: str) -> Engine:
    """An engine for migrations, with the pragmas writer.py sets on its own connections."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout = 60000")
            cur.execute("PRAGMA foreign_keys = ON")
            retry_busy(lambda: cur.execute("PRAGMA journal_mode = WAL"))
            cur.close()

    return engine


def current_revision(conn: Connection) -> str | None:
    """The schema version on an open SQLAlchemy connection. None for an empty database."""
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except (OperationalError, ProgrammingError):
        return None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(url: str, lock_path: Path) -> str | None:
    """Apply Alembic migrations up to head; returns the revision before. Concurrent callers serialise
    on ``lock_path`` and the second finds the work done."""
    from alembic import command
    from alembic.config import Config

    engine = make_engine(url)
    try:
        with _file_lock(lock_path):
            with engine.connect() as conn:
                before = current_revision(conn)
            if before == SCHEMA_HEAD:
                return before
            if before is not None and before not in KNOWN_REVISIONS:
                check_revision(
                    before
                )  # raises: a newer owlkit wrote this catalog; never migrate it backwards
            cfg = Config()
            cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        return before
    finally:
        engine.dispose()

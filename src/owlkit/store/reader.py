"""Read queries as plain SQL, and the schema check read commands make.

For a SQLite catalog the queries run on the stdlib ``sqlite3`` driver: importing SQLAlchemy alone costs
about 0.3 s here, most of the half second `owl ls` may take. Any other database (``OWL_DB``) runs the
same SQL text through SQLAlchemy. Writes are plain SQL too (``writer.py``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from owlkit.errors import SchemaMismatch

# The Alembic revision this code expects; tests check it equals the migration scripts' head.
SCHEMA_HEAD = "0001_initial"
KNOWN_REVISIONS = ("0001_initial",)


class Connections:
    """A catalog URL's connection: stdlib sqlite3 for a SQLite file, else a SQLAlchemy engine, each made
    on first use (reads and writes keep their own)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Any = None

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._engine is not None:
            self._engine.dispose()


class Reader(Connections):
    def rows(self, sql: str, **params: Any) -> list[tuple]:
        if self.url.startswith("sqlite:///"):
            if self._sqlite is None:
                self._sqlite = sqlite3.connect(
                    self.url.removeprefix("sqlite:///"), timeout=60, check_same_thread=False
                )
            return self._sqlite.execute(sql, params).fetchall()
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        from sqlalchemy import text

        with self._engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params).all()]

    def revision(self) -> str | None:
        """The schema version, in one query; None for an empty database."""
        try:
            rows = self.rows("SELECT version_num FROM alembic_version")
        except Exception as e:  # no table yet: sqlite3.OperationalError or SQLAlchemy's ProgrammingError
            if "alembic_version" in str(e) or "no such table" in str(e):
                return None
            raise
        return rows[0][0] if rows else None

    def check_schema(self) -> str | None:
        """For read commands: fail clearly unless the schema is exactly the one this code knows."""
        return check_revision(self.revision())


def check_revision(rev: str | None) -> str | None:
    if rev is None or rev == SCHEMA_HEAD:
        return rev
    if rev in KNOWN_REVISIONS:
        raise SchemaMismatch(
            f"the owlkit catalog is at schema {rev}, this owlkit needs {SCHEMA_HEAD}: run `owl upgrade`"
        )
    raise SchemaMismatch(
        f"the owlkit catalog is at schema {rev}, newer than this owlkit knows ({SCHEMA_HEAD}): upgrade owlkit"
    )


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'catalog.db'}"

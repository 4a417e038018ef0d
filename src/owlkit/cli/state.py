"""The `Owl` that every command of this process calls (``--home`` picks its store)."""

from __future__ import annotations

from pathlib import Path

from owlkit.api import Owl

home: Path | None = None


def owl() -> Owl:
    return Owl(home)

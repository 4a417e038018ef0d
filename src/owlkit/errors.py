"""Every owlkit error in one module.

Each class carries a one-line message that names the thing and the fix, and an exit code the CLI
returns (documented in README.md). Classes also inherit a stdlib type so generic ``except`` clauses
keep working (``NotFound`` is a ``LookupError``, ``InvalidFile`` a ``ValueError``...).
"""

from __future__ import annotations


class OwlError(Exception):
    """Base of every user-facing failure. ``str(err)`` is the one line the CLI prints."""

    exit_code = 1


class UsageError(OwlError, ValueError):
    """A bad flag, option or argument value (``--name 'a b'``, ``--to nonsense``)."""

    exit_code = 2


class NotFound(OwlError, LookupError):
    """A reference, file or path that does not exist: ``model 'tiny' not found; try: tiny-llama``."""

    exit_code = 3


class Ambiguous(NotFound):
    """A reference (digest prefix, name) matching several artifacts; the message lists them."""


class InvalidFile(OwlError, ValueError):
    """A file that is malformed or breaks its format's rules: ``x.safetensors: header length 2^40
    exceeds the file size (1 024 bytes)``."""

    exit_code = 4


class Refused(OwlError, PermissionError):
    """A request owlkit will not carry out as asked: a pickle without ``--convert-pickle``, removing an
    artifact others depend on, applying an adapter to a different base, a load that would not fit."""

    exit_code = 5


class TermsForbid(Refused):
    """A planned use that an artifact's license (or one of its ancestors') forbids."""


class Corrupt(OwlError):
    """Stored data that fails its own checksum or is missing: ``owl verify`` names every such file."""

    exit_code = 6


class SchemaMismatch(OwlError):
    """The catalog was written by another version of owlkit: run ``owl upgrade`` (or upgrade owlkit)."""

    exit_code = 7


class MissingDependency(OwlError, ImportError):
    """An optional extra is needed: ``pip install 'owlkit[ml]'``."""

    exit_code = 8


class FileSystemError(OwlError, OSError):
    """The file system refused: no permission, disk full, not a folder, another device."""

    exit_code = 9


def missing_extra(module: str, extra: str, what: str) -> MissingDependency:
    """Build the error for a missing optional dependency, naming the extra to install."""
    return MissingDependency(f"{what} needs the '{module}' package: pip install 'owlkit[{extra}]'")


EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected internal error (re-run with --debug and report it)",
    UsageError.exit_code: "bad command-line usage or option value",
    NotFound.exit_code: "artifact, reference or path not found (or ambiguous)",
    InvalidFile.exit_code: "invalid or malformed file",
    Refused.exit_code: "refused: unsafe input, dependents exist, incompatible base, or would not fit",
    Corrupt.exit_code: "stored data corrupt or missing (owl verify)",
    SchemaMismatch.exit_code: "catalog schema differs from this owlkit: run owl upgrade",
    MissingDependency.exit_code: "an optional extra is not installed",
    FileSystemError.exit_code: "file system error: permission denied, disk full, not a folder",
    130: "interrupted (Ctrl-C)",
}


def with_article(word: object) -> str:
    """``word`` with its indefinite article, for messages: "a model", "an adapter"."""
    text = str(word)
    return f"{'an' if text[:1].lower() in 'aeiou' else 'a'} {text}"

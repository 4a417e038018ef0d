"""The reference grammar: ``name[:tag]`` (tag defaults to ``latest``) or a digest (prefix).

Names may carry namespaces like Hugging Face repo ids (``org/model``); each segment starts with a letter
or digit, and ``..``/``--`` sequences are refused so a name can never become a path trick.
"""

from __future__ import annotations

import re

from owlkit.errors import UsageError

DEFAULT_TAG = "latest"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_NAME = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,2}}")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST_PREFIX = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")
_HEX_ONLY = re.compile(r"[0-9a-f]{4,64}")  # such a name would shadow digest prefixes, so none is allowed


def parse_name(ref: str) -> tuple[str, str]:
    """Split and validate ``name[:tag]``. Raises UsageError naming the rule broken."""
    name, _, tag = ref.partition(":")
    tag = tag or DEFAULT_TAG
    if not _NAME.fullmatch(name) or ".." in name or "--" in name or len(name) > 200:
        raise UsageError(
            f"invalid name {name[:80]!r}: use letters, digits, '.', '_', '-' (optionally 'org/name'), "
            "starting with a letter or digit"
        )
    if _HEX_ONLY.fullmatch(name):
        raise UsageError(f"invalid name {name!r}: it reads as a digest prefix; add a letter outside a-f")
    if not _TAG.fullmatch(tag):
        raise UsageError(f"invalid tag {tag[:80]!r}: use letters, digits, '.', '_', '-' (at most 128)")
    return name, tag


def format_name(name: str, tag: str) -> str:
    return f"{name}:{tag}"


def digest_prefix(ref: str) -> str | None:
    """The hex part when ``ref`` looks like a digest or digest prefix (>= 4 hex chars), else None."""
    m = _DIGEST_PREFIX.fullmatch(ref)
    return m.group(1) if m else None


def default_name(stem: str) -> str:
    """A valid name derived from a file or folder name (``SmolLM2-135M-Instruct.Q4_1.gguf`` ->
    ``smollm2-135m-instruct.q4_1``)."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._")
    cleaned = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", cleaned))[:96].strip("-._")
    if not cleaned or _HEX_ONLY.fullmatch(cleaned):
        cleaned = f"artifact-{cleaned}".strip("-")
    return cleaned

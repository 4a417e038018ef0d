"""Model and dataset cards: a README.md whose YAML front matter holds the Hub metadata.

The front matter is the block between a first line ``---`` and the next ``---`` line. It is parsed
with ``yaml.safe_load`` (no Python objects), bounded in size, and turned into plain JSON values so the
caller can keep it in a side record. A card whose metadata cannot be used is not an error: the card
is still a file worth storing, so :func:`parse_card` returns ``({}, body)`` and
:func:`parse_card_checked` says why, for the caller to turn into a warning.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

# Front matter beyond this is not metadata anyone wrote by hand; refusing to parse it bounds the work.
MAX_FRONT_MATTER = 1 << 20  # 1 MiB
# A README is read up to this size: the metadata sits at its top, and the body is only kept for display.
MAX_CARD_BYTES = 4 << 20
# YAML aliases can make a tiny document describe a huge tree ("billion laughs"); copying it into JSON
# values would expand it, so the copy stops after this many nodes.
MAX_NODES = 100_000

CARD_NAME = "README.md"


class _TooBig(Exception):
    pass


def parse_card_checked(text: str) -> tuple[dict[str, Any], str, str | None]:
    """``(metadata, body, problem)``: ``problem`` is None, or one line saying why the front matter was
    ignored (invalid YAML, not a mapping, too large). A text without front matter has no problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return {}, text, None
    end = next((i for i in range(1, len(lines)) if lines[i].rstrip() == "---"), None)
    if end is None:
        return {}, text, "front matter has no closing '---' line"
    block = "".join(lines[1:end])
    body = "".join(lines[end + 1 :])
    if len(block.encode("utf-8", "surrogatepass")) > MAX_FRONT_MATTER:
        return {}, body, f"front matter is larger than {MAX_FRONT_MATTER} bytes"
    import yaml

    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 2})" if where is not None else ""
        return {}, body, f"front matter is not valid YAML{line}"
    if meta is None:
        return {}, body, None
    if not isinstance(meta, dict):
        return {}, body, f"front matter is a YAML {type(meta).__name__}, not a mapping"
    try:
        return _json_safe(meta, [0]), body, None
    except _TooBig:
        return {}, body, f"front matter expands to more than {MAX_NODES} values (YAML aliases)"


def parse_card(text: str) -> tuple[dict[str, Any], str]:
    """``(metadata, body)`` of a card. Metadata is ``{}`` when there is no usable front matter; use
    :func:`parse_card_checked` to learn why."""
    meta, body, _ = parse_card_checked(text)
    return meta, body


def find_card(folder: Path) -> Path | None:
    """The folder's README.md (exact name first, then any case), or None."""
    exact = folder / CARD_NAME
    if exact.is_file():
        return exact
    for p in sorted(folder.iterdir()):
        if p.name.lower() == CARD_NAME.lower() and p.is_file():
            return p
    return None


def read_card_checked(folder: Path) -> tuple[dict[str, Any], str, str | None] | None:
    """Like :func:`parse_card_checked` on the folder's README.md; None when there is none."""
    path = find_card(folder)
    if path is None:
        return None
    with open(path, "rb") as f:
        raw = f.read(MAX_CARD_BYTES)
    # A card is prose: undecodable bytes become U+FFFD rather than failing the import.
    return parse_card_checked(raw.decode("utf-8", errors="replace"))


def read_card(folder: Path) -> tuple[dict[str, Any], str] | None:
    """``(metadata, body)`` of ``folder/README.md``, or None when the folder has no card."""
    got = read_card_checked(folder)
    return None if got is None else got[:2]


def _json_safe(value: Any, count: list[int]) -> Any:
    """A copy of a safe_load result made of JSON types only: dates become ISO strings, keys become
    strings, sets and tuples become lists. ``count`` bounds the nodes visited."""
    count[0] += 1
    if count[0] > MAX_NODES:
        raise _TooBig
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        # NaN and infinities are not JSON; keep their YAML spelling.
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, datetime.date | datetime.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json_safe(v, count) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v, count) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)

"""A model card's Markdown sections, for the components a card section stands for (data card,
evaluation results, research paper, sample outputs)."""

from __future__ import annotations

import re

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_PLACEHOLDER = re.compile(r"\[?more information needed\]?", re.IGNORECASE)
# a heading over an empty template section ("[More Information Needed]") is not a section
MIN_SECTION_WORDS = 3


def card_sections(body: str) -> list[tuple[str, str]]:
    """``(heading, text)`` for each Markdown heading with substantive text under it (up to the next
    heading of any level). Template comments and "[More Information Needed]" do not count; headings
    inside fenced code blocks are code, not headings."""
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in body.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        m = None if fenced else _HEADING.match(line)
        if m:
            sections.append((m.group(2).strip(), []))
        elif sections:
            sections[-1][1].append(line)
    out = []
    for heading, lines in sections:
        text = _PLACEHOLDER.sub("", _COMMENT.sub("", "\n".join(lines))).strip()
        if len(re.findall(r"\w+", text)) >= MIN_SECTION_WORDS:
            out.append((heading, text))
    return out

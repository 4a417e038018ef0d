"""The reference pages agree with the CLI: each usage block is what `owl CMD --help` prints now, every
command has one, and every relative link in the README and docs/ points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

from owlkit.cli import docs

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md"))


def test_generated_blocks_match_the_code() -> None:
    """Usage blocks = the CLI's help, the method table = `Owl`, example blocks = the example files."""
    stale = [
        str(p.relative_to(ROOT))
        for p in [ROOT / "README.md", *PAGES]
        if docs.render(p.read_text()) != p.read_text()
    ]
    assert not stale, f"generated blocks differ from the code in {stale}: run ./scripts/docs"


def test_every_command_has_a_usage_block() -> None:
    missing = set(docs.commands()) - docs.documented(PAGES)
    assert not missing, f"no reference page shows {sorted(missing)}"
    unknown = docs.documented(PAGES) - set(docs.commands())
    assert not unknown, f"pages show commands the CLI does not have: {sorted(unknown)}"


def test_usage_lines_are_conventional() -> None:
    text = docs.usage("owl chat")
    assert text.startswith("Usage: owl chat [OPTIONS] REF\n")
    assert "<str>" not in text and "{ref}" not in text and "--seed INTEGER" in text


def test_relative_links_resolve() -> None:
    broken = []
    for page in [ROOT / "README.md", *PAGES]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken

"""The reference pages' usage blocks, generated from the CLI itself (as simonw/llm does with cog).

A page in ``docs/`` marks a command's block with ``<!-- usage: owl CMD -->`` ... ``<!-- /usage -->``;
``scripts/docs`` rewrites every block from ``owl CMD --help``, and ``tests/test_docs.py`` fails when a
page and the CLI disagree or a command has no page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WIDTH = 100
BLOCK = re.compile(r"(<!-- usage: (owl[\w -]*?) -->\n)(.*?)(<!-- /usage -->)", re.S)


def _root() -> Any:
    import typer

    from owlkit.cli.main import app, register_commands

    register_commands()
    return typer.main.get_command(app)


def commands() -> list[str]:
    """Every command as typed: ``owl import``, ``owl data demo`` ..."""

    def walk(group: Any, prefix: str) -> Iterator[str]:
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, f"{prefix} {name}")
            else:
                yield f"{prefix} {name}"

    return list(walk(_root(), "owl"))


def usage(command: str) -> str:
    """``owl CMD --help`` as printed at a fixed width (so pages do not depend on the terminal)."""
    import typer

    root = _root()
    ctx = typer.Context(
        root,
        info_name="owl",
        terminal_width=WIDTH,
        max_content_width=WIDTH,
        help_option_names=["-h", "--help"],
    )
    cmd = root
    for word in command.split()[1:]:
        ctx = typer.Context(cmd.commands[word], info_name=word, parent=ctx)
        cmd = cmd.commands[word]
    return cmd.get_help(ctx).rstrip() + "\n"


def render(text: str) -> str:
    """A page with every usage block rewritten from the CLI."""
    return BLOCK.sub(lambda m: f"{m.group(1)}```text\n{usage(m.group(2))}```\n{m.group(4)}", text)


def documented(pages: list[Path]) -> set[str]:
    return {m.group(2) for p in pages for m in BLOCK.finditer(p.read_text())}

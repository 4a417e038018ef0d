"""The reference pages' usage blocks, generated from the CLI itself (as simonw/llm does with cog).

A page in ``docs/`` marks a command's block with ``<!-- usage: owl CMD -->`` ... ``<!-- /usage -->``;
``scripts/docs`` rewrites every block from ``owl CMD --help``, and ``tests/test_docs.py`` fails when a
page and the CLI disagree or a command has no page.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WIDTH = 100
BLOCK = re.compile(r"(<!-- usage: (owl[\w -]*?) -->\n)(.*?)(<!-- /usage -->)", re.S)
API_BLOCK = re.compile(r"(<!-- api-methods -->\n)(.*?)(<!-- /api-methods -->)", re.S)
EXAMPLE = re.compile(r"(<!-- example: ([\w./-]+) -->\n)(.*?)(<!-- /example -->)", re.S)
REPO = Path(__file__).resolve().parents[3]


@functools.cache
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
    """A page with every usage block rewritten from the CLI, and the API method list from `Owl`."""
    text = BLOCK.sub(lambda m: f"{m.group(1)}```text\n{usage(m.group(2))}```\n{m.group(4)}", text)
    text = EXAMPLE.sub(
        lambda m: f"{m.group(1)}```python\n{(REPO / m.group(2)).read_text()}```\n{m.group(4)}", text
    )
    return API_BLOCK.sub(lambda m: f"{m.group(1)}{api_methods()}{m.group(3)}", text)


def method_name(command: str) -> str:
    """`owl import` -> import_, `owl merge-adapters` -> merge_adapters, `owl data demo` -> data_demo."""
    import keyword

    name = "_".join(command.split()[1:]).replace("-", "_")
    return f"{name}_" if keyword.iskeyword(name) else name


def api_methods() -> str:
    """A Markdown table of `Owl`'s public methods in the CLI's order: signature and first doc line."""
    import inspect

    from owlkit.api import Owl

    names = [method_name(c) for c in commands()]
    names += sorted(n for n in vars_of(Owl) if not n.startswith("_") and n not in names)
    rows = ["| method | what it does |", "|---|---|"]
    for name in names:
        fn = getattr(Owl, name, None)
        if not callable(fn):
            continue
        sig = str(inspect.signature(fn)).replace("(self, ", "(").replace("(self)", "()")
        sig = re.sub(r"'([^']*)'", r"\1", sig).replace("|", "\\|")
        doc = (inspect.getdoc(fn) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{name}{sig}` | {doc} |")
    return "\n".join(rows) + "\n"


def vars_of(cls: type) -> set[str]:
    return {n for klass in cls.__mro__ if klass.__module__.startswith("owlkit.api") for n in vars(klass)}


def documented(pages: list[Path]) -> set[str]:
    return {m.group(2) for p in pages for m in BLOCK.finditer(p.read_text())}

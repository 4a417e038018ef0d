"""Help text in the shape click and most CLIs print: ``owl chat [OPTIONS] REF`` and ``--seed INTEGER``.

Typer 0.29 prints ``{ref}`` on usage lines and ``<str>``-style types; ML engineers read the older
convention in every tool they use (click, argparse), so every owl command renders its help through
`OwlCommand`, set centrally by `use_conventional_help`.
"""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

# typer's type labels -> click's conventional metavars
_TYPES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
}


def _metavar(match: re.Match[str]) -> str:
    label = match.group(1)
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    base, _, rng = label.partition(" ")
    if "|" in base:  # a choice
        return f"[{base}]"
    name = _TYPES.get(base, base.upper())
    return f"{name} RANGE" if rng == "range" else name


def _argument_name(param: Any) -> str:
    name = param.metavar or param.name.upper()
    return f"{name}..." if param.nargs != 1 else name


class OwlCommand(TyperCommand):
    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = _argument_name(param)
            pieces.append(name if param.required else f"[{name}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)


class OwlGroup(TyperGroup):
    """The root `owl` group: its options in the same shape, then its commands."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        _format_params(self, ctx, formatter)
        self.format_commands(ctx, formatter)


def _format_params(cmd: Any, ctx: Any, formatter: Any) -> None:
    args, opts = [], []
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        if param.param_type_name == "argument":
            args.append((_argument_name(param), help_text))
        else:
            opts.append((re.sub(r"<([^<>]+)>", _metavar, names), help_text))
    for title, rows in (("Arguments", args), ("Options", opts)):
        if rows:
            with formatter.section(title):
                formatter.write_dl(rows)


def use_conventional_help(app: typer.Typer) -> None:
    """Render every registered command's help through `OwlCommand` (typer fills in its own class by
    default; a command that chose another keeps it)."""
    for info in app.registered_commands:
        if info.cls in (None, TyperCommand):
            info.cls = OwlCommand
    for group in app.registered_groups:
        if group.typer_instance is not None:
            use_conventional_help(group.typer_instance)

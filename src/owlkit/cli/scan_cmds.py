"""`owl scan`: a safe / suspicious / dangerous verdict for every file of a path or stored artifact."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.render import console, print_columns, print_json
from owlkit.cli.state import owl


def register(app: typer.Typer) -> None:
    app.command("scan")(scan_cmd)


def scan_cmd(
    target: Annotated[
        str,
        typer.Argument(metavar="PATH|REF", help="A file or folder (scanned in place), or a stored artifact."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Check every file for code that would run when loaded, without loading anything.

    Pickles are walked opcode by opcode against a tensor allowlist; safetensors and GGUF headers are
    validated; chat templates are compiled in jinja2's sandbox. Exits 0 when every file is safe, 13 when
    something is suspicious, 14 when something is dangerous.

    Example: owl scan ./downloaded-model
    """
    report = owl().scan(target)
    if as_json:
        print_json(report.to_dict())
    elif not report.files:
        console.print(f"{report.target}: no files")
    else:
        rows = [[f.path, f.kind, f.verdict, "; ".join(f.reasons)] for f in report.files]
        print_columns(["FILE", "KIND", "VERDICT", "REASONS"], rows)
        console.print(f"{report.target}: {report.verdict}")
    if report.exit_code:
        raise typer.Exit(report.exit_code)

"""`owl rebuild`: re-derive an artifact from its recorded recipe and check it is bit-identical."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.render import console, print_json, progress_bars
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import RebuildResult


def register(app: typer.Typer) -> None:
    app.command("rebuild")(rebuild_cmd)


def rebuild_cmd(
    ref: Annotated[str, typer.Argument(help="A derived artifact: NAME[:TAG] or digest prefix.")],
    keep: Annotated[
        bool, typer.Option("--keep", help="Store the rebuilt artifact (NAME-rebuild) when it differs.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="Run with N threads instead of the recorded count."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Re-run REF's recorded recipe in a fresh process and compare the result with REF, file by file.

    Prints "identical", or the first differing file (and tensor, with its max abs difference), and the
    environment facts that differ from the recorded run (library versions, CPU, threads, steps).
    Exit 0 identical, 10 different where the environment differs, 11 different in the same environment.

    Example: owl rebuild demo-rebuild
    """
    with progress_bars(enabled=not as_json) as progress:
        report = owl().rebuild(ref, keep=keep, threads=threads, progress=progress)
    if as_json:
        print_json(report.to_dict())
    else:
        _render(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _render(report: RebuildResult) -> None:
    same = sum(v == "same" for v in report.files.values())
    console.print(
        f"rebuilt {report.ref} ({report.recipe}): [bold]{report.verdict}[/bold], "
        f"{same}/{len(report.files)} files identical"
    )
    for problem in report.stored_problems:
        console.print(f"  stored file fails its hash: {problem}")
    d = report.first_difference
    if d is not None:
        where = f"{d.file} ({d.status})"
        if d.tensor is not None and d.max_abs is not None:
            where += f", first differing tensor {d.tensor}: max abs difference {d.max_abs:.3g}"
        elif d.tensor is not None:  # no values to compare (shape or dtype differs): the note says which
            where += f", first differing tensor {d.tensor}: {d.note}"
        console.print(f"  first difference: {where}")
    if report.steps:
        console.print(f"  steps: recorded {report.steps['recorded']}, rebuilt {report.steps['rebuilt']}")
    for line in report.environment:
        console.print(f"  environment differs: {line}")
    if not report.identical and not report.environment:
        console.print("  same environment: the recipe or an input did not reproduce")
    if report.kept:
        console.print(f"  kept the rebuilt artifact as {report.kept[:19]}")

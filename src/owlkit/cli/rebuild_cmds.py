"""`owl rebuild`: re-derive an artifact from its recorded recipe and check it is bit-identical."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.render import console, print_json


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
    from owlkit.rebuild import IDENTICAL, rebuild
    from owlkit.store import open_store

    store = open_store(write=True)  # the recipe writes checkouts and scratch files into the store
    with console.status(f"rebuilding {ref}…"):
        report = rebuild(store, ref, keep=keep, threads=threads)
    if as_json:
        print_json(report.to_dict())
    else:
        same = sum(v == "same" for v in report.files.values())
        console.print(
            f"rebuilt {report.ref} ({report.recipe}): [bold]{report.verdict}[/bold], "
            f"{same}/{len(report.files)} files identical"
        )
        for problem in report.stored_problems:
            console.print(f"  stored file fails its hash: {problem}")
        if report.first_difference:
            d = report.first_difference
            where = f"{d['file']} ({d['status']})"
            if "tensor" in d:
                where += f", first differing tensor {d['tensor']}: max abs difference {d['max_abs']:.3g}"
            console.print(f"  first difference: {where}")
        if report.steps:
            console.print(f"  steps: recorded {report.steps['recorded']}, rebuilt {report.steps['rebuilt']}")
        for line in report.environment:
            console.print(f"  environment differs: {line}")
        if report.verdict != IDENTICAL and not report.environment:
            console.print("  same environment: the recipe or an input did not reproduce")
        if report.kept:
            console.print(f"  kept the rebuilt artifact as {report.kept[:19]}")
    if report.exit_code:
        raise typer.Exit(report.exit_code)

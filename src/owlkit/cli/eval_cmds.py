"""`owl eval`: exact match of a stored model or adapter on a stored dataset's held-out split."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.render import console, err_console, print_json, progress_bars
from owlkit.cli.state import owl


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)


def eval_cmd(
    ref: Annotated[str, typer.Argument(help="A model or adapter: NAME[:TAG] or digest prefix.")],
    data: Annotated[str, typer.Argument(help="A dataset: NAME[:TAG], digest prefix, or a file to import.")],
    split: Annotated[
        str, typer.Option("--split", help="test (default), validation or train: files named so.")
    ] = "test",
    template: Annotated[
        str | None,
        typer.Option("--template", help="alpaca or chat (default: as the adapter was trained, else chat)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Evaluate the first N examples.")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Prompts generated together.")] = 64,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Answer length cap (default: from the data).")
    ] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="For an adapter: another model of the same base identity.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Greedy exact match on held-out instruction data, with a 95% confidence interval.

    Example: owl eval demo-adapter demo-data
    """
    with progress_bars(enabled=not as_json) as progress:
        res = owl().eval(
            ref,
            data,
            split=split,
            template=template,
            limit=limit,
            batch_size=batch_size,
            max_tokens=max_tokens,
            base=base,
            progress=progress,
        )
    if as_json:
        print_json(res.to_dict())
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    for note in res.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")
    for miss in res.mismatches:
        err_console.print(
            f"[dim]miss: {miss.prompt[-60:]!r} expected {miss.expected!r} got {miss.got!r}[/dim]"
        )
    low, high = res.ci95
    console.print(
        f"{res.model} on {res.data} ({res.split}): exact match {res.correct}/{res.n} = "
        f"{res.exact_match:.1%} (95% CI {low:.1%} to {high:.1%}) in {res.seconds:.1f}s"
    )

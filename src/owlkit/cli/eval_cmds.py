"""`owl eval`: exact match of a stored model or adapter on a stored dataset's held-out split."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.render import console, err_console, print_json


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
    from owlkit.adapt.data import load_examples
    from owlkit.errors import Refused, UsageError
    from owlkit.evaluate import exact_match
    from owlkit.inference import load_for_inference
    from owlkit.recipes.tune import TRAINABLE_DATA, resolve_input
    from owlkit.store import open_store

    if template not in (None, "alpaca", "chat"):
        raise UsageError(f"--template {template!r}: use alpaca or chat")
    store = open_store(write=True)  # checkouts are written into the store
    rec = store.find(ref)
    dataset = resolve_input(store, data, "dataset")
    fmt = dataset.manifest.facts.get("data_format")
    if fmt not in TRAINABLE_DATA:
        raise Refused(
            f"{dataset.name} is {fmt or 'an unknown'} data; owl eval reads {', '.join(TRAINABLE_DATA)} rows"
        )
    convs, _ = load_examples(store.checkout(dataset.digest), fmt, split=split)
    convs = convs[:limit] if limit else convs
    if template is None:  # as the adapter was trained: its recipe names the template, None meaning chat
        recipe = rec.manifest.recipe
        trained = recipe.params.get("template") if recipe is not None and recipe.name == "tune" else None
        template = "alpaca" if trained == "alpaca" else "chat"
    with console.status(f"loading {rec.name}…"):
        model, tok, warnings = load_for_inference(store, rec, base=store.find(base) if base else None)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    chat_template = tok.chat_template if template == "chat" else None
    if template == "chat" and not chat_template:
        template, chat_template = "alpaca", None
        err_console.print(
            f"[yellow]note:[/yellow] {rec.name} has no chat template; prompts use the Alpaca wording"
        )
    with console.status(f"generating {len(convs)} answers…") as status:
        result = exact_match(
            model,
            tok,
            convs,
            template=chat_template,
            batch_size=batch_size,
            max_tokens=max_tokens,
            progress=lambda done: status.update(f"generated {done}/{len(convs)} answers…"),
        )
    if as_json:
        print_json(
            {
                "model": rec.name,
                "data": dataset.name,
                "split": split,
                "template": template,
                **result.as_dict(),
            }
        )
        return
    for miss in result.mismatches:
        err_console.print(
            f"[dim]miss: {miss['prompt'][-60:]!r} expected {miss['expected']!r} got {miss['got']!r}[/dim]"
        )
    console.print(f"{rec.name} on {dataset.name} ({split}): {result.summary()} in {result.seconds:.1f}s")

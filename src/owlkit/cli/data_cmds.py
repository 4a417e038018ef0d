"""Data commands: ``owl data demo`` (the demo's generated task data)."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.render import console, print_json
from owlkit.cli.state import owl

data_app = typer.Typer(
    name="data",
    help="Make datasets. `owl data demo` writes the demo's instruction data from a seed.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    # main() registers on every call (tests run it many times in one process): add the group once.
    if any(group.typer_instance is data_app for group in app.registered_groups):
        return
    data_app.command("demo")(demo_cmd)
    app.add_typer(data_app, name="data")


def demo_cmd(
    train: Annotated[int, typer.Option("--train", help="Training rows.")] = 1000,
    heldout: Annotated[int, typer.Option("--heldout", help="Held-out rows, for evaluation.")] = 200,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed: the same seed, the same bytes.")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="NAME[:TAG] of the dataset (default: demo-data).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Generate and store the demo task: reverse a list of 3 to 5 common English words.

    Input "apple, river, seven" -> output "seven | river | apple", as Alpaca rows (train.jsonl,
    test.jsonl). No held-out input shares its set of words with any training input. The data is
    CC0-1.0 and the generator and seed are its recipe, so the same options give the same digest.

    Example: owl data demo --seed 0
    """
    res = owl().data_demo(train=train, heldout=heldout, seed=seed, name=name)
    if as_json:
        print_json(res.to_dict())
        return
    console.print(
        f"generated [bold]{res.name}[/bold] {res.digest[:19]}: {res.train} train, {res.heldout} held-out "
        f"rows (seed {res.seed}, CC0-1.0)"
    )

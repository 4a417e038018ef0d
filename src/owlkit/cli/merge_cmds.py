"""`owl merge`: a stored adapter merged into its full-precision base, stored as a new model."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from owlkit.cli.render import console, err_console, print_json


def register(app: typer.Typer) -> None:
    app.command("merge")(merge_cmd)


def merge_cmd(
    base: Annotated[
        str, typer.Argument(help="Base model: NAME[:TAG], digest prefix, or a folder to import.")
    ],
    adapter: Annotated[
        str, typer.Argument(help="PEFT adapter: NAME[:TAG], digest prefix, or a folder to import.")
    ],
    dtype: Annotated[str, typer.Option("--dtype", help="float32 (default) or bfloat16.")] = "float32",
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="NAME[:TAG] of the result (default: BASE-ADAPTER-merged)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Merge a LoRA/DoRA adapter into its full-precision base (`owl convert` a GGUF base first).

    Example: owl merge smollm2-hf smollm2-hf-lora --name smollm2-tuned
    """
    from owlkit.recipes.merge import MergeParams, merge
    from owlkit.store import open_store

    params = MergeParams(dtype=dtype)
    started = time.perf_counter()
    store = open_store(write=True)
    with console.status(f"merging {adapter} into {base} ({dtype})…"):
        digest = merge(store, base, adapter, params, name=name)
    rec = store.get(digest)
    warnings = rec.side.get("warnings") or []
    if as_json:
        print_json({"digest": digest, "names": rec.tags, "warnings": warnings})
        return
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(
        f"merged {adapter} into {base} -> [bold]{rec.name}[/bold] {digest[:19]} "
        f"in {time.perf_counter() - started:.1f}s"
    )

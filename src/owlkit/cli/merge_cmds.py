"""`owl merge`: a stored adapter merged into its full-precision base, stored as a new model."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from owlkit.cli.render import print_stored, progress_bars
from owlkit.cli.state import owl


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
    started = time.perf_counter()
    with progress_bars(enabled=not as_json) as progress:
        res = owl().merge(base, adapter, dtype=dtype, name=name, progress=progress)
    print_stored(res, f"merged {adapter} into {base}", started, as_json=as_json)

"""`owl merge-adapters`: stored LoRA adapters of one base combined into one adapter (PEFT's weighted
combinations), stored with `adapter_of` and `merged_from` edges."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from owlkit.cli.render import print_stored, progress_bars
from owlkit.cli.state import owl
from owlkit.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("merge-adapters")(merge_adapters_cmd)


def parse_weights(values: list[str]) -> list[float]:
    """``--weights 0.5,0.5`` or ``--weights 0.5 --weights 0.5`` (or both) -> [0.5, 0.5]."""
    out = []
    for value in values:
        for part in value.split(","):
            try:
                out.append(float(part.strip()))
            except ValueError:
                raise UsageError(f"--weights {value!r}: {part.strip()!r} is not a number") from None
    return out


def merge_adapters_cmd(
    adapters: Annotated[
        list[str],
        typer.Argument(help="Two or more PEFT LoRA adapters: NAME[:TAG], digest prefix, or folder."),
    ],
    weights: Annotated[
        list[str],
        typer.Option("--weights", "-w", help="One weight per adapter: 0.5,0.5 or repeated --weights."),
    ],
    method: Annotated[str, typer.Option("--method", help="linear (equal ranks), svd, ties or dare_ties.")],
    density: Annotated[
        float | None, typer.Option("--density", help="ties / dare_ties: fraction of values kept (0.5).")
    ] = None,
    svd_rank: Annotated[
        int | None, typer.Option("--svd-rank", help="svd: rank of the result (default: largest input).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for dare_ties' random masks.")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="NAME[:TAG] of the result (default: FIRST-METHOD).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Combine LoRA adapters of one base into one adapter with PEFT's add_weighted_adapter.

    Example: owl merge-adapters chat-lora code-lora --weights 0.7,0.3 --method svd --name mixed
    """
    started = time.perf_counter()
    with progress_bars(enabled=not as_json) as progress:
        res = owl().merge_adapters(
            adapters,
            weights=parse_weights(weights),
            method=method,
            density=density,
            svd_rank=svd_rank,
            seed=seed,
            name=name,
            progress=progress,
        )
    print_stored(res, f"combined {', '.join(adapters)} ({method})", started, as_json=as_json)

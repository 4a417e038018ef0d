"""`owl tune`: LoRA, DoRA or full instruction tuning of a stored model on a stored dataset."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from owlkit.cli.render import console, err_console, print_json, progress_bars
from owlkit.cli.state import owl


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_cmd)


def tune_cmd(
    base: Annotated[
        str, typer.Argument(help="Base model: NAME[:TAG], digest prefix, or a folder to import.")
    ],
    data: Annotated[
        str, typer.Argument(help="Dataset: NAME[:TAG], digest prefix, or a file/folder to import.")
    ],
    method: Annotated[
        str | None, typer.Option("--method", help="lora (default), dora, qlora or full.")
    ] = None,
    r: Annotated[int | None, typer.Option("--r", help="LoRA rank.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="LoRA alpha (scaling alpha/r).")] = None,
    dropout: Annotated[float | None, typer.Option("--dropout", help="LoRA dropout.")] = None,
    targets: Annotated[
        str | None, typer.Option("--targets", help="Comma-separated module names, or all-linear.")
    ] = None,
    rslora: Annotated[
        bool | None, typer.Option("--rslora/--no-rslora", help="Scale by alpha/sqrt(r).")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    warmup: Annotated[int | None, typer.Option("--warmup", help="Warmup steps.")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="cosine, linear or constant.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the data.")] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="Optimizer steps (overrides --epochs).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Sequences per micro-batch.")] = None,
    grad_accum: Annotated[int | None, typer.Option("--grad-accum", help="Micro-batches per step.")] = None,
    seq_len: Annotated[int | None, typer.Option("--seq-len", help="Tokens per sequence.")] = None,
    packing: Annotated[bool | None, typer.Option("--packing/--no-packing", help="Pack examples.")] = None,
    grad_checkpointing: Annotated[
        bool | None,
        typer.Option("--grad-checkpointing/--no-grad-checkpointing", help="Trade compute for memory."),
    ] = None,
    eval_split: Annotated[
        float | None, typer.Option("--eval-split", help="Held-out share for eval loss.")
    ] = None,
    eval_every: Annotated[
        int | None, typer.Option("--eval-every", help="Eval loss every N steps (needs --eval-split).")
    ] = None,
    save_every: Annotated[
        int | None, typer.Option("--save-every", help="Checkpoint every N steps, for --resume.")
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", help="alpaca, or leave unset for the base's own chat template."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for data order and init.")] = None,
    nproc: Annotated[
        int | None,
        typer.Option(
            "--nproc",
            help="Data-parallel training processes (DDP); --batch-size stays global and must divide by it. "
            "Under torchrun: its WORLD_SIZE.",
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="A YAML file with the same keys.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    name: Annotated[str | None, typer.Option("--name", "-n", help="NAME[:TAG] of the result.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Train an adapter (or a full fine-tune) on instruction data, as a recipe that can be rebuilt.

    Example: owl tune smollm2-hf alpaca --method lora --r 16 --targets all-linear --steps 60
    """
    started = time.perf_counter()
    with progress_bars(enabled=not as_json) as progress:
        res = owl().tune(
            base, data, config=config, method=method, r=r, alpha=alpha, dropout=dropout, targets=targets,
            rslora=rslora, lr=lr, warmup=warmup, schedule=schedule, epochs=epochs, steps=steps,
            batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, packing=packing,
            grad_checkpointing=grad_checkpointing, eval_split=eval_split, eval_every=eval_every,
            save_every=save_every, template=template, seed=seed, nproc=nproc, name=name, resume=resume,
            progress=progress,
        )  # fmt: skip
    if res is None:  # a torchrun rank other than 0: rank 0 reports
        return
    if as_json:
        print_json(res.to_dict())
        return
    for note in res.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")
    first, last = res.initial_eval_loss, res.final_eval_loss
    evals = f", eval loss {first:.4f} -> {last:.4f}" if first is not None and last is not None else ""
    console.print(
        f"trained [bold]{res.name}[/bold] {res.digest[:19]}: {res.steps} steps, "
        f"{res.tokens_per_s:.0f} tokens/s{evals}, in {time.perf_counter() - started:.0f}s"
    )

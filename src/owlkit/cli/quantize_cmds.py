"""`owl quantize`: GGUF and bitsandbytes variants of a stored model (or a GGUF LoRA of an adapter), with
their drift from the source measured and stored."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from owlkit.cli.render import byte_progress, console, count_progress, err_console, print_json


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)


def quantize_cmd(
    ref: Annotated[
        str, typer.Argument(help="Model (or, with --to gguf-lora, adapter): NAME[:TAG] or digest.")
    ],
    to: Annotated[
        list[str],
        typer.Option(
            "--to",
            help="gguf-f32|gguf-f16|gguf-q8_0|gguf-q4_0|gguf-q4_1|gguf-q4_k_m|gguf-q5_k_m|gguf-q6_k|bnb-nf4|"
            "bnb-int8|gguf-lora; repeat for several (the source is scored once).",
        ),
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="NAME[:TAG] of the result (one --to only).")
    ] = None,
    eval_tokens: Annotated[
        int, typer.Option("--eval-tokens", min=2, help="Tokens of text the drift is measured on.")
    ] = 8192,
    eval_text: Annotated[
        Path | None, typer.Option("--eval-text", help="UTF-8 text to measure on (default: one shipped).")
    ] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the drift measurement.")] = False,
    max_ppl_increase: Annotated[
        float | None,
        typer.Option(
            "--max-ppl-increase", min=0.0, help="Fail (store nothing) if perplexity rises more, e.g. 0.05."
        ),
    ] = None,
    from_dequantized: Annotated[
        bool,
        typer.Option("--from-dequantized", help="Accept a quantized source, dequantized to float32 first."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Quantize a model to GGUF or bitsandbytes, measuring perplexity, KL and top-1 drift.

    Example: owl quantize demo-merged --to gguf-q8_0 --to gguf-q4_0 --eval-tokens 2048
    """
    from owlkit.errors import UsageError
    from owlkit.recipes.quantize import EvalSettings, iter_targets, quantize
    from owlkit.store import open_store

    targets = list(iter_targets(to))
    if name and len(targets) > 1:
        raise UsageError("--name names one result; with several --to, the names are MODEL-TYPE")
    store = open_store(write=True)
    evaluation = EvalSettings(eval_tokens, eval_text, not no_eval, max_ppl_increase)

    def bar(description: str, total: int, unit: str) -> Any:
        if unit == "bytes":
            return byte_progress(description, total, enabled=not as_json)
        return count_progress(description, total, enabled=not as_json)

    def say(message: str) -> None:
        if not as_json:
            err_console.print(f"[dim]{message}[/dim]")

    outputs = quantize(
        store,
        ref,
        targets,
        from_dequantized=from_dequantized,
        evaluation=evaluation,
        names={targets[0]: name} if name else None,
        bar=bar,
        say=say,
    )
    if as_json:
        print_json(
            [
                {
                    "target": o.target,
                    "digest": o.digest,
                    "name": store.get(o.digest).name,
                    "export": o.export,
                    "quality": o.quality,
                    "notes": o.notes,
                }
                for o in outputs
            ]
        )
        return
    for o in outputs:
        console.print(f"stored [bold]{store.get(o.digest).name}[/bold] {o.digest[:19]} ({o.target})")
        for note in o.notes:
            err_console.print(f"[yellow]note:[/yellow] {note}")
    if any(o.quality for o in outputs) or any(o.export.get("bits_per_weight") for o in outputs):
        console.print(drift_table([(store.get(o.digest).name, o.export, o.quality) for o in outputs]))


def drift_table(rows: list[tuple[str, dict[str, Any], dict[str, Any] | None]]) -> Any:
    """Size, bits/weight, perplexity, KL and top-1 agreement of quantized variants, one row each."""
    from rich.table import Table

    table = Table(title="quantization drift", header_style="bold")
    for col in ("artifact", "size", "bits/weight", "ppl source", "ppl", "mean KL", "top-1", "runtime"):
        table.add_column(col, justify="left" if col in ("artifact", "runtime") else "right")
    for name, export, q in rows:
        q = q or {}
        size = q.get("size_bytes") or export.get("file_bytes")
        bpw = export.get("bits_per_weight")
        table.add_row(
            name,
            f"{size / 1e6:.1f} MB" if size else "-",
            f"{bpw:.2f}" if bpw else "-",
            f"{q['ppl_source']:.3f}" if q else "-",
            f"{q['ppl']:.3f}" if q else "-",
            (f"{q['kl_mean']:.5f}" if q["kl_mean"] >= 1e-4 else f"{q['kl_mean']:.1e}") if q else "-",
            f"{100 * q['top1']:.2f}%" if q else "-",
            q.get("runtime", "not measured"),
        )
    return table

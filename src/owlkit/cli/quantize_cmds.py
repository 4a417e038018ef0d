"""`owl quantize`: GGUF and bitsandbytes variants of a stored model (or a GGUF LoRA of an adapter), with
their drift from the source measured and stored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from owlkit.cli.render import console, err_console, print_json, progress_bars
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import DriftRow


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
    with progress_bars(enabled=not as_json) as progress:
        report = owl().quantize(
            ref,
            to,
            name=name,
            eval_tokens=eval_tokens,
            eval_text=eval_text,
            evaluate=not no_eval,
            max_ppl_increase=max_ppl_increase,
            from_dequantized=from_dequantized,
            progress=progress,
        )
    if as_json:
        print_json(report.to_dict())
        return
    for v in report:
        console.print(f"stored [bold]{v.name}[/bold] {v.digest[:19]} ({v.target})")
        for note in v.notes:
            err_console.print(f"[yellow]note:[/yellow] {note}")
    if report.has_figures:
        console.print(drift_table(report.rows))


def drift_table(rows: Sequence[DriftRow | tuple[str, dict[str, Any], dict[str, Any] | None]]) -> Any:
    """Size, bits/weight, perplexity, KL and top-1 agreement of quantized variants, one row each: the
    `DriftReport.rows`, or (name, export, quality) as `owl show` holds them."""
    from rich.table import Table

    from owlkit.api import DriftRow

    table = Table(title="quantization drift", header_style="bold")
    for col in ("artifact", "size", "bits/weight", "ppl source", "ppl", "mean KL", "top-1", "runtime"):
        table.add_column(col, justify="left" if col in ("artifact", "runtime") else "right")
    for row in rows:
        d = row if isinstance(row, DriftRow) else DriftRow.of(*row)
        measured = d.runtime is not None
        table.add_row(
            d.artifact,
            f"{d.size_bytes / 1e6:.1f} MB" if d.size_bytes else "-",
            f"{d.bits_per_weight:.2f}" if d.bits_per_weight else "-",
            f"{d.ppl_source:.3f}" if measured else "-",
            f"{d.ppl:.3f}" if measured else "-",
            _kl(d.kl_mean) if measured else "-",
            f"{100 * d.top1:.2f}%" if measured else "-",
            d.runtime or "not measured",
        )
    return table


def _kl(kl: float) -> str:
    return f"{kl:.5f}" if kl >= 1e-4 else f"{kl:.1e}"

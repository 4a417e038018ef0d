"""Model commands: convert, run."""

from __future__ import annotations

import itertools
import sys
import time
from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.render import console, err_console, print_json, progress_bars
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from collections.abc import Iterator

    from owlkit.api import RunResult


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_cmd)
    app.command("run")(run_cmd)


def convert_cmd(
    ref: Annotated[str, typer.Argument(help="A stored GGUF: NAME[:TAG] or digest prefix.")],
    to: Annotated[str, typer.Option("--to", help="Target format: hf.")] = "hf",
    dtype: Annotated[str, typer.Option("--dtype", help="float32 (default) or bfloat16.")] = "float32",
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="NAME[:TAG] of the result (default: REF-hf).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Dequantize a GGUF into a Hugging Face safetensors folder (trainable by `owl tune`).

    Example: owl convert smollm2 --to hf
    """
    started = time.perf_counter()
    with progress_bars(enabled=not as_json) as progress:
        res = owl().convert(ref, to=to, dtype=dtype, name=name, progress=progress)
    if as_json:
        print_json(res.to_dict())
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(
        f"converted {ref} -> [bold]{res.name}[/bold] {res.digest[:19]} in {time.perf_counter() - started:.1f}s"
    )


# Options shared by `owl run` and `owl chat`.
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 = greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")]
BackendOpt = Annotated[
    str,
    typer.Option(
        "--backend",
        help="torch (default) or gguf (alias llama.cpp, for GGUF models; the gguf extra), or an installed one.",
    ),
]


def run_cmd(
    ref: Annotated[str, typer.Argument(help="A model or adapter: NAME[:TAG] or digest prefix.")],
    prompt: Annotated[str, typer.Argument(help="The prompt (use '-' to read standard input).")],
    chat: Annotated[
        bool, typer.Option("--chat", help="Wrap the prompt in the model's own chat template.")
    ] = False,
    system: Annotated[str | None, typer.Option("--system", help="A system message (with --chat).")] = None,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=32768, help="Tokens to generate.")
    ] = 128,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
    base: Annotated[
        str | None, typer.Option("--base", help="For an adapter: another model of the same base identity.")
    ] = None,
    backend: BackendOpt = "torch",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the whole result as JSON at the end (no streaming).")
    ] = False,
) -> None:
    """Generate a completion on CPU, streaming it as it decodes.

    Example: owl run smollm2 "What is the capital of France?" --chat
    """
    if prompt == "-":
        prompt = sys.stdin.read()
    events = owl().run(
        ref, prompt, chat=chat, system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        seed=seed, base=base, backend=backend,
    )  # fmt: skip
    with console.status(f"loading {ref}…"):
        first = next(events)  # the weights load, then the first piece decodes
    result = stream_reply(itertools.chain([first], events), echo=not as_json)
    if as_json:
        print_json(result.to_dict())
        return
    print_warnings(result.warnings)
    t = result.timings
    err_console.print(
        f"[dim]{result.backend}: load {t.load_s:.1f}s, {result.usage.completion_tokens} tokens in "
        f"{t.generate_s:.1f}s ({t.tokens_per_s:.1f} tokens/s), finish {result.finish_reason}[/dim]"
    )


def stream_reply(events: Iterator[object], *, echo: bool = True) -> RunResult:
    """Write each text piece to stdout as it comes (then a newline); the final result."""
    from owlkit.api import RunResult, TextDelta

    for ev in events:
        if isinstance(ev, TextDelta):
            if echo:
                sys.stdout.write(ev.text)
                sys.stdout.flush()
        elif isinstance(ev, RunResult):
            if echo:
                sys.stdout.write("\n")
            return ev
    raise AssertionError("the reply ended without a result")


def print_warnings(warnings: list[str]) -> None:
    from rich.markup import escape

    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {escape(w)}", soft_wrap=True)

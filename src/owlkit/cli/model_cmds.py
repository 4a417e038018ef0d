"""Model commands: convert, run."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from owlkit.cli.render import console, err_console, print_json
from owlkit.store import open_store

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store


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
    from owlkit.recipes.convert import ConvertParams, convert

    params = ConvertParams(to=to, dtype=dtype)
    started = time.perf_counter()
    store = open_store(write=True)
    with console.status(f"converting {ref} to {to} ({dtype})…"):
        digest = convert(store, ref, params, name=name)
    rec = store.get(digest)
    if as_json:
        print_json({"digest": digest, "names": rec.tags})
        return
    console.print(
        f"converted {ref} -> [bold]{rec.name}[/bold] {digest[:19]} in {time.perf_counter() - started:.1f}s"
    )


# Sampling options shared by `owl run` and `owl chat`.
Temperature = Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 = greedy.")]
TopP = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)]
Seed = Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")]


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
    backend_name: Annotated[
        str,
        typer.Option(
            "--backend",
            help="torch (default) or gguf (llama.cpp, for GGUF models; the gguf extra), or an installed one.",
        ),
    ] = "torch",
) -> None:
    """Generate a completion on CPU, streaming it as it decodes.

    Example: owl run smollm2 "What is the capital of France?" --chat
    """
    from owlkit.backends.base import Sampling
    from owlkit.backends.session import Reply, prompt_ids
    from owlkit.errors import UsageError

    if prompt == "-":
        prompt = sys.stdin.read()
    if system and not chat:
        raise UsageError("--system needs --chat")
    store = open_store(write=True)  # checkouts are written into the store
    rec = store.find(ref)
    base_rec = store.find(base) if base else None
    if chat and rec.manifest.kind == "model" and not rec.manifest.facts.get("chat_template_digest"):
        raise UsageError(f"{rec.name} has no chat template: drop --chat to send the prompt as plain text")
    t0 = time.perf_counter()
    backend, adapter = open_runtime(store, rec, backend_name, base=base_rec)
    try:
        load_s = time.perf_counter() - t0
        ids = prompt_ids(backend, prompt, chat=chat, system=system, adapter=adapter)
        # The context holds the prompt and the reply: shorten the reply rather than fail.
        room = max(0, min(max_tokens, backend.context_length - len(ids)))
        reply = Reply(backend, ids, Sampling(room, temperature, top_p, seed), adapter)
        t1 = time.perf_counter()
        for piece in reply:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        took = time.perf_counter() - t1
        err_console.print(
            f"[dim]{backend.name}: load {load_s:.1f}s, {reply.tokens} tokens in {took:.1f}s"
            f" ({reply.tokens / max(took, 1e-9):.1f} tokens/s), finish {reply.finish}[/dim]"
        )
    finally:
        backend.close()


RUNTIMES = {"torch": "torch", "gguf": "gguf", "llama.cpp": "gguf"}


def open_runtime(
    store: Store, rec: Record, runtime: str, *, base: Record | None = None
) -> tuple[Any, str | None]:
    """(backend, adapter name) for `owl run` and `owl chat`, with a spinner while the weights load and
    the loader's warnings (quantization differences) printed on stderr."""
    from owlkit.backends.base import backend_names, open_for
    from owlkit.errors import Refused, UsageError, with_article

    name = RUNTIMES.get(runtime, runtime)
    if name not in backend_names():
        raise UsageError(
            f"backend {runtime!r} is unknown: choose one of {', '.join(backend_names())} (llama.cpp = gguf)"
        )
    if name == "gguf" and rec.manifest.kind == "model" and rec.manifest.format != "gguf":
        raise Refused(
            f"{rec.name} is {with_article(rec.manifest.kind)}/{rec.manifest.format}; --backend gguf runs GGUF models"
        )
    with console.status(f"loading {rec.name} ({name})…"):
        backend, adapter = open_for(store, rec, name, base=base, max_batch=1, max_queue=1)
    for w in backend.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    return backend, adapter

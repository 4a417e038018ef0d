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
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, max=5.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for sampling.")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="For an adapter: another model of the same base identity.")
    ] = None,
    runtime: Annotated[
        str, typer.Option("--runtime", help="torch (default) or llama.cpp (GGUF models, the gguf extra).")
    ] = "torch",
) -> None:
    """Generate a completion on CPU, streaming it as it decodes.

    Example: owl run smollm2 "What is the capital of France?" --chat
    """
    from owlkit.errors import UsageError
    from owlkit.inference import load_for_inference
    from owlkit.runtime.generate import stream_generate

    if prompt == "-":
        prompt = sys.stdin.read()
    if system and not chat:
        raise UsageError("--system needs --chat")
    if runtime not in ("torch", "llama.cpp"):
        raise UsageError(f"--runtime {runtime!r} is unknown: choose torch or llama.cpp")
    store = open_store(write=True)  # checkouts are written into the store
    rec = store.find(ref)
    base_rec = store.find(base) if base else None
    if chat and rec.manifest.kind == "model" and not rec.manifest.facts.get("chat_template_digest"):
        raise UsageError(f"{rec.name} has no chat template: drop --chat to send the prompt as plain text")
    if runtime == "llama.cpp":
        _run_llama(store, rec, prompt, chat=chat, system=system, max_tokens=max_tokens,
                   temperature=temperature, top_p=top_p, seed=seed)  # fmt: skip
        return
    t0 = time.perf_counter()
    with console.status(f"loading {rec.name}…"):
        model, tok, warnings = load_for_inference(store, rec, base=base_rec)
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    load_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    n = 0
    for piece in stream_generate(
        model,
        tok,
        prompt,
        chat=chat,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    ):
        sys.stdout.write(piece)
        sys.stdout.flush()
        n += 1
    sys.stdout.write("\n")
    err_console.print(f"[dim]load {load_s:.1f}s, {n} pieces in {time.perf_counter() - t1:.1f}s[/dim]")


def _run_llama(store: Store, rec: Record, prompt: str, *, seed: int | None, **sampling: Any) -> None:
    """`owl run --runtime llama.cpp`: the GGUF as llama.cpp runs it, its own template and end-of-turn."""
    from owlkit.errors import Refused
    from owlkit.runtime.llamacpp import open_gguf, stream_llama

    if rec.manifest.format != "gguf" or rec.manifest.kind != "model":
        raise Refused(
            f"{rec.name} is a {rec.manifest.kind}/{rec.manifest.format}; --runtime llama.cpp runs GGUF models"
        )
    t0 = time.perf_counter()
    with console.status(f"loading {rec.name} in llama.cpp…"):
        llm = open_gguf(store.checkout(rec.digest) / rec.manifest.files[0].path, seed=seed)
    load_s, t1, n, finish = time.perf_counter() - t0, time.perf_counter(), 0, None
    for piece, reason in stream_llama(llm, prompt, **sampling):
        sys.stdout.write(piece)
        sys.stdout.flush()
        n += bool(piece)
        finish = reason or finish
    sys.stdout.write("\n")
    err_console.print(
        f"[dim]llama.cpp: load {load_s:.1f}s, {n} pieces in {time.perf_counter() - t1:.1f}s, finish {finish}[/dim]"
    )

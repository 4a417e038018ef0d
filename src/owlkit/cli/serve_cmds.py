"""`owl serve`: an OpenAI-compatible HTTP server for stored models and their adapters."""

from __future__ import annotations

from typing import Annotated

import typer

from owlkit.cli.model_cmds import BackendOpt, print_warnings
from owlkit.cli.render import console, err_console
from owlkit.cli.state import owl
from owlkit.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


def _adapter_spec(spec: str) -> str | tuple[str, str]:
    """``NAME=REF`` as (NAME, REF), or ``REF`` (served under the REF as given)."""
    name, sep, ref = spec.partition("=")
    if not sep:
        return spec
    if not name or not ref:
        raise UsageError(f"--adapter {spec!r}: write NAME=REF or just REF")
    return name, ref


def serve_cmd(
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="REF",
            help="Models to serve (NAME[:TAG] or digest prefix); requests name each by its REF.",
        ),
    ],
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter",
            metavar="NAME=REF",
            help="A stored adapter (REF alone: served as REF) on the base it applies to; repeat for more.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port (0: any free port).")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="OWL_API_KEY",
            help="Require 'Authorization: Bearer KEY' (or set OWL_API_KEY).",
        ),
    ] = None,
    backend: BackendOpt = "torch",
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, help="Sequences decoded together.")] = 8,
    max_queue: Annotated[
        int, typer.Option("--max-queue", min=0, help="Requests waiting beyond the batch; past it, 429.")
    ] = 64,
    use: Annotated[
        str | None,
        typer.Option(
            "--use",
            help="Declared use (commercial|research|internal|serve-api|...): refuse models whose terms forbid it.",
        ),
    ] = None,
    allow_adapter_paths: Annotated[
        bool,
        typer.Option(
            "--allow-adapter-paths",
            help="Let /v1/load_lora_adapter import adapters from server paths (default: store REFs only).",
        ),
    ] = False,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="CPU threads for the backend.")
    ] = None,
) -> None:
    """Serve models over an OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models).

    A request picks a base by its REF or an adapter by its NAME in the `model` field; adapters share
    their base's weights, and more can be loaded at run time with POST /v1/load_lora_adapter.

    Example: owl serve smollm2-hf --adapter demo=demo-adapter --use commercial
    """
    from rich.markup import escape

    adapters = [_adapter_spec(a) for a in adapter or []]
    with console.status(f"loading {', '.join(refs)}…"):
        serving = owl().serve(
            refs, adapters=adapters, host=host, port=port, api_key=api_key, use=use, backend=backend,
            max_batch=max_batch, max_queue=max_queue, threads=threads, allow_adapter_paths=allow_adapter_paths,
        )  # fmt: skip
    try:
        print_warnings(serving.warnings)
        for m in serving.models:
            what = f"adapter on {m.parent}" if m.parent else f"model, {m.backend} backend"
            terms = f", {m.terms['status']} for {m.terms['use']}" if m.terms else ""
            console.print(
                f"serving [bold]{escape(m.name)}[/bold] ({what}, license {escape(m.license)}{terms})",
                soft_wrap=True,
            )
        console.print(f"OpenAI-compatible API on [bold]{serving.url}[/bold] (Ctrl-C stops)", soft_wrap=True)
        serving.serve_forever()
    finally:
        serving.close()
    err_console.print("[dim]stopped[/dim]")

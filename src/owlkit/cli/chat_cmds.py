"""`owl chat`: an interactive terminal chat on the same runtime as `owl run` and `owl serve`.

Replies go to stdout as they decode; everything else (notes, errors, help) goes to stderr, so a piped
session's stdout is the conversation's replies only. The prompt and line editing appear only when
stdin is a terminal; piped stdin is read line by line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from owlkit.cli.model_cmds import Seed, Temperature, TopP
from owlkit.cli.render import console, err_console
from owlkit.errors import OwlError, UsageError, with_article
from owlkit.store import open_store

if TYPE_CHECKING:
    from owlkit.backends.base import Backend, Sampling
    from owlkit.store.store import Record, Store

HELP = """commands:
  /reset          clear the history (the system message stays)
  /save FILE      write the conversation as JSON (OpenAI messages)
  /adapter NAME   switch to a loaded adapter, or load a stored one; /adapter base goes back to the base
  /adapter        list the loaded adapters
  /help           this list
  /exit, /quit    end the chat (so do Ctrl-D and Ctrl-C at the prompt; Ctrl-C during a reply stops it)"""

_BASE_NAMES = ("base", "none")


def register(app: typer.Typer) -> None:
    app.command("chat")(chat_cmd)


def chat_cmd(
    ref: Annotated[str, typer.Argument(help="A model or adapter: NAME[:TAG] or digest prefix.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter", help="A stored adapter to add to the base (repeatable; the last is active)."
        ),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    backend_name: Annotated[
        str,
        typer.Option(
            "--backend",
            help="torch (default) or gguf (llama.cpp, for GGUF models; the gguf extra), or an installed one.",
        ),
    ] = "torch",
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, max=32768, help="Most tokens per reply.")
    ] = 512,
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    seed: Seed = None,
) -> None:
    """Chat with a model in the terminal, streaming its replies; /help lists the commands.

    Example: owl chat smollm2 --system "Answer in one sentence."
    """
    from owlkit.backends.base import Sampling
    from owlkit.cli.model_cmds import open_runtime

    store = open_store(write=True)  # checkouts are written into the store
    rec = store.find(ref)
    extra = [store.find(a) for a in adapter or []]
    if rec.manifest.kind == "model" and not rec.manifest.facts.get("chat_template_digest"):
        raise UsageError(f"{rec.name} has no chat template: owl chat needs one (owl run sends plain text)")
    backend, active = open_runtime(store, rec, backend_name)
    try:
        chat = Chat(store, backend, Sampling(max_tokens, temperature, top_p, seed), system)
        if active is not None:
            chat.loaded[ref] = chat.loaded[active] = active
            chat.active = active
        for a, a_rec in zip(adapter or [], extra, strict=True):
            chat.switch(a, a_rec)
        if not backend.chat_template(chat.active)[0]:
            raise UsageError(
                f"{backend.base.name} has no chat template: owl chat needs one (owl run sends plain text)"
            )
        chat.loop()
    finally:
        backend.close()


class Chat:
    """The conversation: history, the active adapter, and the commands that change them."""

    def __init__(self, store: Store, backend: Backend, sampling: Sampling, system: str | None) -> None:
        self.store, self.backend, self.sampling = store, backend, sampling
        self.system = [{"role": "system", "content": system}] if system is not None else []
        self.messages: list[dict[str, Any]] = list(self.system)
        self.loaded: dict[str, str] = {}  # what the user typed (REF or adapter name) -> backend adapter name
        self.active: str | None = None

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self) -> None:
        tty = sys.stdin.isatty()
        if tty:
            import readline  # noqa: F401 - importing it gives input() line editing and history

        what = f"{self.backend.base.name}" + (f" + {self.active}" if self.active else "")
        err_console.print(f"[dim]chatting with {what}; /help lists commands, /exit or Ctrl-D ends[/dim]")
        while True:
            line = _read_line(tty)
            if line is None:
                if tty:
                    sys.stdout.write("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if self.command(text) == "exit":
                    return
                continue
            self.turn(line)

    def turn(self, text: str) -> None:
        """Send one user message and stream the reply; on any failure the message is taken back, so
        the history stays as it was and the chat goes on."""
        from owlkit.backends.session import Reply, fit_history

        self.messages.append({"role": "user", "content": text})
        context = self.backend.context_length
        try:
            ids, kept, dropped = fit_history(
                self.backend, self.messages, self.sampling.max_tokens, self.active
            )
            if len(ids) >= context:  # checked before dropping anything: a refused message changes nothing
                raise UsageError(
                    f"this message makes a prompt of {len(ids)} tokens; the context holds {context}: shorten it"
                )
            if dropped:
                self.messages[:] = kept
                _note(f"dropped the {dropped} oldest messages to fit the context ({context} tokens)")
        except OwlError as e:
            self.messages.pop()
            _error(e)
            return
        sampling = _replace_max(self.sampling, min(self.sampling.max_tokens, context - len(ids)))
        reply = Reply(self.backend, ids, sampling, self.active)
        try:
            for piece in reply:
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            reply.close()  # cancels the request in the backend
            sys.stdout.write("\n")
            self.messages.pop()
            _note("reply cancelled")
            return
        except OwlError as e:
            reply.close()
            sys.stdout.write("\n")
            self.messages.pop()
            _error(e)
            return
        sys.stdout.write("\n")
        sys.stdout.flush()
        self.messages.append({"role": "assistant", "content": reply.text})
        if reply.finish == "length":
            _note(f"the reply stopped at {reply.tokens} tokens (--max-tokens or the context)")

    # -- commands ------------------------------------------------------------------------------------
    def command(self, text: str) -> str | None:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        try:
            if name in ("/exit", "/quit", "/bye"):
                return "exit"
            if name == "/help":
                err_console.print(HELP, markup=False)
            elif name == "/reset":
                self.messages = list(self.system)
                _note("history cleared")
            elif name == "/save":
                if not arg:
                    raise UsageError("/save needs a file name: /save chat.json")
                self.save(Path(arg).expanduser())
            elif name == "/adapter":
                if not arg:
                    names = sorted(set(self.loaded.values()))
                    _note(f"adapters: {', '.join(names) or 'none'}; active: {self.active or 'base'}")
                else:
                    self.switch(arg)
            else:
                raise UsageError(f"unknown command {name}: /help lists the commands")
        except OwlError as e:
            _error(e)
        return None

    def save(self, path: Path) -> None:
        """Write the conversation atomically (a temporary file beside it, then a rename)."""
        data = {"model": self.backend.base.name, "adapter": self.active, "messages": self.messages}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise UsageError(f"/save {path}: {e.strerror or e}; pick a writable path") from None
        _note(f"saved {len(self.messages)} messages to {path}")

    def switch(self, ref: str, rec: Record | None = None) -> None:
        """Make ``ref`` the active adapter: one already loaded, a stored adapter (loaded now), or the
        base (``base`` / ``none``)."""
        from owlkit.errors import Refused

        if ref in _BASE_NAMES and rec is None:
            self.active = None
        elif ref in self.loaded:
            self.active = self.loaded[ref]
        else:
            rec = rec or self.store.find(ref)
            if rec.manifest.kind != "adapter":
                raise Refused(
                    f"{rec.name} is {with_article(rec.manifest.kind)}, not an adapter: /adapter takes an adapter"
                )
            if rec.name not in self.loaded.values():
                seen = len(self.backend.warnings)
                with console.status(f"loading {rec.name}…"):
                    self.backend.add_adapter(rec.name, rec)
                for w in self.backend.warnings[seen:]:
                    err_console.print(f"[yellow]warning:[/yellow] {w}")
            self.loaded[ref] = self.loaded[rec.name] = rec.name
            self.active = rec.name
        _note(f"now using {self.active or 'the base model'}")


def _read_line(tty: bool) -> str | None:
    """The next line the user typed, or None at the end (EOF, Ctrl-D, Ctrl-C at the prompt)."""
    try:
        if tty:
            return input(">>> ")
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    except (EOFError, KeyboardInterrupt):
        return None


def _replace_max(sampling: Sampling, max_tokens: int) -> Sampling:
    from dataclasses import replace

    return replace(sampling, max_tokens=max_tokens)


def _note(text: str) -> None:
    from rich.markup import escape

    err_console.print(f"[dim]{escape(text)}[/dim]", soft_wrap=True)


def _error(e: OwlError) -> None:
    from rich.markup import escape

    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    err_console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)

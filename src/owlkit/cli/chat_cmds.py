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
from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.model_cmds import BackendOpt, Seed, Temperature, TopP, print_warnings
from owlkit.cli.render import console, err_console
from owlkit.cli.state import owl
from owlkit.errors import OwlError, UsageError

if TYPE_CHECKING:
    from owlkit.api import Conversation

HELP = """commands:
  /reset          clear the history (the system message stays)
  /save FILE      write the conversation as JSON (OpenAI messages)
  /adapter NAME   switch to a loaded adapter, or load a stored one; /adapter base goes back to the base
  /adapter        list the loaded adapters
  /help           this list
  /exit, /quit    end the chat (so do Ctrl-D and Ctrl-C at the prompt; Ctrl-C during a reply stops it)"""


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
    backend: BackendOpt = "torch",
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
    with console.status(f"loading {ref}…"):
        conversation = owl().conversation(
            ref, adapters=adapter or [], system=system, max_tokens=max_tokens, temperature=temperature,
            top_p=top_p, seed=seed, backend=backend,
        )  # fmt: skip
    with conversation:
        print_warnings(conversation.loaded.warnings)
        Chat(conversation).loop()


class Chat:
    """The terminal side of a conversation: reading lines, the /commands, streaming replies."""

    def __init__(self, conversation: Conversation) -> None:
        self.conversation = conversation

    # -- the loop ------------------------------------------------------------------------------------
    def loop(self) -> None:
        tty = sys.stdin.isatty()
        if tty:
            import readline  # noqa: F401 - importing it gives input() line editing and history

        c = self.conversation
        what = c.model + (f" + {c.active}" if c.active else "")
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
        """Send one user message and stream the reply; on any failure the conversation takes the
        message back, so the history stays as it was and the chat goes on."""
        from owlkit.api import ChatResult, TextDelta

        events = self.conversation.send(text)
        started = False  # a reply line to end on failure
        try:
            for ev in events:
                if isinstance(ev, TextDelta):
                    started = True
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                elif isinstance(ev, ChatResult):
                    result = ev
        except KeyboardInterrupt:
            events.close()  # cancels the request in the backend
            sys.stdout.write("\n")
            _note("reply cancelled")
            return
        except OwlError as e:
            events.close()
            if started:
                sys.stdout.write("\n")
            _error(e)
            return
        sys.stdout.write("\n")
        sys.stdout.flush()
        if result.dropped:
            _note(
                f"dropped the {result.dropped} oldest messages to fit the context "
                f"({self.conversation.context_length} tokens)"
            )
        if result.finish_reason == "length":
            _note(
                f"the reply stopped at {result.usage.completion_tokens} tokens (--max-tokens or the context)"
            )

    # -- commands ------------------------------------------------------------------------------------
    def command(self, text: str) -> str | None:
        name, _, arg = text.partition(" ")
        arg = arg.strip()
        c = self.conversation
        try:
            if name in ("/exit", "/quit", "/bye"):
                return "exit"
            if name == "/help":
                err_console.print(HELP, markup=False)
            elif name == "/reset":
                c.reset()
                _note("history cleared")
            elif name == "/save":
                if not arg:
                    raise UsageError("/save needs a file name: /save chat.json")
                self.save(Path(arg).expanduser())
            elif name == "/adapter":
                if not arg:
                    _note(f"adapters: {', '.join(c.adapters()) or 'none'}; active: {c.active or 'base'}")
                else:
                    with console.status(f"switching to {arg}…"):
                        warnings = c.use_adapter(arg)
                    print_warnings(warnings)
                    _note(f"now using {c.active or 'the base model'}")
            else:
                raise UsageError(f"unknown command {name}: /help lists the commands")
        except OwlError as e:
            _error(e)
        return None

    def save(self, path: Path) -> None:
        """Write the conversation atomically (a temporary file beside it, then a rename)."""
        data = self.conversation.to_dict()
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
        _note(f"saved {len(data['messages'])} messages to {path}")


def _read_line(tty: bool) -> str | None:
    """The next line the user typed, or None at the end (EOF, Ctrl-D, Ctrl-C at the prompt)."""
    try:
        if tty:
            return input(">>> ")
        line = sys.stdin.readline()
        return line.rstrip("\r\n") if line else None
    except (EOFError, KeyboardInterrupt):
        return None


def _note(text: str) -> None:
    from rich.markup import escape

    err_console.print(f"[dim]{escape(text)}[/dim]", soft_wrap=True)


def _error(e: OwlError) -> None:
    from rich.markup import escape

    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    err_console.print(f"[red]error:[/red] {escape(msg)}", soft_wrap=True)

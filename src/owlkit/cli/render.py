"""Shared output helpers: Rich for people, JSON for scripts, sizes and progress bars."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A Rich console made on first use: `owl ls` and every `--json` print without Rich, and importing it
    costs ~20 ms of their start-up. Pipes and CI logs get whole lines (digests, paths) instead of an
    80-column fold."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(
                stderr=self._stderr, highlight=False, width=None if stream.isatty() else 200
            )
        return getattr(self._console, name)


console: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def print_columns(headers: list[str], rows: list[list[str]]) -> None:
    """An aligned plain-text table (like `ollama list`). Rich's Table costs ~0.2 s for 100 rows, too
    much of the half second `owl ls` may take; this is the same layout without the layout engine."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    for r in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def progress_bars(*, enabled: bool = True) -> Iterator[Any]:
    """A Rich renderer for the API's progress events: one bar per stage, bytes with rate, training steps
    with loss and tokens/s, everything with an ETA; an event carrying ``info["message"]`` (a recipe's
    status line: "writing X", "scoring …") is printed dim above the bars. Yields the callback (None when
    disabled). Stages of under 16 MB are not drawn (they finish before a bar helps), nor is anything when
    stderr is not a terminal (logs get the result lines, not bar frames)."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.text import Text

    class _Amount(ProgressColumn):
        """Bytes as sizes with a rate; other units as N/M."""

        def __init__(self) -> None:
            super().__init__()
            self._bytes, self._speed, self._count = (
                DownloadColumn(),
                TransferSpeedColumn(),
                MofNCompleteColumn(),
            )

        def render(self, task: Any) -> Text:
            if task.fields.get("unit") == "bytes":
                return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
            return self._count.render(task)

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _Amount(),
        TextColumn("{task.fields[note]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def on_event(ev: Any) -> None:
            if "message" in ev.info:
                bar.console.print(f"[dim]{ev.info['message']}[/dim]")
                return
            if ev.unit == "bytes" and ev.total is not None and ev.total < 16 * 1024 * 1024:
                return
            if ev.stage not in tasks:
                tasks[ev.stage] = bar.add_task(ev.stage, total=ev.total, unit=ev.unit, note="")
            info = ev.info
            note = (
                f"loss {info['loss']:.4f}  {info.get('tokens_per_s', 0):.0f} tok/s" if "loss" in info else ""
            )
            bar.update(tasks[ev.stage], completed=ev.done, total=ev.total, note=note)

        yield on_event


def print_stored(res: Any, done: str, started: float, *, as_json: bool) -> None:
    """How a command that stored one artifact ends (``res`` an API `Stored`): JSON for scripts, else its
    warnings and one line ``DONE -> NAME DIGEST in Ns``."""
    import time

    if as_json:
        print_json(res.to_dict())
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    console.print(
        f"{done} -> [bold]{res.name}[/bold] {res.digest[:19]} in {time.perf_counter() - started:.1f}s"
    )

"""The backend requests of one API call, bridged from the backend's worker thread to the event loop.

Each choice (prompt i, sample j) is one backend :class:`Request`. Its sink hands every Event to the
loop with ``call_soon_threadsafe``; :meth:`Generation.updates` turns them into text (through
:class:`TextStream`, the same for every backend), applies stop strings, and yields per-choice updates
for both the streaming and the one-shot answers.

Stop strings: text that could be the beginning of a stop string is held back until the next tokens show
it is not, so a streamed answer never shows part of a stop string; when one is found the text is cut
before it, the choice finishes with "stop" and its backend request is cancelled (freeing its slot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from owlkit.backends.base import Event, Request, Sampling, TokenLogprob
from owlkit.runtime.stream import TextStream

if TYPE_CHECKING:
    from owlkit.backends.base import Backend
    from owlkit.errors import OwlError


@dataclass
class Update:
    """What one choice gained from one backend event."""

    index: int
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)  # of the tokens this update covers
    tokens: list[int] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    finish: str | None = None
    error: OwlError | None = None
    first: bool = False  # the choice's first update


class Choice:
    """One sequence: its request, the text released so far and the stop-string hold-back."""

    def __init__(
        self, index: int, prompt: list[int], request: Request | None, decode: Callable, stops: list[str]
    ):
        self.index, self.prompt, self.request, self.stops = index, prompt, request, stops
        self.stream = TextStream(decode, context=prompt)
        self.pending = ""  # text held back: it may be the start of a stop string
        self.text = ""  # released text
        self.tokens: list[int] = []  # every generated token (counted in usage)
        self.finish: str | None = None
        self.started = False

    def _release(self, piece: str) -> tuple[str, bool]:
        """Text that may be shown now, and whether a stop string was hit."""
        buf = self.pending + piece
        if not self.stops:
            return buf, False
        hits = [i for i in (buf.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.pending = ""
            return buf[: min(hits)], True
        hold = 0
        for k in range(min(len(buf), max(len(s) for s in self.stops) - 1), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self.stops):
                hold = k
                break
        self.pending = buf[len(buf) - hold :]
        return buf[: len(buf) - hold], False

    def feed(self, ev: Event) -> Update:
        up = Update(self.index, prompt_logprobs=ev.prompt_logprobs, first=not self.started)
        self.started = True
        hit = False
        for k, token in enumerate(ev.tokens):
            self.tokens.append(token)
            up.tokens.append(token)
            if ev.logprobs:
                up.logprobs.append(ev.logprobs[k])
            text, hit = self._release(self.stream.push([token]))
            up.text += text
            if hit:
                break
        if not hit and ev.finish is not None:
            text, hit = self._release(self.stream.flush())
            up.text += text
            if not hit:
                up.text += self.pending  # nothing more will come: what was held back cannot be a stop
                self.pending = ""
        if hit:
            up.finish = "stop"
            if self.request is not None:
                self.request.cancel()
        elif ev.finish is not None:
            up.finish, up.error = ev.finish, ev.error
        self.text += up.text
        self.finish = up.finish
        return up


class Generation:
    """Submits the requests of one API call and yields their updates in arrival order."""

    def __init__(
        self,
        backend: Backend,
        adapter: str | None,
        prompts: list[list[int]],
        samplings: list[list[Sampling]],
        stops: list[str],
    ) -> None:
        self.backend, self.adapter = backend, adapter
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.choices: list[Choice] = []
        for prompt, per_prompt in zip(prompts, samplings, strict=True):
            for sampling in per_prompt:
                index = len(self.choices)
                # Nothing to compute: 0 tokens and no prompt logprobs (OpenAI still answers a choice).
                idle = sampling.max_tokens == 0 and not sampling.echo_logprobs
                req = None if idle else Request(list(prompt), sampling, self._sink(index), adapter=adapter)
                choice = Choice(index, prompt, req, backend.decode, stops)
                self.choices.append(choice)

    def _sink(self, index: int) -> Callable[[Event], None]:
        loop, queue = self.loop, self.queue

        def sink(ev: Event) -> None:
            # A closed loop (the server stopped) has nobody waiting for the event.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, (index, ev))

        return sink

    def start(self) -> None:
        """Submit every request; if the backend's queue fills up midway, cancel those already sent."""
        try:
            for choice in self.choices:
                if choice.request is None:  # an idle choice: nothing to compute
                    self.queue.put_nowait((choice.index, Event(finish="length")))
                else:
                    self.backend.submit(choice.request)
        except BaseException:
            self.cancel()
            raise

    def cancel(self) -> None:
        for choice in self.choices:
            if choice.request is not None:
                choice.request.cancel()

    async def updates(self) -> AsyncIterator[Update]:
        remaining = len(self.choices)
        while remaining:
            index, ev = await self.queue.get()
            choice = self.choices[index]
            if choice.finish is not None:  # the backend's "abort" after we stopped it at a stop string
                continue
            up = choice.feed(ev)
            if up.finish is not None:
                remaining -= 1
            yield up

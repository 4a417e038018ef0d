"""One turn of text generation on a backend, shared by `owl run` and `owl chat`.

Messages become prompt ids the same way for both commands and for every backend: the chat template
the backend reports (an adapter's own wins) is rendered in owlkit's sandbox (``render_chat``), and the
rendered text is encoded without adding BOS/EOS, since the template writes whatever special tokens it
wants. A plain prompt is encoded with the tokenizer's usual special tokens instead. The reply is
streamed as text with :class:`TextStream`, so a multi-byte character is never split.
"""

from __future__ import annotations

from collections.abc import Iterator

from owlkit.backends.base import Backend, Sampling, generate
from owlkit.errors import UsageError
from owlkit.runtime.chat import render_chat
from owlkit.runtime.stream import TextStream


def chat_ids(
    backend: Backend, messages: list[dict], adapter: str | None = None, *, hint: str = ""
) -> list[int]:
    """Prompt ids of ``messages`` rendered with the model's chat template, ready for the reply.
    UsageError naming the model (and ``hint``, the fix) when it has no template."""
    template, special = backend.chat_template(adapter)
    if not template:
        raise UsageError(f"{backend.base.name} has no chat template{hint}")
    text = render_chat(template, messages, add_generation_prompt=True, **special)
    return backend.encode(text, special=False)


def prompt_ids(
    backend: Backend, prompt: str, *, chat: bool, system: str | None = None, adapter: str | None = None
) -> list[int]:
    """`owl run`'s prompt: wrapped in the chat template with ``chat``, else plain text after BOS."""
    if chat:
        messages = [{"role": "system", "content": system}] if system is not None else []
        messages.append({"role": "user", "content": prompt})
        ids = chat_ids(backend, messages, adapter, hint=": drop --chat to send the prompt as plain text")
    elif system is not None:
        raise UsageError("--system needs --chat")
    else:
        ids = backend.encode(prompt, special=True)
    if not ids:
        raise UsageError("the prompt is empty after tokenization; give some text")
    return ids


def fit_history(
    backend: Backend, messages: list[dict], max_tokens: int, adapter: str | None = None
) -> tuple[list[int], list[dict], int]:
    """(prompt ids, messages kept, turns dropped): the oldest turns after the system message are
    dropped until prompt + ``max_tokens`` fits the context. The last user turn is always kept (the
    caller checks whether it fits at all). Dropping starts at the next user message, so the kept
    history still alternates user/assistant as templates require."""
    system = messages[:1] if messages and messages[0].get("role") == "system" else []
    turns = messages[len(system) :]
    dropped = 0
    while True:
        ids = chat_ids(
            backend, system + turns, adapter, hint="; owl chat needs one (owl run sends plain text)"
        )
        if len(ids) + max_tokens <= backend.context_length or len(turns) <= 1:
            return ids, system + turns, dropped
        cut = next((i for i in range(1, len(turns)) if turns[i].get("role") == "user"), len(turns) - 1)
        turns, dropped = turns[cut:], dropped + cut


class Reply:
    """One request's output as text pieces, streamed as the backend decodes. Iterating submits the
    request; afterwards ``text``, ``tokens`` and ``finish`` describe the whole reply. Leaving the loop
    early or :meth:`close` cancels the request, which frees its slot in the backend."""

    def __init__(self, backend: Backend, prompt: list[int], sampling: Sampling, adapter: str | None = None):
        self._events = generate(backend, prompt, sampling, adapter=adapter)
        self._stream = TextStream(backend.decode, prompt)
        self.tokens = 0
        self.finish: str | None = None

    def __iter__(self) -> Iterator[str]:
        try:
            for ev in self._events:
                self.tokens += len(ev.tokens)
                piece = self._stream.push(ev.tokens) if ev.tokens else ""
                if piece:
                    yield piece
                self.finish = ev.finish or self.finish
        finally:
            self._events.close()  # a no-op when the request finished; else it cancels it
        tail = self._stream.flush()
        if tail:
            yield tail

    @property
    def text(self) -> str:
        return self._stream.text

    def close(self) -> None:
        self._events.close()

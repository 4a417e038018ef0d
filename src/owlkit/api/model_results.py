"""What `Owl.run`, `Owl.chat` and `Owl.serve` report.

`run` and `chat` yield events: a `TextDelta` for each piece of text as it decodes, then one final
`RunResult` (or `ChatResult`) with the whole text, usage, finish reason, timings and what loading the
model warned about. A `Conversation` says what it loaded in its `Loaded`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from owlkit.api.results import Result


@dataclass
class Loaded(Result):
    """The model is loaded: ``model`` is the base's name, ``adapter`` the active adapter (or None)."""

    model: str
    adapter: str | None
    backend: str
    load_s: float
    warnings: list[str] = field(default_factory=list)  # what loading noted (quantization differs)


@dataclass
class TextDelta(Result):
    """The next piece of the reply (never half a character)."""

    text: str


@dataclass
class Usage(Result):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass
class Timings(Result):
    load_s: float
    generate_s: float
    tokens_per_s: float


@dataclass
class RunResult(Result):
    """`owl run --json`: the whole completion. ``finish_reason`` is "stop" (the model ended it) or
    "length" (max_tokens or the context)."""

    model: str
    adapter: str | None
    backend: str
    text: str
    finish_reason: str
    usage: Usage
    timings: Timings
    warnings: list[str]


@dataclass
class ChatResult(RunResult):
    """One chat reply. ``messages`` is the conversation as the model saw it (``dropped`` oldest messages
    left out to fit the context) followed by the reply."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0

    @property
    def message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": self.text}


RunEvent = TextDelta | RunResult
ChatEvent = TextDelta | ChatResult


@dataclass
class ServedModel(Result):
    """One name requests may pick on a server: a base model, or an adapter on ``parent``."""

    name: str
    kind: str  # "model" or "adapter"
    parent: str | None
    backend: str
    license: str
    terms: dict[str, str] | None  # {"use", "status"} under a declared use
    warnings: list[str]

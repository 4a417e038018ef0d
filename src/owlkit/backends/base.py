"""One interface for every inference backend: `owl run`, `owl chat` and `owl serve` all go through it.

A backend holds one base model in memory plus any number of adapters that share it, and generates
token ids for :class:`Request` objects. It knows nothing of HTTP or text streaming: callers encode the
prompt with :meth:`Backend.encode`, submit a request, and receive :class:`Event` objects on the
request's ``sink`` (from the backend's worker thread) until one carries a ``finish`` reason. Text is
rebuilt from ids by :class:`TextStream`, the same way for every backend.

Backends are found through the ``owlkit.backends`` entry-point group, so a new one (vLLM on a GPU
machine, say) is one module with a :class:`Backend` subclass plus one line in its package's
``pyproject.toml``::

    [project.entry-points."owlkit.backends"]
    vllm = "owlkit_vllm:VLLMBackend"

The two built-in backends are registered the same way in owlkit's own ``pyproject.toml``.
"""

from __future__ import annotations

import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.errors import OwlError, Refused, UsageError
from owlkit.runtime.stream import Sampling

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store

ENTRY_POINT_GROUP = "owlkit.backends"
# Used only when owlkit runs from a source tree whose package metadata is not installed.
_BUILTIN = {
    "torch": "owlkit.backends.torch_backend:TorchBackend",
    "gguf": "owlkit.backends.gguf_backend:GGUFBackend",
}
ALIASES = {"llama.cpp": "gguf"}  # other names --backend accepts


class QueueFull(OwlError):
    """The backend's bounded queue is full: the server answers 429, the caller retries later."""

    exit_code = 5


@dataclass
class TokenLogprob:
    """A token's log-probability under the model, and the ``top`` most likely (id, logprob) there."""

    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class Event:
    """What a backend reports for a request: new tokens, and on the last event a finish reason.

    finish is "stop" (an end-of-sequence token, not included in ``tokens``), "length" (max_tokens or
    the context is full), "abort" (the request was cancelled) or "error" (``error`` says why)."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token when asked for
    prompt_logprobs: list[TokenLogprob | None] | None = None  # first event only, with echo_logprobs
    finish: str | None = None
    error: OwlError | None = None


@dataclass
class Request:
    """One sequence to generate. ``adapter`` is an adapter name the backend holds, or None for the base."""

    prompt: list[int]
    sampling: Sampling
    sink: Callable[[Event], None]
    adapter: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Ask the backend to drop this request; it frees the slot at its next step."""
        self.cancelled.set()


@dataclass
class BackendOptions:
    max_batch: int = 8  # sequences decoded together (1 for backends that cannot batch)
    max_queue: int = 64  # requests waiting beyond the running batch; past it, QueueFull
    n_ctx: int | None = None  # context length to allocate (gguf); None: the model's own, capped
    threads: int | None = None


@dataclass(frozen=True)
class AdapterFiles:
    """A checked adapter as a backend loads it: ``path`` is a PEFT folder or a GGUF LoRA file
    (`owlkit.backends.adapters` checks and prepares it)."""

    record: Record
    path: Path
    chat_template: str | None  # the adapter's own, when it ships one (it wins over the base's)


class Backend(ABC):
    """A base model and its adapters in one process. Methods other than :meth:`submit` are called
    from one thread at a time (the server serialises them); :meth:`submit` may be called from any."""

    name: str = ""
    adapter_format: str = "peft"  # the adapter files add_adapter loads: "peft" (a folder) or "gguf-lora"

    def __init__(self, store: Store, base: Record, options: BackendOptions) -> None:
        self.store, self.base, self.options = store, base, options
        self.warnings: list[str] = []  # what loading the base and its adapters noted (quantization differs)

    @property
    @abstractmethod
    def context_length(self) -> int:
        """Most tokens (prompt + output) one sequence may hold."""

    @abstractmethod
    def encode(self, text: str, *, special: bool) -> list[int]:
        """Token ids of ``text``; ``special`` adds the tokenizer's BOS/EOS as it usually would."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens left out."""

    @abstractmethod
    def token_text(self, token: int) -> str:
        """One token as text, as logprobs report it (byte tokens stay e.g. ``<0x0A>``)."""

    @abstractmethod
    def chat_template(self, adapter: str | None) -> tuple[str | None, dict[str, str]]:
        """The chat template to render messages with (an adapter's own wins) and the special tokens
        (bos_token, eos_token, …) it may use."""

    @abstractmethod
    def add_adapter(self, name: str, adapter: AdapterFiles) -> None:
        """Load an adapter under ``name``, sharing the base's weights. ``adapter`` was checked against
        the base and prepared in :attr:`adapter_format` by `owlkit.backends.adapters.attach`, which is
        how callers add one."""

    @abstractmethod
    def remove_adapter(self, name: str) -> None:
        """Drop an adapter; requests already running with it finish first."""

    @abstractmethod
    def submit(self, request: Request) -> None:
        """Queue a request; QueueFull when the queue is full, UsageError when it cannot run here."""

    @abstractmethod
    def close(self) -> None:
        """Stop the worker; requests still queued finish with "abort"."""

    def adapters(self) -> list[str]:
        return []


def adapter_chat_template(folder: Path) -> str | None:
    """An adapter's own chat template (``chat_template.jinja`` or tokenizer_config.json), if it ships
    one: it wins over the base's, as LoRAX does, since the adapter was trained on it."""
    import json

    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return value if isinstance(value, str) else None
    return None


def backend_names() -> list[str]:
    return sorted({*_BUILTIN, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def backend_name(name: str) -> str:
    """The registered name ``name`` stands for (``llama.cpp`` is the gguf backend)."""
    return ALIASES.get(name, name)


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name`` (or an alias of it)."""
    import importlib

    name = backend_name(name)
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name in found:
        cls = found[name].load()
    elif name in _BUILTIN:
        module, attr = _BUILTIN[name].split(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        aliases = ", ".join(f"{a} = {b}" for a, b in ALIASES.items())
        raise UsageError(
            f"--backend {name!r} is unknown: choose one of {', '.join(backend_names())} ({aliases})"
        )
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise Refused(f"backend {name!r} ({cls!r}) is not an owlkit Backend subclass: fix its entry point")
    return cls


def open_backend(store: Store, base: Record, name: str = "torch", **options: Any) -> Backend:
    return backend_class(name)(store, base, BackendOptions(**options))


def generate(backend: Backend, request_prompt: list[int], sampling: Sampling, *, adapter: str | None = None,
             timeout: float | None = None) -> Iterator[Event]:  # fmt: skip
    """Run one request synchronously (``owl run``, ``owl chat``): events until the finishing one.
    Closing the iterator early cancels the request."""
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    req = Request(list(request_prompt), sampling, events.put, adapter=adapter)
    backend.submit(req)
    try:
        while True:
            ev = events.get(timeout=timeout)
            if ev.error is not None:
                raise ev.error
            yield ev
            if ev.finish is not None:
                return
    finally:
        req.cancel()

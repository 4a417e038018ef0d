"""The model commands: convert, run, chat, serve.

`run` and `chat` load a model (or an adapter on its base) into a backend (``torch`` by default, ``gguf``
alias ``llama.cpp`` for GGUF models in llama.cpp) and yield events as it decodes (`model_results`). A chat
kept open across turns, as `owl chat` keeps it, is a `Conversation`; `owl serve` is a `Serving`.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from owlkit.api.base import ApiBase, HasDigest, Ref, ref_str
from owlkit.api.model_results import (
    ChatEvent,
    ChatResult,
    Loaded,
    RunEvent,
    RunResult,
    ServedModel,
    TextDelta,
    Timings,
    Usage,
)
from owlkit.api.progress import Progress, ProgressEvent
from owlkit.api.results import Stored
from owlkit.errors import Refused, UsageError, with_article

if TYPE_CHECKING:
    import socket

    from owlkit.backends.base import Backend, Sampling
    from owlkit.backends.session import Reply
    from owlkit.serve.registry import Server
    from owlkit.store.store import Record, Store

BASE_NAMES = ("base", "none")  # what `Conversation.use_adapter` takes for "no adapter"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_NO_TEMPLATE = "has no chat template: owl chat needs one (owl run sends plain text)"

AdapterSpec = Ref | tuple[str, Ref]
"""An adapter to serve: a REF (served under the REF as given), or (NAME, REF)."""


class ModelApi(ApiBase):
    def convert(
        self,
        ref: Ref,
        *,
        to: str = "hf",
        dtype: str = "float32",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Stored:
        """Dequantize a stored GGUF into a Hugging Face safetensors folder (``dtype`` float32 or
        bfloat16), stored as ``name`` (default: REF-hf)."""
        from owlkit.recipes.convert import ConvertParams, convert

        params = ConvertParams(to=to, dtype=dtype)
        stage = f"converting {ref_str(ref)} to {to} ({dtype})"
        with self._store(write=True) as store:  # checkouts are written into the store
            if progress:
                progress(ProgressEvent(stage, 0, None))
            digest = convert(store, ref_str(ref), params, name=name)
            if progress:
                progress(ProgressEvent(stage, 1, 1))
            return self._stored(store, digest)

    def run(
        self,
        ref: Ref,
        prompt: str,
        *,
        chat: bool = False,
        system: str | None = None,
        max_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        base: Ref | None = None,
        backend: str = "torch",
    ) -> Iterator[RunEvent]:
        """Complete ``prompt`` with a model, or an adapter on its base (``base``: another model of the same
        base identity). ``chat`` wraps the prompt (after ``system``) in the model's chat template.
        Yields `TextDelta` pieces as they decode, then a `RunResult` (with the loading warnings);
        closing the iterator early cancels the generation and frees the model."""
        if system is not None and not chat:
            raise UsageError("--system needs --chat")
        sampling = _sampling(max_tokens, temperature, top_p, seed)
        return self._run(ref, prompt, chat, system, sampling, base, backend)

    def _run(
        self,
        ref: Ref,
        prompt: str,
        chat: bool,
        system: str | None,
        sampling: Sampling,
        base: Ref | None,
        backend: str,
    ) -> Iterator[RunEvent]:
        from owlkit.backends.session import prompt_ids

        with self._store(write=True) as store:  # checkouts are written into the store
            rec = self._record(store, ref)
            base_rec = self._record(store, base) if base is not None else None
            if chat and rec.manifest.kind == "model" and not rec.facts.chat_template_digest:
                raise UsageError(
                    f"{rec.name} has no chat template: drop --chat to send the prompt as plain text"
                )
            be, loaded = _open(store, rec, backend, base_rec)
            try:
                ids = prompt_ids(be, prompt, chat=chat, system=system, adapter=loaded.adapter)
                # The context holds the prompt and the reply: shorten the reply rather than fail.
                room = max(0, min(sampling.max_tokens, be.context_length - len(ids)))
                reply, took = yield from _stream(be, ids, replace(sampling, max_tokens=room), loaded.adapter)
                yield _result(RunResult, loaded, ids, reply, took)
            finally:
                be.close()

    def chat(
        self,
        ref: Ref,
        messages: Sequence[dict[str, Any]],
        *,
        adapters: Sequence[Ref] = (),
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        backend: str = "torch",
    ) -> Iterator[ChatEvent]:
        """The model's reply to ``messages`` (OpenAI chat messages, the last one answered), rendered with
        its chat template; the oldest turns after the system message are left out when the whole does
        not fit the context. ``adapters`` are loaded on the base, the last one answering. Yields
        `TextDelta` pieces, then a `ChatResult`."""
        if not messages:
            raise UsageError("give at least one message to answer")
        _sampling(max_tokens, temperature, top_p, seed)  # a bad option fails here, not when iterated
        options = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "seed": seed}
        return self._chat(ref, list(messages), adapters, backend, options)

    def _chat(
        self, ref: Ref, messages: list[dict[str, Any]], adapters: Sequence[Ref], backend: str, options: Any
    ) -> Iterator[ChatEvent]:
        with self.conversation(ref, adapters=adapters, backend=backend, **options) as conversation:
            conversation.messages = [dict(m) for m in messages[:-1]]
            yield from conversation.send(messages[-1])

    def conversation(
        self,
        ref: Ref,
        *,
        adapters: Sequence[Ref] = (),
        system: str | None = None,
        max_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        backend: str = "torch",
    ) -> Conversation:
        """A chat kept open on the loaded model (`owl chat`): send it messages one by one, switch
        adapters, reset it. ``max_tokens`` bounds each reply. Close it (or use ``with``) to free the
        model."""
        sampling = _sampling(max_tokens, temperature, top_p, seed)
        stack = ExitStack()
        try:
            store = stack.enter_context(self._store(write=True))  # checkouts are written into the store
            rec = self._record(store, ref)
            extra = [(ref_str(a), self._record(store, a)) for a in adapters]  # all found before loading
            if rec.manifest.kind == "model" and not rec.facts.chat_template_digest:
                raise UsageError(f"{rec.name} {_NO_TEMPLATE}")
            be, loaded = _open(store, rec, backend)
            stack.callback(be.close)
            conversation = Conversation(stack, store, be, loaded, sampling, system)
            if loaded.adapter is not None:
                conversation._known[ref_str(ref)] = conversation._known[loaded.adapter] = loaded.adapter
                conversation.active = loaded.adapter
            for key, a_rec in extra:
                conversation._load(key, a_rec)
            if not be.chat_template(conversation.active)[0]:
                raise UsageError(f"{be.base.name} {_NO_TEMPLATE}")
            conversation.loaded = replace(loaded, adapter=conversation.active, warnings=list(be.warnings))
            return conversation
        except BaseException:
            stack.close()
            raise

    def serve(
        self,
        refs: Ref | Sequence[Ref],
        *,
        adapters: Iterable[AdapterSpec] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        use: str | None = None,
        backend: str = "torch",
        max_batch: int = 8,
        max_queue: int = 64,
        threads: int | None = None,
        allow_adapter_paths: bool = False,
    ) -> Serving:
        """Load models for an OpenAI-compatible server (`owl serve`) and bind its socket (``port`` 0: a
        free one). Requests pick a base by its REF, an adapter by its name; ``use`` refuses models whose
        terms forbid it; ``api_key`` requires ``Authorization: Bearer KEY``.

        Use the result as a context manager: ``with owl.serve("base", adapters=[("a", "adapter")]) as
        url:`` serves in a background thread while the block runs, ``url`` being the base URL the
        ``openai`` client takes (``http://127.0.0.1:PORT/v1``), and stops it at the end. Or call its
        ``serve_forever()``, which blocks until Ctrl-C or SIGTERM, then ``close()``."""
        from owlkit.serve.app import bind_socket
        from owlkit.serve.registry import Server

        bases = [refs] if isinstance(refs, str | HasDigest) else list(refs)
        specs = [_adapter_spec(a) for a in adapters]
        stack = ExitStack()
        try:
            store = stack.enter_context(self._store(write=True))  # checkouts are written into the store
            server = Server.open(
                store, [ref_str(r) for r in bases], specs, api_key=api_key, use=use, backend=backend,
                max_batch=max_batch, max_queue=max_queue, allow_adapter_paths=allow_adapter_paths, threads=threads,
            )  # fmt: skip
            stack.callback(server.close)
            sock = bind_socket(host, port)
            stack.callback(sock.close)
            exposed = host not in _LOOPBACK and not api_key
            warning = (
                f"listening on {host} without --api-key: anyone who can reach this address can use the models"
            )
            return Serving(stack, server, sock, [warning] if exposed else [])
        except BaseException:
            stack.close()
            raise


class Conversation:
    """A chat held open on one loaded model (`Owl.conversation`): the history (``messages``, OpenAI
    chat messages), the active adapter and the adapters loaded on the way. Close it, or use it as a
    context manager, to free the model."""

    def __init__(
        self,
        stack: ExitStack,
        store: Store,
        backend: Backend,
        loaded: Loaded,
        sampling: Sampling,
        system: str | None,
    ) -> None:
        self._stack, self._store, self._backend, self.sampling = stack, store, backend, sampling
        self.loaded = loaded  # the model, backend, load time and loading warnings
        self._system = [{"role": "system", "content": system}] if system is not None else []
        self.messages: list[dict[str, Any]] = list(self._system)
        self.active: str | None = None  # the adapter that answers (None: the base)
        self._known: dict[str, str] = {}  # what a caller named an adapter by -> its name in the backend

    @property
    def model(self) -> str:
        return self._backend.base.name

    @property
    def context_length(self) -> int:
        return self._backend.context_length

    def adapters(self) -> list[str]:
        """The adapters loaded so far."""
        return sorted(set(self._known.values()))

    def reset(self) -> None:
        """Forget the history; the system message stays."""
        self.messages = list(self._system)

    def use_adapter(self, ref: Ref | None) -> list[str]:
        """Answer with ``ref`` from now on: an adapter loaded already (by any name it was given), a
        stored adapter (loaded now, on the same base), or the base (None, ``base`` or ``none``).
        Returns the warnings of loading it (quantization differs)."""
        if ref is None or ref in BASE_NAMES:
            self.active = None
            return []
        key = ref_str(ref)
        if key in self._known:
            self.active = self._known[key]
            return []
        return self._load(key, self._store.find(key))

    def _load(self, key: str, rec: Record) -> list[str]:
        from owlkit.backends.adapters import attach

        if rec.manifest.kind != "adapter":
            raise Refused(
                f"{rec.name} is {with_article(rec.manifest.kind)}, not an adapter: give an adapter REF"
            )
        warnings = attach(self._backend, rec.name, rec) if rec.name not in self._known.values() else []
        self._known[key] = self._known[rec.name] = self.active = rec.name
        return warnings

    def send(self, message: str | dict[str, Any]) -> Iterator[TextDelta | ChatResult]:
        """Add ``message`` (text is a user message) and stream the reply: `TextDelta` pieces, then a
        `ChatResult`, after which the reply is in the history. The oldest turns after the system
        message are dropped until the prompt and ``max_tokens`` fit the context (UsageError when the
        new message alone does not). If the reply fails or the iterator is closed before the end
        (which cancels it), the message is taken back and the history is as it was."""
        from owlkit.backends.session import fit_history

        msg = {"role": "user", "content": message} if isinstance(message, str) else dict(message)
        self.messages.append(msg)
        try:
            context, wanted = self._backend.context_length, self.sampling.max_tokens
            ids, kept, dropped = fit_history(self._backend, self.messages, wanted, self.active)
            if len(ids) >= context:  # checked before dropping anything: a refused message changes nothing
                raise UsageError(
                    f"this message makes a prompt of {len(ids)} tokens; the context holds {context}: shorten it"
                )
            self.messages[:] = kept
            sampling = replace(self.sampling, max_tokens=min(wanted, context - len(ids)))
            reply, took = yield from _stream(self._backend, ids, sampling, self.active)
        except BaseException:
            if self.messages and self.messages[-1] is msg:
                self.messages.pop()
            raise
        self.messages.append({"role": "assistant", "content": reply.text})
        loaded = replace(self.loaded, adapter=self.active, warnings=list(self._backend.warnings))
        yield _result(ChatResult, loaded, ids, reply, took, messages=list(self.messages), dropped=dropped)

    def to_dict(self) -> dict[str, Any]:
        """The conversation as `owl chat`'s /save writes it."""
        return {"model": self.model, "adapter": self.active, "messages": self.messages}

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Conversation:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Serving:
    """Models loaded for serving and a bound socket (`Owl.serve`). ``with`` it to serve in a background
    thread while the block runs (it gives the base URL), or call :meth:`serve_forever`; then
    :meth:`close`."""

    def __init__(self, stack: ExitStack, server: Server, sock: socket.socket, warnings: list[str]) -> None:
        from owlkit.serve.app import url_of

        self._stack, self._server, self._sock = stack, server, sock
        self.url = f"{url_of(sock)}/v1"  # what the openai client takes as base_url
        every = server.warnings + [w for m in server.models.values() for w in m.warnings] + warnings
        self.warnings = list(dict.fromkeys(every))  # a model's warnings may also be the server's
        self._stop: Any = None

    @property
    def models(self) -> list[ServedModel]:
        """What requests may name: the bases, and the adapters loaded on them (at start or since)."""
        return [
            ServedModel(m.name, "adapter" if m.parent else "model", m.parent, m.backend.name,
                        m.record.manifest.license, m.terms, list(m.warnings))
            for m in list(self._server.models.values())
        ]  # fmt: skip

    def start(self) -> str:
        """Serve in a background thread, once it answers; returns the base URL."""
        from owlkit.serve.app import start_in_thread

        if self._stop is None:
            self._stop = start_in_thread(self._server, self._sock)
        return self.url

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM."""
        from owlkit.serve.app import serve

        serve(self._server, self._sock)

    def close(self) -> None:
        """Stop serving (requests still queued finish with "abort") and free the models."""
        stop, self._stop = self._stop, None
        try:
            if stop is not None:
                stop()
        finally:
            self._stack.close()

    def __enter__(self) -> str:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *_: object) -> None:
        self.close()


# ----- shared by run and chat ----------------------------------------------------------------------------
def _sampling(max_tokens: int, temperature: float, top_p: float, seed: int | None) -> Sampling:
    from owlkit.backends.base import Sampling

    sampling = Sampling(max_tokens, temperature, top_p, seed)
    sampling.check()
    return sampling


def _open(store: Store, rec: Record, backend: str, base: Record | None = None) -> tuple[Backend, Loaded]:
    """A backend holding ``rec`` (an adapter: on its base) for one sequence at a time."""
    from owlkit.backends.loading import open_for

    started = time.perf_counter()
    be, adapter = open_for(store, rec, backend, base=base, max_batch=1, max_queue=1)
    return be, Loaded(be.base.name, adapter, be.name, time.perf_counter() - started, list(be.warnings))


def _stream(
    backend: Backend, ids: list[int], sampling: Sampling, adapter: str | None
) -> Generator[TextDelta, None, tuple[Reply, float]]:
    """Text pieces as they decode; returns the finished reply and the seconds it took. Closing the
    generator cancels the request."""
    from owlkit.backends.session import Reply

    reply = Reply(backend, ids, sampling, adapter)
    started = time.perf_counter()
    try:
        for piece in reply:
            yield TextDelta(piece)
    finally:
        reply.close()
    return reply, time.perf_counter() - started


def _result(
    cls: type[RunResult], loaded: Loaded, ids: list[int], reply: Reply, took: float, **more: Any
) -> Any:
    return cls(
        model=loaded.model,
        adapter=loaded.adapter,
        backend=loaded.backend,
        text=reply.text,
        finish_reason=reply.finish or "stop",
        usage=Usage(len(ids), reply.tokens, len(ids) + reply.tokens),
        timings=Timings(loaded.load_s, took, reply.tokens / max(took, 1e-9)),
        warnings=loaded.warnings,
        **more,
    )


def _adapter_spec(spec: AdapterSpec) -> tuple[str | None, str]:
    if isinstance(spec, tuple):
        name, ref = spec
        return name, ref_str(ref)
    return None, ref_str(spec)

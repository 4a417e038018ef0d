"""The gguf backend: a GGUF model in llama.cpp (llama-cpp-python, the ``gguf`` extra), with GGUF LoRA
adapters switched per request through llama.cpp's adapter API.

One request at a time (max batch 1): llama-cpp-python's high-level API (``Llama``) decodes a single
sequence and has no batched decoding of independent sequences, and a llama.cpp context must not be used
from two threads. So one worker thread owns the context and runs the waiting requests one after another,
token by token, through the C API that llama-cpp-python binds (``llama_decode``, llama.cpp's sampler
chain). ``BackendOptions.max_batch`` is ignored; ``max_queue`` bounds the requests waiting behind the
running one (past it, :class:`QueueFull`).

Prefix cache: the context's KV cache keeps the previous request's tokens, and a request re-evaluates only
what follows the common prefix (as ``Llama.generate`` does). Cached keys and values were computed with
one adapter, so the cache is dropped whenever the request's adapter differs from the last one's, and for
echo requests, which need the logits of every prompt position.

Adapters: GGUF LoRA files (``adapter_format``), checked against the base and, for a stored PEFT adapter,
converted by the layer above (:mod:`owlkit.backends.adapters`), loaded on the shared model with
``llama_adapter_lora_init`` (only the adapter's own matrices are added) and set on the context before each
request with ``llama_set_adapters_lora`` (none for the base). llama.cpp adds the adapter's product while
computing and never modifies the base weights, so one loaded model serves every adapter, per request.

Logprobs: log-softmax (float64) of the logits llama.cpp keeps for the last position. Prompt logprobs
(echo) evaluate the prompt on the same context with logits kept for every position, in chunks.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from owlkit.backends.adapters import gguf_path
from owlkit.backends.base import (
    AdapterFiles,
    Backend,
    BackendOptions,
    Event,
    QueueFull,
    Request,
    Sampling,
    TokenLogprob,
)
from owlkit.errors import InvalidFile, NotFound, OwlError, Refused, UsageError, with_article
from owlkit.runtime.llamacpp import import_llama_cpp, open_gguf

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store

DEFAULT_CONTEXT = 4096  # the most tokens allocated without --n-ctx: the KV cache grows with it
ECHO_CHUNK = 128  # prompt positions per decode when each one's logits are kept (chunk x vocab floats)
_RANDOM_SEEDS = 0xFFFFFFFF  # llama.cpp reads this seed as "pick one at random": user seeds stay below it


@dataclass(eq=False)
class _Adapter:
    name: str
    handle: Any  # llama_adapter_lora *
    template: str | None  # the adapter's own chat template, if it ships one
    freed: bool = False  # removed while a request for it was being taken off the queue


class GGUFBackend(Backend):
    name = "gguf"
    adapter_format = "gguf-lora"

    def __init__(self, store: Store, base: Record, options: BackendOptions) -> None:
        super().__init__(store, base, options)
        m = base.manifest
        if m.kind != "model" or m.format != "gguf":
            raise Refused(
                f"{base.name} is {with_article(m.kind)}/{m.format}, not a GGUF model: serve it with --backend torch"
            )
        self._lc = lc = import_llama_cpp("serving with --backend gguf")
        self._path = gguf_path(store, base)
        trained = base.facts.context_length
        trained = trained if trained and trained > 0 else DEFAULT_CONTEXT
        threads = options.threads or os.cpu_count() or 2
        self._llm = open_gguf(
            self._path,
            n_ctx=options.n_ctx or min(trained, DEFAULT_CONTEXT),
            n_threads=threads,
            n_threads_batch=threads,
        )
        self._n_ctx = int(self._llm.n_ctx())
        self._chunk = int(self._llm.n_batch)
        self._vocab = lc.llama_model_get_vocab(self._llm.model)
        self._n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self._eos = {t for t in (self._llm.token_eos(), lc.llama_vocab_eot(self._vocab)) if t >= 0}
        self._template = self._llm.metadata.get("tokenizer.chat_template")
        self._mem = lc.llama_get_memory(self._llm.ctx)
        self._batch = lc.llama_batch_init(self._chunk, 0, 1)
        # Worker-thread state: what the KV cache holds, and the adapter it was computed with.
        self._cached: list[int] = []
        self._active: _Adapter | None = None
        # Shared state, under _cond: loaded adapters, waiting requests, the running one.
        self._adapters: dict[str, _Adapter] = {}
        self._pending: deque[tuple[Request, _Adapter | None]] = deque()
        self._running: Request | None = None
        self._closed = False
        self._cond = threading.Condition()
        self._ctx_lock = threading.Lock()  # held while a request uses the context, or adapters change
        self._worker = threading.Thread(target=self._loop, name=f"owl-gguf-{base.name}", daemon=True)
        self._worker.start()

    # -- text ----------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._n_ctx

    def encode(self, text: str, *, special: bool) -> list[int]:
        self._check_open()
        # Special-token text (a rendered chat template's <|im_start|>) is always parsed as those tokens,
        # as transformers tokenizers do; ``special`` only adds the BOS/EOS the file asks for.
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=special, special=True))

    def decode(self, ids: list[int]) -> str:
        self._check_ids(ids, "a token id")
        if not ids:
            return ""
        tokens = (self._lc.llama_token * len(ids))(*ids)
        size = 8 * len(ids) + 16
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self._lc.llama_detokenize(self._vocab, tokens, len(ids), buf, size, False, False)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n  # too small: llama.cpp said how many bytes it needs
        raise OwlError(f"llama.cpp could not detokenize {len(ids)} tokens of {self.base.name}")

    def token_text(self, token: int) -> str:
        self._check_ids([token], "a token id")
        buf = ctypes.create_string_buffer(256)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def chat_template(self, adapter: str | None) -> tuple[str | None, dict[str, str]]:
        own = self._adapters[adapter].template if adapter in self._adapters else None
        lc = self._lc
        special = {}
        for key, token in (
            ("bos_token", lc.llama_vocab_bos(self._vocab)),
            ("eos_token", self._llm.token_eos()),
        ):
            special[key] = self.token_text(token) if 0 <= token < self._n_vocab else ""
        return own or self._template, special

    def _check_open(self) -> None:
        if self._closed:  # the model is freed: llama.cpp would read freed memory
            raise Refused("the backend is shut down")

    def _check_ids(self, ids: list[int], what: str) -> None:
        self._check_open()
        # llama.cpp aborts the whole process on an id outside its vocabulary: refuse it here.
        if any(not isinstance(t, int) or not 0 <= t < self._n_vocab for t in ids):
            raise UsageError(f"{what} is outside the vocabulary of {self.base.name} (0..{self._n_vocab - 1})")

    # -- adapters ------------------------------------------------------------------------------------
    def adapters(self) -> list[str]:
        with self._cond:
            return sorted(self._adapters)

    def add_adapter(self, name: str, adapter: AdapterFiles) -> None:
        with self._cond:
            if self._closed:
                raise Refused("the backend is shut down")
            if name in self._adapters:
                raise UsageError(f"an adapter named {name!r} is already loaded: pick another name")
        with self._ctx_lock:  # the model's adapter list must not change while a request decodes
            if self._closed:
                raise Refused("the backend is shut down")
            handle = self._lc.llama_adapter_lora_init(self._llm.model, str(adapter.path).encode())
            if not handle:
                raise InvalidFile(
                    f"{adapter.record.name}: llama.cpp cannot load it as a LoRA of {self.base.name}"
                )
            with self._cond:
                self._adapters[name] = _Adapter(name, handle, adapter.chat_template)

    def remove_adapter(self, name: str) -> None:
        with self._cond:
            adapter = self._adapters.pop(name, None)
            if adapter is None:
                raise NotFound(f"no adapter named {name!r} is loaded")
            for item in [it for it in self._pending if it[1] is adapter]:
                self._pending.remove(item)
                item[0].sink(Event(finish="error", error=NotFound(f"adapter {name!r} was unloaded")))
        with self._ctx_lock:  # after the running request, which may use it, has finished
            if self._active is adapter:
                self._use_adapter(None)
            self._lc.llama_adapter_lora_free(adapter.handle)
            adapter.freed = True

    # -- requests ------------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        request.sampling.check()
        if not request.prompt:
            raise UsageError("the prompt is empty after tokenization; give some text")
        self._check_ids(request.prompt, "a prompt token id")
        with self._cond:
            if self._closed:
                raise Refused("the backend is shut down")
            adapter = None
            if request.adapter is not None:
                adapter = self._adapters.get(request.adapter)
                if adapter is None:
                    raise NotFound(f"no adapter named {request.adapter!r} is loaded")
            if len(self._pending) + (self._running is not None) > self.options.max_queue:
                raise QueueFull(f"{len(self._pending)} requests are waiting: retry later")
            self._pending.append((request, adapter))
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for req, _ in self._pending:
                req.sink(Event(finish="abort"))
            self._pending.clear()
            if self._running is not None:
                self._running.cancel()
            self._cond.notify_all()
        self._worker.join(timeout=30)
        with self._ctx_lock:
            lc = self._lc
            if self._active is not None:
                self._use_adapter(None)
            for adapter in self._adapters.values():
                lc.llama_adapter_lora_free(adapter.handle)
            self._adapters.clear()
            lc.llama_batch_free(self._batch)
            self._llm.close()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if self._closed:
                    return
                req, adapter = self._pending.popleft()
                self._running = req
            try:
                with self._ctx_lock:
                    self._serve(req, adapter)
            finally:
                with self._cond:
                    self._running = None

    def _serve(self, req: Request, adapter: _Adapter | None) -> None:
        try:
            if adapter is not None and adapter.freed:
                raise NotFound(f"adapter {adapter.name!r} was unloaded")
            self._generate(req, adapter)
        except Exception as e:  # a bug, a failed decode or a failing sink: fail this request, keep serving
            self._drop_cache()  # it may hold half a prompt the list no longer describes
            err = e if isinstance(e, OwlError) else OwlError(f"generation failed: {type(e).__name__}: {e}")
            with contextlib.suppress(Exception):  # a failing sink: the client is gone, nothing to tell
                req.sink(Event(finish="error", error=err))

    # -- the model (worker thread, context lock held) ---------------------------------------------------
    def _generate(self, req: Request, adapter: _Adapter | None) -> None:
        lc, s, prompt = self._lc, req.sampling, req.prompt
        if req.cancelled.is_set():
            req.sink(Event(finish="abort"))
            return
        if len(prompt) > self._n_ctx:
            raise UsageError(
                f"the prompt has {len(prompt)} tokens, more than the context of {self._n_ctx} tokens"
            )
        self._use_adapter(adapter)
        if s.echo_logprobs:
            prompt_logprobs = self._eval_echo(req)
            if prompt_logprobs is None:
                req.sink(Event(finish="abort"))
                return
            req.sink(Event(prompt_logprobs=prompt_logprobs))
        elif not self._eval_prompt(req):
            req.sink(Event(finish="abort"))
            return
        room = self._n_ctx - len(prompt)  # the sequence may hold n_ctx tokens, the generated ones too
        if s.max_tokens == 0 or room <= 0:
            req.sink(Event(finish="length"))
            return
        sampler = self._sampler(s)
        try:
            made = 0
            while True:
                if req.cancelled.is_set():
                    req.sink(Event(finish="abort"))
                    return
                token = lc.llama_sampler_sample(sampler, self._llm.ctx, -1)
                if token in self._eos or lc.llama_vocab_is_eog(self._vocab, token):
                    req.sink(Event(finish="stop"))
                    return
                made += 1
                full = made >= s.max_tokens or made >= room
                lp = [self._last_logprob(token, s.logprobs)] if s.logprobs is not None else []
                req.sink(Event(tokens=[token], logprobs=lp, finish="length" if full else None))
                if full:
                    return
                self._decode([token], all_logits=False)
        finally:
            lc.llama_sampler_free(sampler)

    def _use_adapter(self, adapter: _Adapter | None) -> None:
        """Set ``adapter`` (None: the base) on the context; a change drops the KV cache."""
        if adapter is self._active:
            return
        lc = self._lc
        if adapter is None:
            rc = lc.llama_set_adapters_lora(self._llm.ctx, None, 0, None)
        else:
            handles = (lc.llama_adapter_lora_p_ctypes * 1)(adapter.handle)
            rc = lc.llama_set_adapters_lora(self._llm.ctx, handles, 1, (ctypes.c_float * 1)(1.0))
        if rc != 0:
            raise OwlError(f"llama.cpp could not switch to adapter {adapter.name if adapter else 'none'!r}")
        self._active = adapter
        self._drop_cache()  # its keys and values were computed with the other adapter

    def _drop_cache(self) -> None:
        self._lc.llama_memory_clear(self._mem, True)
        self._cached = []

    def _keep_cache(self, n: int) -> None:
        """Keep the first ``n`` cached positions, drop the rest."""
        if n < len(self._cached):
            if n == 0 or not self._lc.llama_memory_seq_rm(self._mem, -1, n, -1):
                self._drop_cache()
            else:
                del self._cached[n:]

    def _decode(self, tokens: list[int], *, all_logits: bool) -> None:
        """Append ``tokens`` to the sequence; logits are kept for the last one, or for all of them."""
        b, pos = self._batch, len(self._cached)
        b.n_tokens = len(tokens)
        for i, t in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos + i, 1, all_logits
            b.seq_id[i][0] = 0
        b.logits[len(tokens) - 1] = True
        rc = self._lc.llama_decode(self._llm.ctx, b)
        if rc != 0:
            raise OwlError(f"llama.cpp could not decode {len(tokens)} tokens at position {pos} (code {rc})")
        self._cached += tokens

    def _eval_prompt(self, req: Request) -> bool:
        """Evaluate the prompt after what the cache shares with it; False if cancelled meanwhile."""
        prompt = req.prompt
        shared = 0
        for a, b in zip(self._cached, prompt, strict=False):
            if a != b:
                break
            shared += 1
        self._keep_cache(min(shared, len(prompt) - 1))  # the last token runs again: its logits are needed
        for i in range(len(self._cached), len(prompt), self._chunk):
            if req.cancelled.is_set():
                return False
            self._decode(prompt[i : i + self._chunk], all_logits=False)
        return True

    def _eval_echo(self, req: Request) -> list[TokenLogprob | None] | None:
        """Evaluate the whole prompt keeping every position's logits: each prompt token's logprob given
        the ones before it (the first None); None if cancelled meanwhile."""
        prompt, k = req.prompt, req.sampling.logprobs
        self._keep_cache(0)
        out: list[TokenLogprob | None] = [None]
        step = min(ECHO_CHUNK, self._chunk)
        for i in range(0, len(prompt), step):
            if req.cancelled.is_set():
                return None
            chunk = prompt[i : i + step]
            self._decode(chunk, all_logits=True)
            rows = self._lc.llama_get_logits(self._llm.ctx)
            lps = _log_softmax(np.ctypeslib.as_array(rows, shape=(len(chunk), self._n_vocab)))
            nexts = prompt[i + 1 : i + step + 1]  # the token each position predicts
            out += [_token_logprob(lps[j], t, k) for j, t in enumerate(nexts)]
        return out

    def _last_logprob(self, token: int, k: int | None) -> TokenLogprob:
        logits = np.ctypeslib.as_array(
            self._lc.llama_get_logits_ith(self._llm.ctx, -1), shape=(self._n_vocab,)
        )
        return _token_logprob(_log_softmax(logits), token, k)

    def _sampler(self, s: Sampling) -> Any:
        """llama.cpp's sampler chain for ``s``: greedy at temperature 0, else temperature, then top-p
        (the order transformers and OpenAI apply them in), then a draw seeded with ``s.seed``."""
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if s.temperature == 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(s.temperature))
        if s.top_p < 1:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed % _RANDOM_SEEDS))
        return chain


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x -= x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _token_logprob(lp: np.ndarray, token: int, k: int | None) -> TokenLogprob:
    top: list[tuple[int, float]] = []
    if k:
        index = np.argpartition(lp, -k)[-k:]
        index = index[np.argsort(-lp[index], kind="stable")]
        top = [(int(i), float(lp[i])) for i in index]
    return TokenLogprob(int(token), float(lp[token]), top)

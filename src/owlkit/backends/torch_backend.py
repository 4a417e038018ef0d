"""The torch backend: a transformers model in memory, PEFT adapters sharing its weights, and a worker
thread that decodes the requests it is given in dynamic batches.

Batching: the worker takes the oldest waiting request and every other waiting request that may share
its batch (up to ``max_batch``), pre-fills their prompts together (left-padded, positions given
explicitly so padding does not shift them), then decodes one token per row per step with one KV cache.
A row leaves the batch as soon as it finishes or its client goes away (its cache rows are dropped, so
the slot is free at once). Between two steps, requests that arrived meanwhile join the running batch:
their prompts are pre-filled and their cache rows left-padded (masked out) to the batch's length, so a
client never waits for a whole batch to finish while a slot is free.

Adapters: the first adapter wraps the model in a ``PeftModel``; later ones are loaded into it
(``load_adapter``), so every adapter shares the base weights and adds only its own matrices. A batch may
mix LoRA adapters and the plain base: PEFT's ``adapter_names`` forward applies each row's adapter to its
rows only. PEFT refuses ``adapter_names`` for DoRA, so a DoRA request batches only with requests for the
same adapter, which is then made the active one.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from owlkit.backends.base import (
    AdapterFiles,
    Backend,
    BackendOptions,
    Event,
    QueueFull,
    Request,
    TokenLogprob,
)
from owlkit.errors import NotFound, OwlError, Refused, UsageError, with_article

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store

_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class _Row:
    req: Request
    generator: Any
    generated: int = 0
    done: bool = False


@dataclass
class _Batch:
    """Rows decoding together: one KV cache, left-padded to a common length, and the attention mask over
    it (0 on padding), each row's last position and the logits its next token is picked from."""

    rows: list[_Row]
    cache: Any
    mask: Any
    positions: Any  # [rows, 1]
    last: Any  # [rows, vocab]

    def select(self, keep: list[int]) -> None:
        """Keep only these rows; drop cache columns that are padding in every remaining row."""
        import torch

        if len(keep) == len(self.rows) or not keep:
            self.rows = [self.rows[i] for i in keep]
            return
        index = torch.tensor(keep)
        self.cache.batch_select_indices(index)
        self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]
        self.rows = [self.rows[i] for i in keep]
        unused = int((self.mask.sum(0) == 0).int().cumprod(0).sum())  # leading all-padding columns
        if unused:
            self.mask = self.mask[:, unused:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]

    def merge(self, other: _Batch) -> _Batch:
        """This batch and ``other`` as one: the shorter cache is left-padded (masked out) to the longer."""
        import torch

        width = max(self.mask.shape[1], other.mask.shape[1])

        def pad(t: Any, dim: int) -> Any:
            missing = width - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([torch.zeros(shape, dtype=t.dtype), t], dim=dim)

        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)])
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)])
        return _Batch(
            self.rows + other.rows,
            self.cache,
            torch.cat([pad(self.mask, 1), pad(other.mask, 1)]),
            torch.cat([self.positions, other.positions]),
            torch.cat([self.last, other.last]),
        )


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, store: Store, base: Record, options: BackendOptions) -> None:
        import torch

        from owlkit.recipes.loading import load_for_inference
        from owlkit.runtime.generate import eos_ids

        super().__init__(store, base, options)
        if base.manifest.kind != "model":
            raise Refused(
                f"{base.name} is {with_article(base.manifest.kind)}; serve a model and add adapters to it"
            )
        if options.threads:
            torch.set_num_threads(options.threads)
        model, tok, warnings = load_for_inference(store, base)
        self.warnings += warnings
        self.model, self.tokenizer = model.eval(), tok
        self._eos = eos_ids(model, tok)
        limit = getattr(model.config, "max_position_embeddings", None)
        self._context = int(limit) if isinstance(limit, int) and limit > 0 else 2048
        self._peft: Any = None  # the PeftModel, once an adapter is loaded
        self._dora: set[str] = set()
        self._templates: dict[str, str | None] = {}
        # token_text's context: a token to decode others behind, its text, and the special token ids
        self._anchor: tuple[list[int], str, frozenset[int]] | None = None
        self._pending: deque[Request] = deque()
        self._running: set[str | None] = set()  # adapters of the batch being decoded
        self._busy = 0  # rows in the running batch
        self._removing: set[str] = set()  # adapters being unloaded: no new requests for them
        self._cond = threading.Condition()  # guards the queue and the running set
        self._model_lock = threading.Lock()  # held while the model runs or its adapters change
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name=f"owl-torch-{base.name}", daemon=True)
        self._worker.start()

    # -- text ----------------------------------------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._context

    def encode(self, text: str, *, special: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_text(self, token: int) -> str:
        # Decoded behind another token, as it reads inside a text: a SentencePiece decoder strips the
        # leading space of a text's first token, which logprobs must keep (" The", as OpenAI reports it).
        if self._anchor is None:
            ids = self.encode("a", special=False)[-1:]
            self._anchor = (ids, self.decode(ids), frozenset(self.tokenizer.all_special_ids))
        anchor, prefix, special = self._anchor
        if token in special:  # decode() leaves these out; logprobs show them
            return str(self.tokenizer.convert_ids_to_tokens(token))
        full = self.decode([*anchor, token])
        return full[len(prefix) :] if full.startswith(prefix) else self.decode([token])

    def chat_template(self, adapter: str | None) -> tuple[str | None, dict[str, str]]:
        template = self._templates.get(adapter) if adapter else None
        template = template or getattr(self.tokenizer, "chat_template", None)
        if isinstance(template, dict):  # several named templates: chat uses the default one
            template = template.get("default")
        special = {k: v for k, v in self.tokenizer.special_tokens_map.items() if isinstance(v, str)}
        special.setdefault("bos_token", "")
        special.setdefault("eos_token", "")
        return template, special

    # -- adapters ------------------------------------------------------------------------------------
    def adapters(self) -> list[str]:
        return sorted(self._peft.peft_config) if self._peft is not None else []

    def add_adapter(self, name: str, adapter: AdapterFiles) -> None:
        from peft import PeftConfig, PeftModel

        if name == _BASE or name in self.adapters():
            raise UsageError(f"an adapter named {name!r} is already loaded: pick another name")
        folder = str(adapter.path)
        config = PeftConfig.from_pretrained(folder)
        with self._model_lock:  # between decode steps
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.model, folder, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
                )
                self._peft.eval()
            else:
                self._peft.load_adapter(folder, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True)
            if getattr(config, "use_dora", False):
                self._dora.add(name)
            self._templates[name] = adapter.chat_template

    def remove_adapter(self, name: str) -> None:
        with self._cond:
            if name not in self.adapters() or name in self._removing:
                raise NotFound(f"no adapter named {name!r} is loaded")
            self._removing.add(name)
            for req in [r for r in self._pending if r.adapter == name]:
                self._pending.remove(req)
                req.sink(Event(finish="error", error=NotFound(f"adapter {name!r} was unloaded")))
            try:
                self._cond.wait_for(lambda: name not in self._running)  # its running rows finish first
                with self._model_lock:
                    self._peft.delete_adapter(name)
                self._dora.discard(name)
                self._templates.pop(name, None)
            finally:
                self._removing.discard(name)

    # -- requests ------------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        request.sampling.check()
        if not request.prompt:
            raise UsageError("the prompt is empty after tokenization; give some text")
        vocab = self.model.config.vocab_size
        if any(not isinstance(t, int) or not 0 <= t < vocab for t in request.prompt):
            raise UsageError(f"a prompt token id is outside the vocabulary (0..{vocab - 1})")
        with self._cond:
            if self._closed:
                raise Refused("the backend is shut down")
            if request.adapter is not None and (
                request.adapter not in self.adapters() or request.adapter in self._removing
            ):
                raise NotFound(f"no adapter named {request.adapter!r} is loaded")
            free = max(0, self.options.max_batch - self._busy)  # slots the next step can fill
            if len(self._pending) >= self.options.max_queue + free:
                raise QueueFull(f"{len(self._pending)} requests are waiting: retry later")
            self._pending.append(request)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for req in self._pending:
                req.sink(Event(finish="abort"))
            self._pending.clear()
            self._cond.notify_all()
        self._worker.join(timeout=30)

    def _group(self, adapter: str | None) -> str:
        """Requests batch together when their groups are equal: DoRA adapters each alone."""
        return f"dora:{adapter}" if adapter in self._dora else "mixed"

    def _take_batch(self) -> list[Request]:
        """The oldest request and the waiting ones that may join it (called with the lock held)."""
        while True:
            while self._pending and self._pending[0].cancelled.is_set():
                self._pending.popleft().sink(Event(finish="abort"))
            if self._pending:
                break
            self._cond.wait()
            if self._closed:
                return []
        return self._joiners(self._group(self._pending[0].adapter), [])

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                batch = self._take_batch()
            if not batch:
                return
            try:
                self._decode(batch)
            except OwlError as e:
                for r in batch:
                    r.sink(Event(finish="error", error=e))
            except Exception as e:  # a bug or an out-of-memory: fail these requests, keep serving
                err = OwlError(f"generation failed: {type(e).__name__}: {e}")
                for r in batch:
                    r.sink(Event(finish="error", error=err))
            finally:
                with self._cond:
                    self._running, self._busy = set(), 0
                    self._cond.notify_all()

    # -- the model -----------------------------------------------------------------------------------
    def _forward(self, batch: list[Request], **kwargs: Any) -> Any:
        """One forward pass with each row's adapter applied (called with the model lock held)."""
        names = [r.adapter or _BASE for r in batch]
        if self._peft is None:
            return self.model(**kwargs)
        if all(n == _BASE for n in names):
            with self._peft.disable_adapter():
                return self._peft(**kwargs)
        if names[0] in self._dora:  # the whole batch is this one DoRA adapter (see _group)
            self._peft.set_adapter(names[0])
            return self._peft(**kwargs)
        return self._peft(adapter_names=names, **kwargs)

    def _joiners(self, group: str, rows: list[_Row]) -> list[Request]:
        """Waiting requests that may join the running ``rows`` of ``group``, filling the free slots (with no
        rows: a new batch). Takes the lock, which is re-entrant: _take_batch calls it holding it."""
        with self._cond:
            join = [r for r in self._pending if self._group(r.adapter) == group and not r.cancelled.is_set()]
            join = join[: max(0, self.options.max_batch - len(rows))]
            for r in join:
                self._pending.remove(r)
            self._running = {row.req.adapter for row in rows} | {r.adapter for r in join}
            self._busy = len(rows) + len(join)
            self._cond.notify_all()  # an unload may be waiting for an adapter that just left
        return join

    def _prefill(self, batch: list[Request]) -> _Batch:
        """Run the prompts of ``batch`` (left-padded) and report echo logprobs; the batch is ready to step."""
        import torch

        width = max(len(r.prompt) for r in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in batch])
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in batch])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        echo = any(r.sampling.echo_logprobs for r in batch)
        with self._model_lock:
            out = self._forward(
                batch,
                input_ids=ids,
                attention_mask=None if bool(mask.all()) else mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=0 if echo else 1,
            )
        for i, r in enumerate(batch):
            if r.sampling.echo_logprobs:
                n = len(r.prompt)
                r.sink(
                    Event(
                        prompt_logprobs=_prompt_logprobs(
                            out.logits[i, width - n :], r.prompt, r.sampling.logprobs
                        )
                    )
                )
        from owlkit.runtime.generate import seeded_generator

        rows = [_Row(r, seeded_generator(r.sampling.seed)) for r in batch]
        return _Batch(rows, out.cache, mask, positions[:, -1:], out.logits[:, -1])

    def _decode(self, batch: list[Request]) -> None:
        """Decode ``batch`` to the end, letting compatible requests that arrive meanwhile join it."""
        import torch

        group = self._group(batch[0].adapter)
        with torch.inference_mode():
            running = self._prefill(batch)
            while True:
                tokens = self._step(running.rows, running.last)
                keep = [i for i, row in enumerate(running.rows) if not row.done]
                running.select(keep)
                joined = self._joiners(group, running.rows)
                if keep:
                    running.mask = torch.cat(
                        [running.mask, torch.ones(len(keep), 1, dtype=running.mask.dtype)], 1
                    )
                    running.positions = running.positions + 1
                    with self._model_lock:
                        out = self._forward(
                            [row.req for row in running.rows],
                            input_ids=torch.tensor([tokens[i] for i in keep]).unsqueeze(1),
                            attention_mask=None if bool(running.mask.all()) else running.mask,
                            position_ids=running.positions,
                            cache=running.cache,
                            use_cache=True,
                        )
                    running.cache, running.last = out.cache, out.logits[:, -1]
                if joined:
                    new = self._prefill(joined)
                    running = running.merge(new) if keep else new
                elif not keep:
                    return

    def _step(self, rows: list[_Row], logits: Any) -> list[int]:
        """Pick each row's next token, report it, and mark finished rows; returns the picked tokens."""
        import torch

        from owlkit.runtime.generate import _next_token

        greedy = torch.argmax(logits, dim=-1).tolist()
        tokens: list[int] = []
        for i, row in enumerate(rows):
            s = row.req.sampling
            if row.req.cancelled.is_set() or self._closed:
                row.done = True
                row.req.sink(Event(finish="abort"))
                tokens.append(0)
                continue
            if s.max_tokens == 0 or len(row.req.prompt) >= self._context:
                row.done = True
                row.req.sink(Event(finish="length"))
                tokens.append(0)
                continue
            token = (
                greedy[i]
                if s.temperature == 0
                else _next_token(logits[i], s.temperature, s.top_p, row.generator)
            )
            tokens.append(token)
            if token in self._eos:
                row.done = True
                row.req.sink(Event(finish="stop"))
                continue
            row.generated += 1
            full = row.generated >= s.max_tokens or len(row.req.prompt) + row.generated >= self._context
            lp = [_token_logprob(logits[i], token, s.logprobs)] if s.logprobs is not None else []
            row.done = full
            row.req.sink(Event(tokens=[token], logprobs=lp, finish="length" if full else None))
        return tokens


def _token_logprob(logits: Any, token: int, k: int | None, lp: Any = None) -> TokenLogprob:
    import torch

    if lp is None:
        lp = torch.log_softmax(logits.float(), dim=-1)
    top: list[tuple[int, float]] = []
    if k:
        values, index = torch.topk(lp, k)
        top = list(zip(index.tolist(), values.tolist(), strict=True))
    return TokenLogprob(token, float(lp[token]), top)


def _prompt_logprobs(logits: Any, prompt: list[int], k: int | None) -> list[TokenLogprob | None]:
    """Each prompt token's logprob given the ones before it (``logits`` holds the prompt's positions)."""
    import torch

    lps = torch.log_softmax(logits[:-1].float(), dim=-1)
    return [None] + [_token_logprob(None, t, k, lps[j]) for j, t in enumerate(prompt[1:])]

"""Sampling helpers shared by the backends, and a direct streaming loop over a loaded model.

`owl run`, `owl chat` and `owl serve` generate through a backend (``owlkit.backends.base``, one
turn at a time in ``owlkit.backends.session``). What stays here: the EOS ids and the token sampler the
torch backend uses, the chat prompt of a bare tokenizer, and :func:`stream_generate`, a single-sequence
loop over an in-memory model (one forward per token with a KV cache, greedy at temperature 0, else
temperature + top-p from a seeded ``torch.Generator``) for code that holds a model but no store record
(tests of converted models compare against it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from owlkit.errors import UsageError
from owlkit.runtime.chat import render_chat


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """``prompt`` (and ``system``) rendered with the model's own chat template, in owlkit's sandbox."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates: the default one is what chat uses
        template = template.get("default")
    if not template:
        raise UsageError("this model has no chat template; drop --chat to send the prompt as plain text")
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": prompt}
    ]
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
    special.setdefault("bos_token", "")
    special.setdefault("eos_token", "")
    return render_chat(template, messages, add_generation_prompt=True, **special)


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def seeded_generator(seed: int | None, device: Any = "cpu") -> Any:
    """A torch.Generator seeded with ``seed`` (the same seed, the same samples), or randomly when None."""
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1)
    return generator


def _next_token(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    if temperature == 0:
        return int(torch.argmax(logits).item())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest set of most likely tokens whose mass reaches top_p (always at least one).
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator).item())


def stream_generate(
    model: Any,
    tokenizer: Any,
    prompt: str,
    *,
    chat: bool = False,
    system: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> Iterator[str]:
    """Yield the text of up to ``max_tokens`` new tokens as they are generated.

    ``chat=True`` wraps the prompt (and ``system``) in the model's chat template; then the rendered text
    already holds any BOS the template wants, so the tokenizer adds none. Otherwise the tokenizer adds
    its usual special tokens (``<s>`` for Llama-2-style vocabularies).
    """
    import torch

    from owlkit.runtime.stream import Sampling, TextStream

    Sampling(max_tokens, temperature, top_p, seed).check()
    if chat:
        text = chat_prompt(tokenizer, prompt, system)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        if system is not None:
            raise UsageError("a system prompt needs chat mode; add --chat or drop --system")
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if not prompt_ids:
        raise UsageError("the prompt is empty after tokenization; give some text")

    eos = eos_ids(model, tokenizer)
    limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and limit > 0:
        max_tokens = min(max_tokens, max(0, limit - len(prompt_ids)))
    generator = seeded_generator(seed, model.device)
    stream = TextStream(
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False),
        prompt_ids,
    )
    past = None
    step_ids = torch.tensor([prompt_ids], device=model.device)
    with torch.inference_mode():
        for _ in range(max_tokens):
            out = model(input_ids=step_ids, cache=past, use_cache=True)
            past = out.cache
            token = _next_token(out.logits[0, -1], temperature, top_p, generator)
            if token in eos:
                break
            step_ids = torch.tensor([[token]], device=model.device)
            piece = stream.push([token])
            if piece:
                yield piece
    tail = stream.flush()
    if tail:
        yield tail

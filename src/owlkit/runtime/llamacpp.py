"""A GGUF in llama.cpp (llama-cpp-python, the ``gguf`` extra): the runtime GGUF files are made for.

The chat template is the one inside the GGUF (``tokenizer.chat_template``), which llama-cpp-python renders
with a sandboxed Jinja2 environment, and generation stops on the file's end-of-turn token: what a user of
llama.cpp or Ollama gets from the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, MissingDependency, NotFound, missing_extra


def import_llama_cpp(what: str) -> Any:
    """The ``llama_cpp`` module, or MissingDependency naming the gguf extra and ``what`` needed it."""
    try:
        import llama_cpp
    except ImportError:
        raise missing_extra("llama_cpp", "gguf", what) from None
    return llama_cpp


def has_llama_cpp() -> bool:
    try:
        import_llama_cpp("")
    except MissingDependency:
        return False
    return True


def open_gguf(path: Path, *, n_ctx: int = 2048, seed: int | None = None, **options: Any) -> Any:
    """``llama_cpp.Llama`` for ``path`` (``options`` go to it, e.g. ``logits_all``); MissingDependency
    naming the extra, NotFound for a missing file, InvalidFile when llama.cpp will not load it."""
    llama_cpp = import_llama_cpp("running a GGUF in llama.cpp")
    path = Path(path)
    if not path.is_file():
        raise NotFound(f"{path}: no such GGUF file")
    kwargs: dict[str, Any] = {"n_ctx": n_ctx, "n_threads": os.cpu_count() or 2, "verbose": False, **options}
    if seed is not None:
        kwargs["seed"] = seed
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    except (ValueError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidFile(f"{path.name}: llama.cpp cannot load it ({first})") from None


def stream_llama(
    llm: Any,
    prompt: str,
    *,
    chat: bool,
    system: str | None = None,
    max_tokens: int = 128,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> Iterator[tuple[str, str | None]]:
    """(text piece, finish reason or None) as llama.cpp decodes; the last item carries the reason."""
    sampling = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p, "stream": True}
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        for chunk in llm.create_chat_completion(messages=messages, **sampling):
            choice = chunk["choices"][0]
            yield choice["delta"].get("content") or "", choice.get("finish_reason")
    else:
        for chunk in llm.create_completion(prompt, **sampling):
            choice = chunk["choices"][0]
            yield choice.get("text") or "", choice.get("finish_reason")

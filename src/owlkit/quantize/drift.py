"""Quality drift of a quantized model against its source, measured at quantization time.

The numbers are those llama.cpp's ``perplexity --kl-divergence`` reports: the perplexity of the source and
of the quantized model, the mean (and 99th percentile, and maximum) KL divergence of the quantized model's
next-token distribution from the source's, and how often both models' most likely next token agree.

This module runs the models; the arithmetic is :mod:`owlkit.metrics` (windows and perplexity as
transformers' ``labels=input_ids`` loss defines them, KL and top-1 agreement in
:mod:`owlkit.metrics.divergence`). Both models read the same token windows in lockstep, one window at a
time, so only one window's logits per model are ever alive (8,192 tokens of a 49,152-token vocabulary
would be 1.6 GB of float32 per model).

A model is scored by a :class:`Scorer`: :class:`TorchScorer` for a transformers model (the source, or a
GGUF's dequantized weights), :class:`LlamaCppScorer` for a GGUF file through llama.cpp. Two runtimes
compute differently (llama.cpp quantizes activations inside its matrix products), so a drift is measured
only between models scored by the same runtime, and the runtime is stored with the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from owlkit.errors import FileSystemError, InvalidFile, NotFound, Refused, UsageError
from owlkit.metrics.divergence import Drift, DriftMeter
from owlkit.metrics.perplexity import windows as eval_chunks

__all__ = [  # Drift and eval_chunks live in metrics; the drift report's callers import them from here
    "DEFAULT_CHUNK",
    "DEFAULT_EVAL_TOKENS",
    "Drift",
    "LlamaCppScorer",
    "Scorer",
    "TorchScorer",
    "default_eval_text",
    "eval_chunks",
    "measure_drift",
    "read_eval_text",
    "runtime_family",
    "tokenize_eval_text",
]

if TYPE_CHECKING:
    import numpy as np

DEFAULT_EVAL_TOKENS = 8192
DEFAULT_CHUNK = 512  # llama.cpp's perplexity default context
EVAL_TEXT = "eval_text.txt"


def default_eval_text() -> str:
    """The public-domain text shipped inside the package (see EVAL_TEXT_SOURCE.md)."""
    return resources.files("owlkit.quantize").joinpath(EVAL_TEXT).read_text(encoding="utf-8")


def read_eval_text(path: Path) -> str:
    """The text of ``--eval-text FILE``, UTF-8 with newlines normalised to ``\\n``."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(
            f"{path}: no such evaluation text file; pass an existing file to --eval-text"
        ) from None
    except OSError as e:
        raise FileSystemError(
            f"{path}: cannot read the evaluation text ({e.strerror}); check --eval-text"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidFile(
            f"{path}: not UTF-8 text (byte {e.start}); convert it to UTF-8 for --eval-text"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def tokenize_eval_text(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` with a transformers tokenizer, no special tokens added: the windows are plain
    running text, the same ids for every model compared."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class Scorer(Protocol):
    """Something that gives one model's next-token logits for a window of token ids."""

    runtime: str
    """Engine and version, e.g. "torch 2.13.0+cpu" or "llama.cpp (llama-cpp-python 0.3.36)"."""

    def logits(self, ids: list[int]) -> np.ndarray:
        """float32 ``[len(ids), vocab]``: row i is the distribution after ids[0..i], in a fresh context."""
        ...


def runtime_family(runtime: str) -> str:
    """The engine of a runtime string without its version: "torch", "llama.cpp"."""
    return runtime.split(" ", 1)[0]


class TorchScorer:
    """A transformers causal LM, one forward pass per window, in eval mode and without gradients."""

    def __init__(self, model: Any) -> None:
        import torch

        self.model = model.eval()
        self.runtime = f"torch {torch.__version__}"

    def logits(self, ids: list[int]) -> np.ndarray:
        import torch

        device = getattr(self.model, "device", torch.device("cpu"))
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=device)
            out = self.model(input_ids=x, use_cache=False).logits[0]
            return out.float().cpu().numpy()


class LlamaCppScorer:
    """A GGUF file run by llama.cpp (llama-cpp-python), all logits of a window kept (``logits_all``)."""

    def __init__(self, gguf_path: Path | str, n_ctx: int = DEFAULT_CHUNK) -> None:
        from owlkit.runtime.llamacpp import import_llama_cpp, open_gguf

        llama_cpp = import_llama_cpp("scoring a GGUF with llama.cpp")
        self.path = Path(gguf_path)
        self.n_ctx = n_ctx
        self.runtime = f"llama.cpp (llama-cpp-python {llama_cpp.__version__})"
        # one decode call per window, every position's logits kept
        self._llm: Any = open_gguf(self.path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` with the GGUF's own vocabulary, no BOS or special tokens added."""
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def logits(self, ids: list[int]) -> np.ndarray:
        import numpy as np

        if len(ids) > self.n_ctx:
            raise UsageError(f"{self.path.name}: a window of {len(ids)} tokens exceeds n_ctx={self.n_ctx}")
        llm = self._llm
        llm.reset()  # a fresh context: reset() rewinds, eval() then drops the old KV cache entries
        llm.eval(ids)
        # scores is llama-cpp-python's reusable buffer: copy the rows before the next window overwrites them.
        return np.array(llm.scores[: len(ids)], dtype=np.float32, copy=True)

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()

    def __enter__(self) -> LlamaCppScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _window_logits(scorer: Scorer, ids: list[int], name: str) -> np.ndarray:
    import numpy as np

    out = scorer.logits(ids)
    if out.ndim != 2 or out.shape[0] != len(ids):
        raise InvalidFile(f"{name}: {out.shape} logits for a window of {len(ids)} tokens")
    if np.isnan(out).any():
        raise InvalidFile(
            f"{name}: the model gives NaN logits on the evaluation text; its weights are broken"
        )
    return out


def measure_drift(
    source: Scorer,
    targets: Mapping[str, Scorer],
    chunks: Sequence[Sequence[int]],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Drift]:
    """Score ``source`` and every target on the same windows in lockstep; one :class:`Drift` per target.

    ``progress(done, total)`` is called after each window. Refused when a target runs on another runtime
    than the source (llama.cpp against torch measures the runtimes, not the quantization) or has another
    vocabulary size.
    """
    if not chunks:
        raise UsageError("no evaluation windows: pass a longer --eval-text")
    if not targets:
        raise UsageError("no quantized model to compare with the source")
    family = runtime_family(source.runtime)
    for name, target in targets.items():
        if runtime_family(target.runtime) != family:
            raise Refused(
                f"{name}: scored with {target.runtime} but the source with {source.runtime}; "
                "only like is compared with like: score both with the same runtime"
            )
    meter = DriftMeter(targets)
    for done, window in enumerate(chunks, 1):
        ids = [int(i) for i in window]
        if len(ids) < 2:
            raise UsageError(f"evaluation window {done} has {len(ids)} token(s); at least 2 are needed")
        # temporaries: only this window's logits are alive while it is scored
        meter.add(
            ids,
            _window_logits(source, ids, "source"),
            {name: _window_logits(t, ids, name) for name, t in targets.items()},
        )
        if progress is not None:
            progress(done, len(chunks))
    return meter.results({name: t.runtime for name, t in targets.items()})

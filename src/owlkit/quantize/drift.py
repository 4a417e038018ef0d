"""Quality drift of a quantized model against its source, measured at quantization time.

The numbers are those llama.cpp's ``perplexity --kl-divergence`` reports: the perplexity of the source and
of the quantized model, the mean (and 99th percentile, and maximum) KL divergence of the quantized model's
next-token distribution from the source's, and how often both models' most likely next token agree.

Both models read the same token windows in lockstep, one window at a time, so only one window's logits
per model are ever alive (8,192 tokens of a 49,152-token vocabulary would be 1.6 GB of float32 per model);
the float64 arithmetic runs on blocks of rows of that window. Each window is a fresh context with nothing
added (no BOS), and every position but the last is scored against the next token: exactly the positions
transformers' ``labels=input_ids`` loss averages, so owlkit's perplexity is ``exp`` of that loss.
(llama.cpp's own perplexity tool scores only the second half of each window; our numbers follow
transformers instead, and compare like with like because both models are scored the same way.)

A model is scored by a :class:`Scorer`: :class:`TorchScorer` for a transformers model (the source, or a
GGUF's dequantized weights), :class:`LlamaCppScorer` for a GGUF file through llama.cpp. Two runtimes
compute differently (llama.cpp quantizes activations inside its matrix products), so a drift is measured
only between models scored by the same runtime, and the runtime is stored with the numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from owlkit.errors import FileSystemError, InvalidFile, NotFound, Refused, UsageError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_EVAL_TOKENS = 8192
DEFAULT_CHUNK = 512  # llama.cpp's perplexity default context
EVAL_TEXT = "eval_text.txt"
# Rows of a window turned into float64 log-probabilities at a time: 64 x 49,152 x 8 bytes = 25 MB each.
_ROWS = 64


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


def eval_chunks(token_ids: Sequence[int], chunk: int, limit: int = DEFAULT_EVAL_TOKENS) -> list[list[int]]:
    """Consecutive non-overlapping windows of ``chunk`` tokens, at most ``limit`` tokens in all.

    A short tail is dropped, so every window has the same length (the mean of the windows' mean losses
    is then the mean over all positions); a text shorter than one window gives one shorter window.
    """
    if chunk < 2:
        raise UsageError(f"evaluation window of {chunk} tokens: a window needs at least 2 tokens")
    if limit < 2:
        raise UsageError(f"--eval-tokens {limit}: at least 2 tokens are needed to score one prediction")
    n = min(len(token_ids), limit)
    if n < 2:
        raise UsageError(
            f"the evaluation text has {len(token_ids)} token(s); at least 2 are needed: "
            "pass a longer --eval-text"
        )
    ids = [int(i) for i in token_ids[:n]]
    if n < chunk:
        return [ids]
    return [ids[i : i + chunk] for i in range(0, n - chunk + 1, chunk)]


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


@dataclass(frozen=True)
class Drift:
    """One target model's drift from the source over the same evaluation windows."""

    runtime: str
    tokens: int
    """Scored positions: each window's length minus one, summed."""
    chunks: int
    chunk_size: int
    ppl_source: float
    ppl: float
    ppl_ratio: float
    kl_mean: float
    """Mean over positions of KL(source || target) in nats."""
    kl_p99: float
    kl_max: float
    top1: float
    """Fraction (0..1) of positions where both models' most likely next token is the same."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tally:
    """Running sums for one target, in float64."""

    def __init__(self) -> None:
        self.nll = 0.0
        self.agree = 0
        self.kl: list[np.ndarray] = []


def _log_softmax(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = x.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def _exp(x: float) -> float:
    """exp that gives inf where a hopeless model's mean loss would overflow, rather than raising."""
    return math.exp(x) if x < 709.0 else math.inf


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
    import numpy as np

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
    tallies = {name: _Tally() for name in targets}
    nll_source = 0.0
    positions = 0
    for done, window in enumerate(chunks, 1):
        ids = [int(i) for i in window]
        if len(ids) < 2:
            raise UsageError(f"evaluation window {done} has {len(ids)} token(s); at least 2 are needed")
        labels = np.asarray(ids[1:], dtype=np.int64)
        n = len(labels)  # the last position has no next token to score
        src = _window_logits(source, ids, "source")
        vocab = src.shape[1]
        bad = labels[(labels < 0) | (labels >= vocab)]
        if bad.size:
            raise UsageError(
                f"token id {int(bad[0])} is outside the source's vocabulary of {vocab}: "
                "tokenize the text with the source model's tokenizer"
            )
        outs: dict[str, np.ndarray] = {}
        for name, target in targets.items():
            out = _window_logits(target, ids, name)
            if out.shape[1] != vocab:
                raise Refused(
                    f"{name}: vocabulary of {out.shape[1]} tokens, the source has {vocab}; "
                    "drift needs the same tokenizer on both"
                )
            outs[name] = out
        rows = np.arange(min(_ROWS, n))
        for a in range(0, n, _ROWS):
            b = min(a + _ROWS, n)
            r, lab = rows[: b - a], labels[a:b]
            lp_src = _log_softmax(src[a:b])
            p_src = np.exp(lp_src)
            nll_source -= float(lp_src[r, lab].sum())
            top_src = src[a:b].argmax(axis=1)
            for name, out in outs.items():
                t = tallies[name]
                lp = _log_softmax(out[a:b])
                t.nll -= float(lp[r, lab].sum())
                t.kl.append((p_src * (lp_src - lp)).sum(axis=1))
                t.agree += int((out[a:b].argmax(axis=1) == top_src).sum())
        positions += n
        del src, outs  # the next window's logits replace these
        if progress is not None:
            progress(done, len(chunks))
    ppl_source = _exp(nll_source / positions)
    result: dict[str, Drift] = {}
    for name, t in tallies.items():
        kl = np.concatenate(t.kl)
        ppl = _exp(t.nll / positions)
        result[name] = Drift(
            runtime=targets[name].runtime,
            tokens=positions,
            chunks=len(chunks),
            chunk_size=max(len(c) for c in chunks),
            ppl_source=ppl_source,
            ppl=ppl,
            ppl_ratio=ppl / ppl_source,
            kl_mean=float(kl.mean()),
            kl_p99=float(np.percentile(kl, 99)),
            kl_max=float(kl.max()),
            top1=t.agree / positions,
        )
    return result

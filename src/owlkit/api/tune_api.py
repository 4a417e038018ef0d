"""The commands that make weights and data: tune, data demo, merge, merge-adapters, quantize.

Each calls its recipe (``owlkit.recipes``) on the store and returns what it stored. Long work reports
`ProgressEvent`s: training as ``stage="training"`` in ``unit="steps"`` with ``info={"loss": ...,
"tokens_per_s": ...}`` (and ``eval_loss`` on the steps that evaluate); quantize per export (bytes) and
scoring (windows, as items), and its status lines as events whose ``info`` holds a ``message`` (their
stage is the message itself, so a plain bar renderer still shows something sensible).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.api.base import ApiBase, Input, input_str
from owlkit.api.progress import Progress, ProgressEvent, counter
from owlkit.api.results import Stored
from owlkit.api.tune_results import DemoDataResult, DriftReport, QuantizedVariant, TuneResult
from owlkit.errors import UsageError

if TYPE_CHECKING:
    from owlkit.recipes.quantize import Bar


class TuneApi(ApiBase):
    def data_demo(
        self, *, train: int = 1000, heldout: int = 200, seed: int = 0, name: str | None = None
    ) -> DemoDataResult:
        """Generate and store the demo task data (reverse a list of 3 to 5 common English words) as
        Alpaca rows, ``train`` and ``heldout`` of them, from ``seed``: the same options give the same
        digest. Stored as ``name`` (default: demo-data), CC0-1.0."""
        from owlkit.recipes.demo_data import DemoDataParams, demo_data

        params = DemoDataParams(train=train, heldout=heldout, seed=seed)
        with self._store(write=True) as store:
            digest = demo_data(store, params, name=name)
            return DemoDataResult(
                digest, list(store.get(digest).tags), params.train, params.heldout, params.seed
            )

    def tune(
        self,
        base: Input,
        data: Input,
        *,
        config: str | Path | None = None,
        method: str | None = None,
        r: int | None = None,
        alpha: float | None = None,
        dropout: float | None = None,
        targets: str | Sequence[str] | None = None,
        rslora: bool | None = None,
        lr: float | None = None,
        warmup: int | None = None,
        schedule: str | None = None,
        epochs: int | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        grad_accum: int | None = None,
        seq_len: int | None = None,
        packing: bool | None = None,
        grad_checkpointing: bool | None = None,
        eval_split: float | None = None,
        eval_every: int | None = None,
        save_every: int | None = None,
        template: str | None = None,
        seed: int | None = None,
        nproc: int | None = None,
        max_grad_norm: float | None = None,
        weight_decay: float | None = None,
        name: str | None = None,
        resume: bool = False,
        progress: Progress | None = None,
    ) -> TuneResult | None:
        """Train an adapter (``method`` lora, dora, qlora) or a full fine-tune of the HF model ``base``
        on the instruction dataset ``data`` (alpaca, sharegpt or openai-messages rows) and store it with
        its recipe, as ``name`` (default: BASE-METHOD). Either may be a path, imported first.

        The params are those of ``config`` (a YAML file of `TuneParams` keys; the defaults without one)
        with every keyword that is not None in place of its key, exactly as ``owl tune --config``
        merges its flags; ``targets`` takes "all-linear", module names, or "q_proj,v_proj". Under
        torchrun, ``nproc`` defaults to its WORLD_SIZE and every rank calls this: rank 0 stores the
        artifact and returns its `TuneResult`, every other rank returns None. ``resume`` continues
        from the last ``save_every`` checkpoint of the same inputs and params."""
        from owlkit.adapt.ddp import launched_rank, launched_world
        from owlkit.adapt.params import TuneParams
        from owlkit.recipes.tune import tune

        if nproc is None and launched_world() > 1:  # one rank of a torchrun group: train as that group
            nproc = launched_world()
        params = TuneParams.merged(
            Path(config) if config is not None else None,
            method=method, r=r, alpha=alpha, dropout=dropout,
            targets=targets if targets is None or isinstance(targets, str) else list(targets),
            rslora=rslora, lr=lr, warmup=warmup, schedule=schedule, epochs=epochs, steps=steps,
            batch_size=batch_size, grad_accum=grad_accum, seq_len=seq_len, packing=packing,
            grad_checkpointing=grad_checkpointing, eval_split=eval_split, eval_every=eval_every,
            save_every=save_every, template=template, seed=seed, nproc=nproc,
            max_grad_norm=max_grad_norm, weight_decay=weight_decay,
        )  # fmt: skip
        if progress is not None and launched_rank() == 0:
            progress(ProgressEvent("training", 0, params.steps, "steps"))
        with self._store(write=True) as store:
            digest = tune(
                store,
                input_str(base),
                input_str(data),
                params,
                name=name,
                resume=resume,
                progress=_training_steps(progress),
            )
            if not digest:  # a torchrun rank other than 0: rank 0 stores and reports
                return None
            rec = store.get(digest)
            return TuneResult(digest, list(rec.tags), rec.info.training)

    def merge(
        self,
        base: Input,
        adapter: Input,
        *,
        dtype: str = "float32",
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Stored:
        """Merge a LoRA/DoRA adapter into its full-precision HF base (`convert` a GGUF base first),
        computing in ``dtype`` (float32 or bfloat16); stored as ``name`` (default: BASE-ADAPTER-merged)
        with ``merged_from`` edges to both. Refused for an adapter of another base."""
        from owlkit.recipes.merge import MergeParams, merge

        params = MergeParams(dtype=dtype)
        a, b = input_str(adapter), input_str(base)
        with self._store(write=True) as store, _one_step(progress, f"merging {a} into {b} ({dtype})"):
            return self._stored(store, merge(store, b, a, params, name=name))

    def merge_adapters(
        self,
        adapters: Sequence[Input],
        *,
        weights: Sequence[float],
        method: str,
        density: float | None = None,
        svd_rank: int | None = None,
        seed: int = 0,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Stored:
        """Combine two or more LoRA adapters of one base into one adapter with PEFT's
        add_weighted_adapter: one weight per adapter, ``method`` linear (equal ranks), svd (rank
        ``svd_rank``, default the largest input's), ties or dare_ties (keeping ``density`` of the values,
        dare_ties' masks drawn from ``seed``). Stored as ``name`` (default: FIRST-METHOD) with
        ``adapter_of`` and ``merged_from`` edges."""
        from owlkit.recipes.merge_adapters import MergeAdaptersParams, merge_adapters

        params = MergeAdaptersParams(
            weights=[float(w) for w in weights], method=method, density=density, svd_rank=svd_rank, seed=seed
        )
        if len(params.weights) != len(adapters):
            raise UsageError(
                f"{len(params.weights)} weights for {len(adapters)} adapters: give one weight per adapter"
            )
        refs = [input_str(a) for a in adapters]
        with (
            self._store(write=True) as store,
            _one_step(progress, f"combining {len(refs)} adapters ({method})"),
        ):
            return self._stored(store, merge_adapters(store, refs, params, name=name))

    def quantize(
        self,
        ref: Input,
        to: str | Sequence[str],
        *,
        name: str | None = None,
        eval_tokens: int | None = None,
        eval_text: str | Path | None = None,
        evaluate: bool = True,
        max_ppl_increase: float | None = None,
        from_dequantized: bool = False,
        progress: Progress | None = None,
    ) -> DriftReport:
        """Quantize a stored model to each target in ``to`` (gguf-f32, gguf-f16, gguf-q8_0, gguf-q4_0,
        gguf-q4_1, gguf-q4_k_m, gguf-q5_k_m, gguf-q6_k, bnb-nf4, bnb-int8; or an adapter to gguf-lora),
        each stored with a ``quantized_from`` edge, and measure each one's drift from the source
        (perplexity, KL, top-1 agreement) on ``eval_tokens`` tokens (default 8192) of ``eval_text``
        (default: a public-domain text shipped with owlkit), the source scored once. ``evaluate=False``
        skips the measurement; ``max_ppl_increase`` (a fraction, 0.05 for 5%) stores nothing when a
        variant's perplexity rises more. A quantized source is refused unless ``from_dequantized``.
        ``name`` names the result of a single target (default: MODEL-TYPE)."""
        from owlkit.recipes.quantize import EvalSettings, iter_targets, quantize

        targets = list(iter_targets([to] if isinstance(to, str) else list(to)))
        if name and len(targets) > 1:
            raise UsageError("--name names one result; with several --to, the names are MODEL-TYPE")
        evaluation = EvalSettings(
            enabled=evaluate,
            text=Path(eval_text) if eval_text is not None else None,
            max_ppl_increase=max_ppl_increase,
        )
        if eval_tokens is not None:
            evaluation.tokens = eval_tokens
        with self._store(write=True) as store:
            outputs = quantize(
                store,
                input_str(ref),
                targets,
                from_dequantized=from_dequantized,
                evaluation=evaluation,
                names={t: name for t in targets[:1]} if name else None,  # no target: the recipe says so
                bar=_bars(progress),
                say=_messages(progress),
            )
            return DriftReport(
                [
                    QuantizedVariant(
                        o.target, o.digest, store.get(o.digest).name, o.export, o.quality, o.notes
                    )
                    for o in outputs
                ]
            )


def _training_steps(progress: Progress | None) -> Callable[[dict[str, Any]], None] | None:
    """The training loop's per-step callback (a log entry with total_steps and tokens_per_s) as events."""
    if progress is None:
        return None

    def on_step(entry: dict[str, Any]) -> None:
        info = {"loss": entry["loss"], "tokens_per_s": entry.get("tokens_per_s", 0.0)}
        if entry.get("eval_loss") is not None:
            info["eval_loss"] = entry["eval_loss"]
        progress(ProgressEvent("training", entry["step"], entry.get("total_steps"), "steps", info))

    return on_step


@contextmanager
def _one_step(progress: Progress | None, stage: str) -> Iterator[None]:
    """Work with no finer measure than started and done (a merge): one event at each end."""
    if progress is not None:
        progress(ProgressEvent(stage, 0, None))
    yield
    if progress is not None:
        progress(ProgressEvent(stage, 1, 1))


def _bars(progress: Progress | None) -> Bar:
    """The quantize recipe's ``bar(description, total, unit)`` contexts as events (its "windows" are
    counted as items)."""

    @contextmanager
    def bar(description: str, total: int, unit: str) -> Iterator[Callable[[int], None] | None]:
        yield counter(progress, description, total, "bytes" if unit == "bytes" else "items")

    return bar


def _messages(progress: Progress | None) -> Callable[[str], None]:
    """The quantize recipe's status lines ("writing X (gguf-q8_0)", "scoring ...") as events."""

    def say(message: str) -> None:
        if progress is not None:
            progress(ProgressEvent(message, 0, None, info={"message": message}))

    return say

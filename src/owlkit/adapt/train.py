"""The ``owl tune`` recipe: LoRA, DoRA, QLoRA or full fine-tuning of a transformers causal LM, at the path level.

One module, ``setup`` -> ``train`` -> ``save`` (shared/docs/style-anchors.md, patterns 1-5): the params
are a dataclass checked before any weight is touched, the loop is plain PyTorch on about one screen, and
checkpoints are safetensors plus a JSON state, so an interrupted run resumes to the same adapter, bit
for bit, on the same machine with the same thread count.

Packed batches pass ``position_ids`` (restarting at each example, for the rotary embeddings), the 4D
block-causal mask (so attention never crosses examples) and ``use_cache=False`` (transformers 5 creates
a cache in training mode otherwise, and a cache ignores position-id restarts).

QLoRA loads the base through bitsandbytes in 4-bit NF4 with double quantization, each weight quantized as
it loads (the full-precision model never sits in memory whole), computes in float32 (bitsandbytes >= 0.46
runs NF4 forward and backward on CPU), then adds LoRA as for ``lora``. The adapter is a plain PEFT LoRA
adapter that also applies to the full-precision base (its deltas were learnt against the NF4 weights, so
logits there differ by the quantization error). Paged optimizers are CUDA only; on CPU this is plain AdamW.

Data order: the eval split is the head of ``epoch_order(n, seed, 0)``; training epoch ``e`` (from 1)
visits the remaining examples in ``epoch_order(n_train, seed, e)``. Everything downstream of the order
(packing, batching, accumulation) is deterministic, so resuming just skips the micro-batches already
used.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.adapt.data import (
    IGNORE,
    Encoded,
    block_causal_mask,
    encode_all,
    epoch_order,
    load_examples,
    pack,
    pad_batch,
)
from owlkit.adapt.loss import loss_sum
from owlkit.adapt.memory import bound_heap_retention
from owlkit.adapt.nf4 import load_nf4_causal_lm
from owlkit.adapt.params import TrainResult, TuneParams
from owlkit.errors import InvalidFile, UsageError, missing_extra
from owlkit.runtime.load import load_causal_lm, load_tokenizer

if TYPE_CHECKING:
    import torch

    from owlkit.adapt.ddp import Group

# Params that may change between a run and its resume: they decide how long to go and what to record,
# not the steps already taken (a new length does reshape the remaining learning-rate schedule, so only an
# unchanged one resumes bit for bit).
_RESUMABLE_CHANGES = {"steps", "epochs", "eval_every", "save_every"}


# ---------------------------------------------------------------- setup


def get_lr(step: int, total: int, params: TuneParams) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then decay to 0 at ``total``."""
    if step < params.warmup:
        return params.lr * (step + 1) / (params.warmup + 1)
    if params.schedule == "constant" or total <= params.warmup:
        return params.lr
    ratio = min(1.0, (step - params.warmup) / (total - params.warmup))
    coeff = 0.5 * (1 + math.cos(math.pi * ratio)) if params.schedule == "cosine" else 1 - ratio
    return params.lr * coeff


def _load(base_dir: Path, params: TuneParams) -> tuple[Any, Any]:
    """The base to train and its tokenizer, loaded as every owlkit load is (runtime/load: no remote
    code, no Hub, safetensors only, refused with numbers when it would not fit in memory)."""
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "ml", "owl tune") from None
    torch.manual_seed(params.seed)
    checkpointing = {"use_reentrant": False}  # non-reentrant: inputs need not require grad
    if params.method == "qlora":
        try:
            from peft import prepare_model_for_kbit_training
        except ImportError:
            raise missing_extra("peft", "ml", "owl tune --method qlora") from None
        # Streams the weights: each linear weight quantized as it is read (see nf4.py).
        model, tokenizer = load_nf4_causal_lm(base_dir, compute_dtype=torch.float32), load_tokenizer(base_dir)
        # Freezes every base weight and upcasts only fp16/bf16 ones (none here: the base loads in fp32),
        # so it changes no number; checkpointing only when asked (its default is on).
        # The checkpointing kwargs go by position: peft 0.22 renamed that argument (from
        # gradient_checkpointing_kwargs to activation_checkpointing_kwargs) and warns on the old name.
        model = prepare_model_for_kbit_training(model, params.grad_checkpointing, checkpointing)
    else:
        model, tokenizer = load_causal_lm(base_dir, dtype="float32")
        if params.grad_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpointing)
    if params.method == "full":
        model.requires_grad_(True)
        return model, tokenizer
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise missing_extra("peft", "ml", f"owl tune --method {params.method}") from None
    config = LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=params.targets,
        use_rslora=params.rslora,
        use_dora=params.method == "dora",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(params.seed)  # LoRA A init
    return get_peft_model(model, config), tokenizer


def pad_token_id(tokenizer: Any) -> int:
    """The id that fills padding: the tokenizer's pad token, else EOS (never trained or attended to)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def _micro_batches(examples: list[Encoded], params: TuneParams, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Examples, in the order given, as micro-batches of tensors for the model."""
    import torch

    out = []
    if params.packing:
        seqs = pack(examples, params.seq_len, pad_id)
        for i in range(0, len(seqs), params.batch_size):
            chunk = seqs[i : i + params.batch_size]
            out.append(
                {
                    "input_ids": torch.tensor([s.input_ids for s in chunk]),
                    "labels": torch.tensor([s.labels for s in chunk]),
                    "position_ids": torch.tensor([s.position_ids for s in chunk]),
                    "attention_mask": torch.stack(
                        [block_causal_mask(s.seg_lengths, params.seq_len) for s in chunk]
                    )[:, None],
                    "n_tokens": torch.tensor(sum(s.real_tokens for s in chunk)),
                }
            )
    else:
        for i in range(0, len(examples), params.batch_size):
            batch = pad_batch(examples[i : i + params.batch_size], pad_id)
            out.append({**batch, "n_tokens": batch["attention_mask"].sum()})
    return out


def _eval_loss(
    model: Any, batches: list[dict[str, torch.Tensor]], group: Group | None = None
) -> float | None:
    """Mean eval loss per label; with a group, each rank evaluates its slice and the sums are added up."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            loss, n = loss_sum(model, group.shard(batch) if group else batch)
            total, count = total + float(loss), count + n
    model.train()
    if group is not None:
        total, summed = group.all_sum([total, float(count)])
        count = round(summed)
    return total / count if count else None


# ---------------------------------------------------------------- checkpoints


def _trainable(model: Any) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(work_dir: Path, model: Any, optimizer: Any, state: dict) -> None:
    import torch
    from safetensors.torch import save_file

    final = work_dir / f"ckpt-{state['step']:08d}"
    tmp = work_dir / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {n: p.detach().contiguous().clone() for n, p in _trainable(model).items()},
        tmp / "weights.safetensors",
    )
    opt = optimizer.state_dict()
    tensors = {"rng.torch": torch.get_rng_state()}
    for idx, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"opt.{idx}.{key}"] = value.detach().contiguous().clone()
    save_file(tensors, tmp / "state.safetensors")
    meta = {**state, "param_groups": opt["param_groups"]}
    (tmp / "state.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)


def _last_checkpoint(work_dir: Path) -> Path | None:
    found = sorted(p for p in work_dir.glob("ckpt-*") if (p / "state.json").is_file())
    return found[-1] if found else None


def _load_checkpoint(ckpt: Path, model: Any, optimizer: Any, params: TuneParams) -> dict:
    import torch
    from safetensors.torch import load_file

    meta = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    defaults = TuneParams().as_dict()  # params added since the checkpoint was written had these values
    changed = sorted(
        k
        for k, v in params.as_dict().items()
        if k not in _RESUMABLE_CHANGES and meta["params"].get(k, defaults[k]) != v
    )
    if changed:
        raise UsageError(
            f"{ckpt.name}: resume with changed params {', '.join(changed)}; use the "
            "original values or start without --resume"
        )
    weights = load_file(ckpt / "weights.safetensors")
    own = _trainable(model)
    if set(weights) != set(own) or any(weights[n].shape != own[n].shape for n in own):
        raise InvalidFile(f"{ckpt.name}: its weights do not match this model; start without --resume")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(weights[name])
    tensors = load_file(ckpt / "state.safetensors")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, slot = key.split(".", 2)
            state.setdefault(int(idx), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return meta


# ---------------------------------------------------------------- train


def train(
    base_dir: Path,
    data_path: Path,
    data_format: str,
    params: TuneParams,
    out_dir: Path,
    *,
    work_dir: Path,
    base_ref: str = "",
    resume: bool = False,
    progress: Callable[[dict], None] | None = None,
    _stop_after: int | None = None,
) -> TrainResult:
    """Tune the HF folder ``base_dir`` on ``data_path`` and write the result to ``out_dir``: a PEFT adapter
    (lora/dora/qlora; ``base_model_name_or_path`` set to ``base_ref``) or a full HF folder (full).

    ``work_dir`` holds checkpoints; ``resume`` continues from the last one. ``_stop_after`` ends the run
    after that many steps without writing ``out_dir`` (tests use it to simulate an interruption).

    With ``params.nproc`` > 1 the run is data-parallel (ddp.py): started here as that many processes,
    or, when this process is already one rank of a group (torchrun), joining it. Only rank 0 writes
    ``out_dir`` and checkpoints; the other ranks return their result without writing.

    Raises UsageError (bad params or data format), InvalidFile (no usable rows), NotFound."""
    from owlkit.adapt import ddp

    base_dir, out_dir, work_dir = Path(base_dir), Path(out_dir), Path(work_dir)
    bound_heap_retention(params.method)  # qlora: freed tensors go back to the system (memory.py)
    # Validate the data before loading weights.
    convs, report = load_examples(Path(data_path), data_format, split="train")
    if params.nproc > 1 and ddp.launched_world() == 1:
        return ddp.launch(
            base_dir, Path(data_path), data_format, params, out_dir, work_dir=work_dir, base_ref=base_ref,
            resume=resume, progress=progress, _stop_after=_stop_after,
        )  # fmt: skip
    group = ddp.join(params)
    try:
        return _train(
            group, convs, report, base_dir, data_path, params, out_dir, work_dir, base_ref, resume, progress,
            _stop_after,
        )  # fmt: skip
    finally:
        if group is not None:
            group.close()


def _train(
    group: Group | None,
    convs: Any,
    report: Any,
    base_dir: Path,
    data_path: Path,
    params: TuneParams,
    out_dir: Path,
    work_dir: Path,
    base_ref: str,
    resume: bool,
    progress: Callable[[dict], None] | None,
    _stop_after: int | None,
) -> TrainResult:
    import torch

    main = group is None or group.is_main
    model, tokenizer = _load(base_dir, params)
    if group is not None and group.device.type != "cpu":
        model.to(group.device)
    template = None if params.template == "alpaca" else (params.template or tokenizer.chat_template)
    examples = encode_all(convs, tokenizer, template=template, max_len=params.seq_len, report=report)
    if not examples:
        raise InvalidFile(
            f"{Path(data_path).name}: no example left after encoding; check the data and seq_len"
        )
    pad_id = pad_token_id(tokenizer)

    split = epoch_order(len(examples), params.seed, 0)
    n_eval = math.ceil(len(examples) * params.eval_split) if params.eval_split else 0
    if n_eval >= len(examples):
        raise UsageError(f"--eval-split {params.eval_split} leaves no training example of {len(examples)}")
    eval_idx, train_idx = split[:n_eval], sorted(split[n_eval:])
    # The global micro-batches, the same on every rank (a rank trains on its slice of each).
    eval_batches = _micro_batches([examples[i] for i in eval_idx], params, pad_id)
    per_epoch = len(_micro_batches([examples[i] for i in train_idx], params, pad_id))
    total = params.steps or math.ceil(params.epochs * per_epoch / params.grad_accum)
    n_epochs = math.ceil(total * params.grad_accum / per_epoch)
    orders = [
        [train_idx[i] for i in epoch_order(len(train_idx), params.seed, e)] for e in range(1, n_epochs + 1)
    ]
    digest = hashlib.sha256(json.dumps({"eval": eval_idx, "epochs": orders}).encode()).hexdigest()

    def stream() -> Iterator[dict[str, torch.Tensor]]:
        for order in orders:
            yield from _micro_batches([examples[i] for i in order], params, pad_id)

    notes = []
    if params.method == "qlora":
        notes.append("qlora: plain AdamW on CPU (paged optimizers need CUDA); base weights in 4-bit NF4")
    deterministic_was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        optimizer = torch.optim.AdamW(
            list(_trainable(model).values()), lr=params.lr, weight_decay=params.weight_decay
        )
        step, tokens, log, initial_eval = 0, 0, [], None
        if resume and (ckpt := _last_checkpoint(work_dir)) is not None:
            meta = _load_checkpoint(ckpt, model, optimizer, params)
            step, tokens, log = meta["step"], meta["tokens"], meta["log"]
            initial_eval = meta.get("initial_eval_loss")
        elif eval_batches:
            initial_eval = _eval_loss(model, eval_batches, group)
        batches = stream()
        for _ in range(step * params.grad_accum):  # the micro-batches already trained on
            next(batches)
        model.train()
        ddp_model = group.wrap(model) if group is not None else None
        started, run_tokens, eval_loss = time.perf_counter(), 0, None
        while step < total and (_stop_after is None or step < _stop_after):
            lr = get_lr(step, total, params)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            micro = [next(batches) for _ in range(params.grad_accum)]
            n_labels = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
            loss_total = 0.0
            if group is None:
                for batch in micro:  # token-weighted mean over the whole step
                    loss, _ = loss_sum(model, batch)
                    (loss / max(n_labels, 1)).backward()
                    loss_total += float(loss.detach())
                    run_tokens += int(batch["n_tokens"])
            else:
                loss_total = _ddp_micro_steps(group, ddp_model, micro, n_labels, params.seed, step)
                run_tokens += sum(int(b["n_tokens"]) for b in micro)
            if params.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(list(_trainable(model).values()), params.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_now = tokens + run_tokens
            entry = {"step": step, "loss": loss_total / max(n_labels, 1), "lr": lr, "tokens": tokens_now}
            if eval_batches and ((params.eval_every and step % params.eval_every == 0) or step == total):
                entry["eval_loss"] = eval_loss = _eval_loss(model, eval_batches, group)
            log.append(entry)
            if progress is not None and main:
                progress(
                    {
                        **entry,
                        "total_steps": total,
                        "tokens_per_s": run_tokens / max(time.perf_counter() - started, 1e-9),
                    }
                )
            if params.save_every and step % params.save_every == 0 and main:
                state = {
                    "step": step,
                    "tokens": tokens_now,
                    "log": log,
                    "params": params.as_dict(),
                    "initial_eval_loss": initial_eval,
                }
                _save_checkpoint(work_dir, model, optimizer, state)
        elapsed = max(time.perf_counter() - started, 1e-9)
        if (_stop_after is None or step >= total) and main:
            _save(model, tokenizer, params, out_dir, base_ref)
    finally:
        torch.use_deterministic_algorithms(deterministic_was)
    return TrainResult(
        steps=step,
        log=log,
        data_report=report.as_dict(),
        data_order_digest=digest,
        initial_eval_loss=initial_eval,
        final_eval_loss=eval_loss,
        tokens_per_s=run_tokens / elapsed,
        num_threads=group.threads_total if group else torch.get_num_threads(),
        deterministic=True,
        notes=notes,
        world_size=group.world_size if group else 1,
        rank=group.rank if group else 0,
        threads_per_rank=torch.get_num_threads() if group else None,
    )


def _ddp_micro_steps(
    group: Group, ddp_model: Any, micro: list[dict[str, torch.Tensor]], n_labels: int, seed: int, step: int
) -> float:
    """One optimizer step's forward and backward passes on this rank's slices; the global loss sum.

    DDP averages gradients over ranks, so each rank's loss is scaled by world_size / n_labels (the
    step's global label count): the average is the one-process token-weighted mean."""
    group.reseed(seed, step)
    scale = group.world_size / max(n_labels, 1)
    total = 0.0
    for i, batch in enumerate(micro):
        with group.sync(ddp_model, last=i == len(micro) - 1):
            loss, _ = ddp_model(group.shard(batch))
            (loss * scale).backward()
        total += float(loss.detach())
    return group.all_sum([total])[0]


# ---------------------------------------------------------------- save


def _save(model: Any, tokenizer: Any, params: TuneParams, out_dir: Path, base_ref: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if params.method == "full":
        from owlkit.runtime.convert import _scrub

        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        _scrub(out_dir)  # no transformers_version: same training, same bytes across installs
        return
    model.save_pretrained(out_dir)
    # Set the base reference after saving: before, PEFT would look the name up (on the Hub) to check the
    # vocabulary.
    path = out_dir / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_ref or None
    if isinstance(config.get("target_modules"), list):
        # PEFT writes "all-linear" expanded from a set, in an order that changes with each process's
        # string hashing: sorted, the same training gives the same bytes in any process.
        config["target_modules"] = sorted(config["target_modules"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

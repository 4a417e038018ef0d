"""LoRA tuning speed: owlkit's training loop against HF ``Trainer`` + PEFT, on the same work, in one run.

    .venv/bin/python benchmarks/bench_tune.py [--steps 12] [--batch 8] [--seq-len 256]

SmolLM2-135M-Instruct (the shared Q4_1 GGUF, converted to an fp32 HF folder), Alpaca examples from
``../shared/data/alpaca-5k`` rendered with SmolLM2's chat template, LoRA r=16 alpha=32 on all linear
layers, AdamW at 2e-4 with a cosine schedule, no warmup, gradient clipping at 1.0, seed 0.

Same work on both sides:

- the token ids are owlkit's encodings (one tokenisation, loss on the assistant tokens only);
- owlkit runs its real ``train()`` on the data file; it packs its epoch order into sequences of
  ``seq-len`` and takes ``B`` sequences per optimizer step, ``B`` chosen so a step holds about ``--batch``
  examples. HF gets exactly the examples of each owlkit step as that step's batch (same order, same
  number of optimizer steps, same real tokens per step), padded by its default ``DataCollatorForSeq2Seq``;
- both start from the same LoRA initialisation (same seed before ``get_peft_model``).

Reported: real (non-pad) tokens/s of each training loop, the ratio (target >= 1.6), the held-out eval
loss of each final adapter computed by one shared function (target: within 2%), and the ceiling the data
allows: padded/real tokens of HF's batches (what packing alone can win) and the response share (the
positions where the output layer is needed at all).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
GGUF = SHARED / "realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
ALPACA = SHARED / "data/alpaca-5k/alpaca_5000.json"


def eval_loss(model: Any, examples: list, pad_id: int, batch: int = 8) -> float:
    """Mean next-token cross-entropy over trained labels of ``examples``: plain full-logits forwards."""
    import torch
    import torch.nn.functional as F

    from owlkit.adapt.data import IGNORE, pad_batch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            b = pad_batch(examples[i : i + batch], pad_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1]
            labels = b["labels"][:, 1:]
            total += float(
                F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE, reduction="sum")
            )
            count += int((labels != IGNORE).sum())
    return total / count


def hf_train(base: Path, params: Any, examples: list, groups: list[list[int]], pad_id: int, out: Path) -> Any:
    """HF Trainer + PEFT over ``groups`` (example indices per optimizer step); returns (model, seconds)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.pad_token_id = pad_id
    torch.manual_seed(params.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    torch.manual_seed(params.seed)  # as owlkit: the LoRA A init follows this seed
    model = get_peft_model(
        model,
        LoraConfig(r=params.r, lora_alpha=params.alpha, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    rows = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e), "labels": e.labels} for e in examples]

    class StepBatches(Trainer):
        # Each optimizer step gets exactly the examples owlkit's step trained on.
        def get_train_dataloader(self) -> DataLoader:
            return DataLoader(rows, batch_sampler=groups, collate_fn=self.data_collator)

    class Clock(TrainerCallback):
        # The loop alone, as owlkit's figure: from the first step's start to the last step's end.
        start = end = 0.0

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            Clock.start = time.perf_counter()

        def on_train_end(self, *a: Any, **k: Any) -> None:
            Clock.end = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out),
        max_steps=len(groups),
        per_device_train_batch_size=max(len(g) for g in groups),
        learning_rate=params.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=params.max_grad_norm,
        optim="adamw_torch",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=params.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    StepBatches(
        model=model, args=args, train_dataset=rows, data_collator=collator, callbacks=[Clock()]
    ).train()
    return model, Clock.end - Clock.start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps on each side")
    ap.add_argument("--batch", type=int, default=8, help="examples per step, about (HF's batch size)")
    ap.add_argument("--seq-len", type=int, default=256, help="tokens per sequence; longer examples are cut")
    ap.add_argument("--eval", type=int, default=64, help="held-out examples for the eval loss")
    args = ap.parse_args()
    for path in (GGUF, ALPACA):
        if not path.is_file():
            sys.exit(f"{path}: missing; this benchmark needs ../shared beside the repository")
    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from owlkit.adapt.data import encode_all, epoch_order, load_examples, pack
    from owlkit.adapt.train import TuneParams, pad_token_id, train
    from owlkit.runtime.convert import gguf_to_hf

    hf_logging.disable_progress_bar()

    work = Path(tempfile.mkdtemp(prefix="owl-bench-tune-"))
    try:
        base = work / "smollm2"
        gguf_to_hf(GGUF, base)
        tokenizer = AutoTokenizer.from_pretrained(base)
        pad_id = pad_token_id(tokenizer)
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))
        held_out, pool = rows[: args.eval], rows[args.eval : args.eval + 3 * args.batch * args.steps]
        data = work / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")

        def encoded(path: Path) -> list:
            convs, report = load_examples(path, "alpaca")
            return encode_all(
                convs, tokenizer, template=tokenizer.chat_template, max_len=args.seq_len, report=report
            )

        examples = encoded(data)
        (work / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held_out), encoding="utf-8")
        eval_examples = encoded(work / "eval.jsonl")

        # owlkit's plan for this data: its epoch-1 order, packed; B sequences per step.
        mean_len = sum(len(e) for e in examples) / len(examples)
        per_step = max(1, round(args.batch * mean_len / args.seq_len))
        params = TuneParams(
            r=16, alpha=32.0, lr=2e-4, batch_size=per_step, seq_len=args.seq_len, steps=args.steps
        )
        order = epoch_order(len(examples), params.seed, 1)
        seqs = pack([examples[i] for i in order], args.seq_len, pad_id)
        if len(seqs) < per_step * args.steps:
            sys.exit("not enough examples for the steps asked; lower --steps")
        groups = [
            [order[m] for s in seqs[k * per_step : (k + 1) * per_step] for m in s.members]
            for k in range(args.steps)
        ]
        digest = hashlib.sha256(json.dumps({"eval": [], "epochs": [order]}).encode()).hexdigest()

        used = [examples[i] for g in groups for i in g]
        real = sum(len(e) for e in used)
        trained = sum(sum(lab != -100 for lab in e.labels[1:]) for e in used)
        padded = sum(len(g) * max(len(examples[i]) for i in g) for g in groups)
        print(f"threads {torch.get_num_threads()}; {args.steps} steps; {len(used)} examples "
              f"({len(used) / args.steps:.1f} per step; owlkit packs them into {per_step} x {args.seq_len})")  # fmt: skip
        print(f"ceiling: HF pads {padded} tokens for {real} real ({real / padded:.0%} real, packing alone "
              f"<= {padded / real:.2f}x); response share {trained / real:.0%}")  # fmt: skip

        result = train(base, data, "alpaca", params, work / "owl-adapter", work_dir=work / "owl-runs")
        assert result.data_order_digest == digest, "the benchmark's plan differs from train()'s order"
        assert result.log[-1]["tokens"] == real, "owlkit trained other tokens than the plan"
        owl_tps = result.tokens_per_s

        hf_model, hf_secs = hf_train(base, params, examples, groups, pad_id, work / "hf")
        hf_tps = real / hf_secs
        hf_eval = eval_loss(hf_model, eval_examples, pad_id)
        del hf_model

        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        base_eval = eval_loss(base_model, eval_examples, pad_id)
        owl_eval = eval_loss(
            PeftModel.from_pretrained(base_model, work / "owl-adapter"), eval_examples, pad_id
        )
        ratio = owl_tps / hf_tps
        gap = abs(owl_eval - hf_eval) / hf_eval
        print(f"anchor HF Trainer + PEFT (padded): {hf_tps:7.1f} real tokens/s  eval loss {hf_eval:.4f}")
        print(f"owl    owlkit train (packed):      {owl_tps:7.1f} real tokens/s  eval loss {owl_eval:.4f}")
        print(f"ratio owl/anchor: {ratio:.2f}x (target >= 1.6: {'PASS' if ratio >= 1.6 else 'FAIL'}); "
              f"eval loss gap {gap:.2%} (target <= 2%: {'PASS' if gap <= 0.02 else 'FAIL'}); "
              f"base eval loss {base_eval:.4f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Peak memory of full fine-tuning against QLoRA (and LoRA, for information), each in its own process.

    .venv/bin/python benchmarks/bench_memory.py [--layers 32] [--steps 5] [--methods full,qlora,lora]

The parent writes a random Llama once, as an HF folder in a temp dir: hidden 1024, 32 layers,
intermediate 2816, 16 heads, vocabulary 32000 (about 0.48B parameters), untied head like Llama 2. The
weights are sharded safetensors, one shard per decoder layer plus one for embeddings, final norm and head,
generated tensor by tensor from a generator seeded per shard, so no process holds the whole fp32 model
except the full fine-tune, which has to. The tokenizer is a byte-level BPE of exactly 32000 entries trained
in code; the data is alpaca rows of exactly 128 tokens each, so packing puts two in every 256-token
sequence and each optimizer step is 4 x 256 tokens with no padding.

Each method then runs owlkit's real ``train()`` (batch 4, seq_len 256, packing, gradient checkpointing,
Alpaca template, plain AdamW) in a fresh interpreter (``--child METHOD``), which reports its peak RSS as
``ru_maxrss`` and VmHWM, and, from a thread sampling /proc/self/status every 50 ms, how that peak splits
into anonymous memory and file-backed pages (mmapped safetensors count in RSS but are page cache the
kernel can drop, not memory the process allocated). Prints peak RSS, seconds and loss per method, then
QLoRA/full against the target <= 0.20. Exits 0 whatever the ratio; 1 when a child failed.

Reading the figures (glibc): QLoRA loads through ``owlkit.adapt.nf4``, which reads each tensor with plain
reads and quantizes it at once, so no fp32 page of the checkpoint stays resident (transformers' own 4-bit
load maps every shard and keeps them mapped: about 1.8 GiB of file-backed RSS at 32 layers). ``train()``
fixes glibc's mmap threshold for QLoRA (``owlkit.adapt.memory``) so blocks freed by the training step go
back to the system instead of staying in the heap; ``--mmap-threshold`` sets one value (or ``off``: glibc's
moving threshold) for every method alike, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HIDDEN, INTERMEDIATE, HEADS, VOCAB = 1024, 2816, 16, 32000
BATCH, SEQ_LEN, EXAMPLE_LEN = 4, 256, 128  # two examples fill each packed sequence exactly
INIT_STD = 0.02  # LlamaConfig's initializer_range
TARGET = 0.20
GIB = 2**30


# ---------------------------------------------------------------- the random base


def llama_config(layers: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )


def expected_weights(config: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight, from the model transformers builds on the meta device (no memory),
    so the names are exactly the ones from_pretrained looks for."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return {n: tuple(t.shape) for n, t in LlamaForCausalLM(config).state_dict().items()}


def shard_of(name: str) -> str:
    """Decoder layer i -> model-layer-{i:03d}; embeddings, final norm and head -> model-rest."""
    if name.startswith("model.layers."):
        return f"model-layer-{int(name.split('.')[2]):03d}.safetensors"
    return "model-rest.safetensors"


def write_weights(folder: Path, layers: int, seed: int) -> int:
    """Write the sharded fp32 weights and their index; returns the parameter count. Each shard has its own
    generator seeded by (seed, shard), so layer i is the same whatever the layer count; norms start at 1,
    everything else ~ N(0, 0.02) as LlamaForCausalLM initialises it."""
    import torch
    from safetensors.torch import save_file

    config = llama_config(layers)
    config.save_pretrained(folder)
    shapes = expected_weights(config)
    weight_map = {name: shard_of(name) for name in shapes}
    total = 0
    for shard in sorted(set(weight_map.values())):
        key = 100_000 if shard == "model-rest.safetensors" else int(shard[len("model-layer-") :][:3])
        gen = torch.Generator().manual_seed(seed * 1_000_003 + key)
        tensors = {}
        for name in sorted(n for n, s in weight_map.items() if s == shard):
            shape = shapes[name]
            if len(shape) == 1:
                tensors[name] = torch.ones(shape)
            else:
                tensors[name] = torch.randn(shape, generator=gen).mul_(INIT_STD)
            total += tensors[name].numel()
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        del tensors  # at most one shard (the 0.25 GiB embeddings + head) is alive at a time
    index = {"metadata": {"total_size": total * 4}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return total


def check_weights(folder: Path, layers: int, seed: int, scratch: Path) -> None:
    """The index names every weight transformers expects with the right shape (read from the shard
    headers, nothing loaded), and a 1-layer model written the same way loads through from_pretrained
    with no missing, unexpected or reinitialised weight and the values that are in its shards."""
    import torch
    from safetensors import safe_open
    from transformers import LlamaForCausalLM

    expected = expected_weights(llama_config(layers))
    index = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
    if set(index) != set(expected):
        raise SystemExit(f"index mismatch: {sorted(set(index) ^ set(expected))[:5]}")
    for shard in sorted(set(index.values())):
        with safe_open(folder / shard, "pt") as f:
            for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                if tuple(f.get_slice(name).get_shape()) != expected[name]:
                    raise SystemExit(f"{shard}: {name} has shape {f.get_slice(name).get_shape()}")

    small = scratch / "one-layer"
    small.mkdir()
    write_weights(small, 1, seed)
    model, info = LlamaForCausalLM.from_pretrained(small, dtype=torch.float32, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"transformers did not load the random base cleanly: {bad}")
    # Layer 0 and the rest have the same seeds at any layer count: compare the big base's shards.
    for shard in ("model-layer-000.safetensors", "model-rest.safetensors"):
        with safe_open(folder / shard, "pt") as f:
            for name in f.keys():  # noqa: SIM118
                if not torch.equal(model.get_parameter(name), f.get_tensor(name)):
                    raise SystemExit(f"{shard}: {name} loads with other values than it holds")
    shutil.rmtree(small)


# ---------------------------------------------------------------- tokenizer and data


def random_words(seed: int, n: int = 40_000) -> list[str]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def write_tokenizer(folder: Path, words: list[str]) -> None:
    """A byte-level BPE with exactly VOCAB entries, trained on the random words and the Alpaca prompt
    wording (so the prompt is a few tokens, as with a real tokenizer). Digits never occur in training,
    so each digit is one token: the data uses them to reach exact lengths."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from owlkit.adapt.data import ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(words[i : i + 50]) for i in range(0, len(words), 50)] * 2
    corpus += [ALPACA_PROMPT_INPUT, ALPACA_PROMPT_NO_INPUT] * 50
    tok.train_from_iterator(corpus, trainer)
    if tok.get_vocab_size() != VOCAB:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} entries, not {VOCAB}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(folder)


def write_data(path: Path, tokenizer: Any, words: list[str], n_examples: int, seed: int) -> None:
    """``n_examples`` alpaca rows, each exactly EXAMPLE_LEN tokens once rendered (prompt, response, EOS)
    by owlkit's own encoder: words while they fit, then digits (one token each) to the exact length."""
    from owlkit.adapt.data import encode, to_conversation

    def size(instruction: str, output: str) -> int:
        conv = to_conversation({"instruction": instruction, "input": "", "output": output}, "alpaca")
        assert not isinstance(conv, str), conv
        enc = encode(conv, tokenizer, template="alpaca", max_len=10**6)
        assert enc is not None
        return len(enc)

    rng = random.Random(seed)
    rows = []
    for _ in range(n_examples):
        instruction = " ".join(rng.choices(words, k=rng.randint(4, 10))).capitalize() + "."
        out: list[str] = []
        while True:
            w = rng.choice(words)
            if size(instruction, " ".join([*out, w])) > EXAMPLE_LEN:
                break
            out.append(w)
        output = " ".join(out)
        output += "7" * (EXAMPLE_LEN - size(instruction, output))
        if size(instruction, output) != EXAMPLE_LEN:
            raise SystemExit(f"could not build a {EXAMPLE_LEN}-token example")
        for text in (instruction, output):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if tokenizer.decode(ids, clean_up_tokenization_spaces=False) != text:
                raise SystemExit(f"tokenizer does not round-trip {text[:40]!r}")
        rows.append({"instruction": instruction, "input": "", "output": output})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def check_data(path: Path, tokenizer: Any, steps: int) -> float:
    """Pack the data as train() does: exactly steps x BATCH full sequences. Returns the trained share."""
    from owlkit.adapt.data import IGNORE, encode_all, load_examples, pack

    convs, report = load_examples(path, "alpaca")
    encoded = encode_all(convs, tokenizer, template=None, max_len=SEQ_LEN, report=report)
    seqs = pack(encoded, SEQ_LEN)
    if len(seqs) != steps * BATCH or any(s.real_tokens != SEQ_LEN for s in seqs):
        raise SystemExit(f"data packs into {len(seqs)} sequences, not {steps * BATCH} full ones")
    trained = sum(lab != IGNORE for s in seqs for lab in s.labels)
    if not trained:
        raise SystemExit("no trained label in the data")
    return trained / (len(seqs) * SEQ_LEN)


# ---------------------------------------------------------------- the child: one method, its peak


def read_status() -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem of this process, in KiB."""
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                out[name] = int(value.split()[0])
    return out


class Sampler(threading.Thread):
    """Samples /proc/self/status every ``interval`` s: keeps the sample with the highest VmRSS (how it
    splits into anonymous and file pages) and the highest RssAnon seen. Heavy torch ops release the
    GIL, so the thread keeps sampling through them."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.done = threading.Event()
        self.at_peak: dict[str, int] = {"VmRSS": 0}
        self.max_anon = 0

    def sample(self) -> None:
        s = read_status()
        if s["VmRSS"] > self.at_peak["VmRSS"]:
            self.at_peak = s
        self.max_anon = max(self.max_anon, s["RssAnon"])

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.sample()


def child(
    method: str, base: Path, data: Path, work: Path, steps: int, result_path: Path, mmap_threshold: str
) -> None:
    sampler = Sampler()
    sampler.start()
    import torch

    from owlkit.adapt import memory
    from owlkit.adapt.train import TuneParams, train

    if mmap_threshold != "default":  # what train() passes to mallopt (None: it leaves glibc alone)
        memory.MMAP_THRESHOLDS[method] = None if mmap_threshold == "off" else int(mmap_threshold)

    params = TuneParams(
        method=method,
        steps=steps,
        batch_size=BATCH,
        seq_len=SEQ_LEN,
        packing=True,
        grad_checkpointing=True,
        template="alpaca",
    )
    at_last_step: dict[str, int] = {}

    def progress(entry: dict) -> None:
        at_last_step.update(read_status())
        print(
            f"  [{method}] step {entry['step']}/{entry['total_steps']} loss {entry['loss']:.4f} "
            f"rss {at_last_step['VmRSS'] / 2**20:.2f} GiB (hwm {at_last_step['VmHWM'] / 2**20:.2f})",
            file=sys.stderr,
            flush=True,
        )

    started = time.perf_counter()
    result = train(
        base,
        data,
        "alpaca",
        params,
        work / "out",
        work_dir=work / "ckpt",
        base_ref="bench-memory-base",
        progress=progress,
    )
    seconds = time.perf_counter() - started
    sampler.stop()
    report = {
        "method": method,
        "seconds": seconds,
        "tokens_per_s": result.tokens_per_s,
        "threads": torch.get_num_threads(),
        "first_loss": result.log[0]["loss"],
        "final_loss": result.log[-1]["loss"],
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "vm_hwm_kib": read_status()["VmHWM"],
        "hwm_at_last_step_kib": at_last_step.get("VmHWM", 0),
        "at_peak": sampler.at_peak,
        "max_anon_kib": sampler.max_anon,
        "notes": result.notes,
        "mmap_threshold": memory.MMAP_THRESHOLDS.get(method),
    }
    result_path.write_text(json.dumps(report, indent=2) + "\n")


# ---------------------------------------------------------------- the parent


@dataclass
class Outcome:
    method: str
    report: dict | None
    failure: str = ""


def run_child(
    method: str, base: Path, data: Path, work: Path, steps: int, timeout: float, mmap_threshold: str
) -> Outcome:
    result = work / f"{method}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", method]
    cmd += ["--base", str(base), "--data", str(data), "--work", str(work / method)]
    cmd += ["--steps", str(steps), "--result", str(result), "--mmap-threshold", mmap_threshold]
    try:
        proc = subprocess.run(cmd, timeout=timeout)  # stderr passes through: the child's progress
    except subprocess.TimeoutExpired:
        return Outcome(method, None, f"killed after the {timeout:.0f} s limit")
    if proc.returncode < 0:
        why = " (SIGKILL: out of memory?)" if proc.returncode == -9 else ""
        return Outcome(method, None, f"killed by signal {-proc.returncode}{why}")
    if proc.returncode or not result.is_file():
        return Outcome(method, None, f"exited with code {proc.returncode}")
    shutil.rmtree(work / method, ignore_errors=True)  # the full fine-tune's output is 1.8 GiB
    return Outcome(method, json.loads(result.read_text()))


def gib(kib: int) -> float:
    return kib * 1024 / GIB


def print_table(outcomes: list[Outcome]) -> None:
    print(
        f"{'method':<6} {'peak RSS':>9} {'VmHWM':>9} {'@last step':>10} {'anon@peak':>9} {'file@peak':>9} "
        f"{'max anon':>9} {'seconds':>8} {'tok/s':>6}  loss first -> final"
    )
    for o in outcomes:
        r = o.report
        if r is None:
            print(f"{o.method:<6} FAILED: {o.failure}")
            continue
        p = r["at_peak"]
        print(
            f"{o.method:<6} {gib(r['ru_maxrss_kib']):>5.2f} GiB {gib(r['vm_hwm_kib']):>5.2f} GiB "
            f"{gib(r['hwm_at_last_step_kib']):>6.2f} GiB {gib(p['RssAnon']):>5.2f} GiB "
            f"{gib(p['RssFile']):>5.2f} GiB {gib(r['max_anon_kib']):>5.2f} GiB {r['seconds']:>8.1f} "
            f"{r['tokens_per_s']:>6.1f}  {r['first_loss']:.3f} -> {r['final_loss']:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--methods", default="full,qlora,lora", help="comma-separated, run in this order")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1500, help="seconds per method before it is killed")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument(
        "--mmap-threshold",
        default="default",
        metavar="BYTES|off|default",
        help="glibc mmap threshold train() sets in every child: BYTES, off (glibc's own moving threshold, "
        "which keeps freed blocks up to 32 MiB in the heap) or default (owlkit's, see owlkit.adapt.memory)",
    )
    ap.add_argument("--child", choices=["full", "qlora", "lora", "dora"], help=argparse.SUPPRESS)
    ap.add_argument("--base", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.base, args.data, args.work, args.steps, args.result, args.mmap_threshold)
        return
    if args.mmap_threshold not in ("default", "off") and not args.mmap_threshold.isdigit():
        ap.error(f"--mmap-threshold {args.mmap_threshold}: use a byte count, off or default")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or any(m not in ("full", "qlora", "lora", "dora") for m in methods):
        ap.error(f"--methods {args.methods}: use full, qlora, lora (or dora), comma-separated")

    from transformers import AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix="owl-bench-memory-", dir=args.dir))
    try:
        base = work / "base"
        base.mkdir()
        t = time.perf_counter()
        n_params = write_weights(base, args.layers, args.seed)
        words = random_words(args.seed)
        write_tokenizer(base, words)
        tokenizer = AutoTokenizer.from_pretrained(base)
        data = work / "train.jsonl"
        n_examples = args.steps * BATCH * (SEQ_LEN // EXAMPLE_LEN)
        write_data(data, tokenizer, words, n_examples, args.seed)
        check_weights(base, args.layers, args.seed, work)
        share = check_data(data, tokenizer, args.steps)
        n_shards = len(list(base.glob("*.safetensors")))
        print(
            f"base: random Llama, {args.layers} layers, {n_params / 1e9:.3f}B parameters "
            f"({n_params * 4 / GIB:.2f} GiB fp32) in {n_shards} shards, vocabulary {len(tokenizer)}; "
            f"written and checked in {time.perf_counter() - t:.1f} s"
        )
        print(
            f"data: {n_examples} alpaca rows of {EXAMPLE_LEN} tokens -> {args.steps} steps x {BATCH} x "
            f"{SEQ_LEN} tokens, packed, no padding; {share:.0%} of tokens trained"
        )
        print(
            f"each method: owlkit train(), gradient checkpointing, plain AdamW, cpu threads {os.cpu_count()}"
        )
        from owlkit.adapt.memory import ENV, MMAP_THRESHOLDS

        if args.mmap_threshold == "default":
            print(f"glibc mmap threshold: owlkit's per method {MMAP_THRESHOLDS} (others: glibc's moving one)")
        else:
            print(f"glibc mmap threshold: {args.mmap_threshold} for every method (off: glibc's moving one)")
        if ENV in os.environ:
            print(f"note: {ENV}={os.environ[ENV]} is set, so train() leaves glibc's threshold at that")
        outcomes = []
        for method in methods:
            print(f"running {method} …", flush=True)
            outcomes.append(
                run_child(method, base, data, work, args.steps, args.timeout, args.mmap_threshold)
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print_table(outcomes)
    print(
        "peak RSS = ru_maxrss (VmHWM agrees); @last step = VmHWM when the last step ended (before saving); "
        "anon/file@peak = split of the highest 50 ms sample; max anon = highest anonymous RSS sampled"
    )
    done = {o.method: o.report for o in outcomes if o.report is not None}
    if "full" in done and "qlora" in done:
        full, qlora = done["full"], done["qlora"]
        ratio = qlora["ru_maxrss_kib"] / full["ru_maxrss_kib"]
        verdict = "PASS" if ratio <= TARGET else "FAIL"
        print(f"ratio qlora/full peak RSS: {ratio:.3f}  (target <= {TARGET:.2f}): {verdict}")
        anon = qlora["max_anon_kib"] / full["max_anon_kib"]
        print(f"ratio qlora/full max anonymous RSS: {anon:.3f}  (information: file-backed pages left out)")
        peak = qlora["at_peak"]
        if peak["RssFile"] > 0.3 * peak["VmRSS"]:
            print(
                f"note: {gib(peak['RssFile']):.2f} GiB of qlora's {gib(peak['VmRSS']):.2f} GiB peak sample is "
                "file-backed: mmapped safetensors pages (clean page cache mapped into the process, which "
                "the kernel can drop), not memory the process allocated"
            )
    if len(done) < len(outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()

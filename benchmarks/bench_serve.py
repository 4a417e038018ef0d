"""`owl serve` on SmolLM2-135M-Instruct against the runtimes it wraps, all measured in one run.

    .venv/bin/python benchmarks/bench_serve.py [--tokens 128] [--repeats 2] [--no-gguf]

Setup (not timed): a temp ``OWL_HOME`` where the shared Q4_1 GGUF (``$OWL_SHARED`` or ../shared) is
imported as ``smollm2`` and converted to an fp32 HF folder ``smollm2-hf``; a LoRA adapter (r=16 on every
linear layer, random non-zero B, as ``owl tune``'s demo recipe shapes it) is saved and imported.

Every server is a real ``owl serve`` child process on a free loopback port, asked through the ``openai``
client with ``stream=True`` and ``stream_options.include_usage`` (the token count is the server's own
``usage.completion_tokens``). Decode rate = completion tokens / seconds from sending the request to the
last chunk, prefill included, on the same chat prompt, greedy, for both sides of a ratio:

1. torch backend vs HF ``model.generate`` (greedy, ``max_new_tokens`` = the same count) on the same fp32
   folder in this process, while the server sits idle. Target >= 1.0.
2. gguf backend (``--backend gguf`` on the Q4_1 GGUF) vs llama-cpp-python's ``create_chat_completion``
   called directly on the same file with the same thread count. Target >= 0.85.
3. torch backend, 8 concurrent streaming clients (different prompts) vs 1: aggregate tokens/s. Target >= 2.5.
4. Memory added per loaded adapter: the server's VmRSS before and after ``/v1/load_lora_adapter`` loads the
   adapter under three more names, divided by 3, against the adapter file's size. Target <= 1.2x. The
   first adapter loaded is measured apart: it also imports peft and wraps the model (a one-time cost,
   printed). Adapter weights are memory-mapped from the stored file (PEFT's ``low_cpu_mem_usage``), so
   they count as file-backed resident pages.

Each rate is the best of ``--repeats`` after one warm-up. Machine load skews every figure: run it alone.
Prints a table and the four verdicts; exits 0 whatever they are, 1 when a server fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from owlkit.demo import owl_serve

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
GGUF = SHARED / "realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
OWL = Path(sys.executable).with_name("owl")
THREADS = os.cpu_count() or 2
PROMPTS = [
    "Write a short story about an owl who learns to read.",
    "Explain how a bicycle works to a child.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about a trip to the sea.",
    "Tell me about the history of bread.",
    "Describe your ideal city.",
    "Write a poem about the moon and the tides.",
    "Explain why the sky is blue.",
]


def owl(env: dict[str, str], *args: str) -> None:
    subprocess.run([str(OWL), *args], env=env, check=True, capture_output=True, text=True)


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def stream_rate(url: str, model: str, prompt: str, tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) of one streamed chat completion through the openai client."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    t = time.perf_counter()
    used = 0
    for chunk in client.chat.completions.create(model=model, messages=messages(prompt), max_tokens=tokens,
                                                temperature=0, stream=True,
                                                stream_options={"include_usage": True}):  # fmt: skip
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return used, time.perf_counter() - t


def best_rate(fn: Callable[[], tuple[int, float]], repeats: int) -> tuple[float, int]:
    fn()  # warm-up: first-call allocations and caches
    runs = [fn() for _ in range(repeats)]
    n, secs = max(runs, key=lambda r: r[0] / r[1])
    return n / secs, n


def hf_generate(folder: Path, tokens: int) -> Callable[[], tuple[int, float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(THREADS)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok.apply_chat_template(messages(PROMPTS[0]), add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]  # fmt: skip

    def run() -> tuple[int, float]:
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, max_new_tokens=tokens, do_sample=False)
        return out.shape[1] - ids.shape[1], time.perf_counter() - t

    return run


def llama_direct(tokens: int) -> Callable[[], tuple[int, float]]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(GGUF), n_ctx=4096, n_threads=THREADS, verbose=False)

    def run() -> tuple[int, float]:
        t = time.perf_counter()
        llm.reset()  # no prompt cache between runs: the server starts each request afresh too
        out = llm.create_chat_completion(messages=messages(PROMPTS[0]), max_tokens=tokens, temperature=0)
        return out["usage"]["completion_tokens"], time.perf_counter() - t

    return run


def concurrent_rate(url: str, clients: int, tokens: int) -> tuple[int, float]:
    results: list[tuple[int, float]] = []
    t = time.perf_counter()
    threads = [threading.Thread(target=lambda p=p: results.append(stream_rate(url, "smollm2-hf", p, tokens)))
               for p in PROMPTS[:clients]]  # fmt: skip
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(n for n, _ in results), time.perf_counter() - t


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def stored_folder(ref: str) -> Path:
    """The folder of a stored artifact in the benchmark's store (OWL_HOME is set in os.environ)."""
    from owlkit.store import open_store

    store = open_store(write=True)
    return store.checkout(store.find(ref).digest)


def make_adapter(env: dict[str, str], work: Path) -> int:
    """A LoRA r=16 all-linear adapter on smollm2-hf, imported as bench-lora; returns its file size."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(stored_folder("smollm2-hf"))
    peft = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    out = work / "bench-lora"
    peft.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "smollm2-hf"
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    owl(env, "import", str(out), "--name", "bench-lora")
    return (out / "adapter_model.safetensors").stat().st_size


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-gguf", action="store_true", help="skip the gguf backend comparison")
    args = ap.parse_args()
    if not GGUF.is_file():
        sys.exit(f"error: {GGUF} is missing: set OWL_SHARED to the folder holding realmodels/")
    work = Path(tempfile.mkdtemp(prefix="owl-bench-serve-"))
    os.environ["OWL_HOME"] = str(work / "home")
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS)}
    print("setup: import, convert, adapter…", flush=True)
    owl(env, "import", str(GGUF), "--name", "smollm2")
    owl(env, "convert", "smollm2", "--to", "hf", "--name", "smollm2-hf")
    adapter_bytes = make_adapter(env, work)
    rows: list[tuple[str, str, str, str]] = []

    with owl_serve(env, "smollm2-hf", "--max-batch", "8", quiet=True) as (url, pid):
        served, n = best_rate(lambda: stream_rate(url, "smollm2-hf", PROMPTS[0], args.tokens), args.repeats)
        one = served
        agg_n, agg_s = max((concurrent_rate(url, 8, args.tokens) for _ in range(args.repeats)),
                           key=lambda r: r[0] / r[1])  # fmt: skip
        aggregate = agg_n / agg_s
        import httpx

        def load(name: str) -> None:
            r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": "bench-lora"},
                           timeout=120)  # fmt: skip
            r.raise_for_status()

        start = rss(pid)
        load("first")  # pays once for importing peft and wrapping the model: reported, not the target
        before = rss(pid)
        first = before - start
        for i in range(3):
            load(f"a{i}")
        time.sleep(1)
        per_adapter = (rss(pid) - before) / 3
    hf_run = hf_generate(stored_folder("smollm2-hf"), args.tokens)  # the same stored folder the server loads
    hf, hf_n = best_rate(hf_run, args.repeats)
    rows.append(("torch backend vs HF generate", f"{served:.1f} tok/s ({n})", f"{hf:.1f} tok/s ({hf_n})",
                 f"{served / hf:.2f} (>= 1.0: {verdict(served / hf >= 1.0)})"))  # fmt: skip
    rows.append(("8 clients vs 1 (torch, aggregate)", f"{aggregate:.1f} tok/s ({agg_n})", f"{one:.1f} tok/s",
                 f"{aggregate / one:.2f} (>= 2.5: {verdict(aggregate / one >= 2.5)})"))  # fmt: skip
    ratio = per_adapter / adapter_bytes
    rows.append(("RSS added by the first adapter (peft import, wrap)", f"{first / 2**20:.1f} MiB", "", ""))
    rows.append(("RSS added per further adapter", f"{per_adapter / 2**20:.1f} MiB", f"{adapter_bytes / 2**20:.1f} MiB file",
                 f"{ratio:.2f} (<= 1.2: {verdict(ratio <= 1.2)})"))  # fmt: skip
    if not args.no_gguf:
        with owl_serve(env, "smollm2", "--backend", "gguf", quiet=True) as (url, _):
            g, g_n = best_rate(lambda: stream_rate(url, "smollm2", PROMPTS[0], args.tokens), args.repeats)
        direct, d_n = best_rate(llama_direct(args.tokens), args.repeats)
        rows.append(("gguf backend vs llama-cpp-python", f"{g:.1f} tok/s ({g_n})", f"{direct:.1f} tok/s ({d_n})",
                     f"{g / direct:.2f} (>= 0.85: {verdict(g / direct >= 0.85)})"))  # fmt: skip

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"owl serve, SmolLM2-135M, {args.tokens} tokens, {THREADS} threads", header_style="bold"
    )
    for col in ("comparison", "owl serve", "anchor", "ratio"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


if __name__ == "__main__":
    main()

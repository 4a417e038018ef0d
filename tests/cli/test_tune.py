"""`owl tune` through the real CLI: stored inputs in, a PEFT adapter artifact with its lineage out."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from owltest import ALPACA, SMOLLM_GGUF, need


def test_tune_lora_stores_adapter_with_lineage(
    owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "tiny-data").code == 0
    r = owl(
        "tune",
        "tiny-llama",
        "tiny-data",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--r",
        "4",
        "--name",
        "t-lora",
        "--json",
    )
    assert r.code == 0, r.err
    info = owl("show", "t-lora", "--json").json()
    base = owl("show", "tiny-llama", "--json").json()
    data = owl("show", "tiny-data", "--json").json()
    assert info["kind"] == "adapter" and info["format"] == "peft"
    assert {(p["relation"], p["digest"]) for p in info["parents"]} == {
        ("adapter_of", base["digest"]),
        ("trained_on", data["digest"]),
    }
    assert info["facts"]["base_digest"] == base["digest"]
    assert info["facts"]["base_identity"] == base["base_identity"]
    assert info["recipe"]["name"] == "tune" and info["recipe"]["inputs"] == {
        "base": base["digest"],
        "data": data["digest"],
    }
    assert info["recipe"]["params"]["r"] == 4 and info["recipe"]["seed"] == 0

    shown = owl("show", "t-lora", "--plot", tmp_path / "loss.svg")
    assert shown.code == 0 and "loss" in shown.out and any(c in shown.out for c in "▁▂▃▄▅▆▇█")
    svg = (tmp_path / "loss.svg").read_text()
    assert svg.startswith("<svg") and "<polyline" in svg
    assert owl("show", "tiny-llama", "--plot", tmp_path / "none.svg").code == 2  # no training log

    out = tmp_path / "adapter"
    assert owl("export", "t-lora", out).code == 0
    card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert card["owlkit"]["base_digest"] == base["digest"] and card["library_name"] == "peft"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama" and "base_digest" not in config
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama), out)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_tune_imports_paths_and_refuses_bad_inputs(
    owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    r = owl("tune", tiny_llama, tiny_alpaca, "--steps", "2", "--batch-size", "2", "--name", "from-paths")
    assert r.code == 0, r.err
    assert {row["kind"] for row in owl("ls", "--json").json()} == {"model", "dataset", "adapter"}
    assert owl("tune", "tiny-llama", "tiny-llama", "--steps", "1").code == 5  # a model is not a dataset
    text = tmp_path / "plain.txt"
    text.write_text("just some text\n")
    r = owl("tune", "tiny-llama", text, "--steps", "1")
    assert r.code == 5 and "alpaca" in r.err
    assert owl("tune", "tiny-llama", tiny_alpaca, "--r", "0").code == 2
    assert owl("tune", "tiny-llama", tiny_alpaca, "--name", "bad name").code == 2


def test_tune_refuses_a_gguf_base_with_the_convert_hint(
    owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    from runtime.test_convert import write_tiny_gguf

    gguf = write_tiny_gguf(tiny_llama, tmp_path / "tiny.gguf")
    assert owl("import", gguf, "--name", "tiny-gguf").code == 0
    r = owl("tune", "tiny-gguf", tiny_alpaca, "--steps", "1")
    assert r.code == 5 and "owl convert tiny-gguf:latest --to hf" in r.err


def test_tune_qlora_gives_a_lora_adapter_on_the_full_precision_base(
    owl, tiny_llama: Path, tiny_alpaca: Path
) -> None:
    r = owl(
        "tune",
        tiny_llama,
        tiny_alpaca,
        "--method",
        "qlora",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--name",
        "q",
        "--json",
    )
    assert r.code == 0, r.err
    info = owl("show", "q", "--json").json()
    assert info["facts"]["peft_type"] == "LORA" and info["recipe"]["params"]["method"] == "qlora"
    assert any(p["relation"] == "adapter_of" for p in info["parents"])


def test_tune_resume_from_a_checkpoint_gives_the_same_adapter(
    owl, owl_home: Path, tiny_llama: Path, tiny_alpaca: Path
) -> None:
    """--save-every writes checkpoints under the store's runs/; losing the last one (an interrupted run)
    and tuning again with --resume gives the uninterrupted run's adapter, byte for byte."""
    args = ("tune", "tiny-llama", "tiny-data", "--steps", "4", "--batch-size", "2", "--r", "4",
            "--eval-split", "0.25", "--save-every", "2", "--json")  # fmt: skip
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "tiny-data").code == 0
    whole = owl(*args, "--name", "whole")
    assert whole.code == 0, whole.err
    training = whole.json()["training"]
    assert training["initial_eval_loss"] > 0 and training["final_eval_loss"] > 0
    (run,) = (owl_home / "runs").iterdir()
    assert sorted(p.name for p in run.iterdir()) == ["ckpt-00000002", "ckpt-00000004"]
    shutil.rmtree(run / "ckpt-00000004")
    resumed = owl(*args, "--resume", "--name", "resumed")
    assert resumed.code == 0, resumed.err
    assert resumed.json()["digest"] == whole.json()["digest"]
    assert resumed.json()["training"]["log"] == training["log"]


@pytest.mark.slow
@pytest.mark.realmodel
def test_smollm2_lora_on_alpaca_5k_eval_loss_falls(owl) -> None:
    """About a minute of real instruction tuning per 10 steps here: 60 steps of LoRA r=16 on every
    linear layer of SmolLM2-135M-Instruct over the shared Alpaca sample; the held-out loss falls and the
    adapter's trained_on edge carries the data's non-commercial license."""
    assert owl("import", need(SMOLLM_GGUF), "--name", "smollm2").code == 0
    assert owl("convert", "smollm2", "--to", "hf", "--name", "smollm2-hf").code == 0
    assert owl("import", need(ALPACA), "--name", "alpaca-5k").code == 0
    r = owl("tune", "smollm2-hf", "alpaca-5k", "--method", "lora", "--r", "16", "--targets", "all-linear",
            "--steps", "60", "--batch-size", "4", "--seq-len", "256", "--eval-split", "0.01",
            "--eval-every", "30", "--name", "a5k-lora", "--json")  # fmt: skip
    assert r.code == 0, r.err
    training = r.json()["training"]
    assert training["steps"] == 60 and training["data"]["skipped"]  # seed_tasks.jsonl rows are not alpaca
    assert training["final_eval_loss"] < training["initial_eval_loss"]
    info = owl("show", "a5k-lora", "--json").json()
    (data,) = [p["digest"] for p in info["parents"] if p["relation"] == "trained_on"]
    assert owl("show", data, "--json").json()["license"] == "CC-BY-NC-4.0"

"""`owl merge` through the real CLI: an adapter trained by `owl tune`, merged into its base, stored as a
model with `merged_from` edges; refused on another base identity, on a GGUF and on quantized weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TUNE_ARGS = ("--steps", "3", "--batch-size", "2", "--r", "4", "--lr", "0.05", "--json")


def _tune(owl, base: str, data: Path, name: str, *extra: str) -> None:
    r = owl("tune", base, data, *TUNE_ARGS, "--name", name, *extra)
    assert r.code == 0, r.err


def _logits(model, ids: list[int]):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


def _assert_merged_like_peft(owl, tmp_path: Path, base: str, adapter: str, merged: str) -> None:
    """The merged model's logits equal the base + adapter (PeftModel) logits within 1e-5 in fp32."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    for ref in (base, adapter, merged):
        assert owl("export", ref, tmp_path / ref).code == 0
    ids = [0, 5, 17, 42, 3, 9, 60]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / base, dtype=torch.float32)
    before = _logits(plain, ids)
    reference = PeftModel.from_pretrained(plain, tmp_path / adapter).eval()
    expected = _logits(reference, ids)
    assert (expected - before).abs().max() > 1e-4  # the adapter does change the outputs
    got = _logits(AutoModelForCausalLM.from_pretrained(tmp_path / merged).eval(), ids)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_merge_lora_matches_peft_with_lineage_and_is_deterministic(
    owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "m-data").code == 0
    _tune(owl, "tiny-llama", tiny_alpaca, "m-lora")
    r = owl("merge", "tiny-llama", "m-lora", "--name", "merged", "--json")
    assert r.code == 0, r.err
    digest = r.json()["digest"]

    info = owl("show", "merged", "--json").json()
    base = owl("show", "tiny-llama", "--json").json()
    adapter = owl("show", "m-lora", "--json").json()
    assert info["digest"] == digest and info["kind"] == "model" and info["format"] == "hf"
    assert {(p["relation"], p["digest"]) for p in info["parents"]} == {
        ("merged_from", base["digest"]),
        ("merged_from", adapter["digest"]),
    }
    assert info["recipe"]["name"] == "merge"
    assert info["recipe"]["inputs"] == {"base": base["digest"], "adapter": adapter["digest"]}
    assert info["recipe"]["params"] == {"dtype": "float32"}
    assert info["facts"].get("quantization") is None
    _assert_merged_like_peft(owl, tmp_path, "tiny-llama", "m-lora", "merged")
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "transformers_version" not in config and "quantization_config" not in config
    assert not list((tmp_path / "merged").glob("adapter_*"))

    # The same inputs and params give the same bytes, hence the same artifact.
    again = owl("merge", "tiny-llama", "m-lora", "--name", "merged-again", "--json")
    assert again.code == 0, again.err
    assert again.json()["digest"] == digest

    bf16 = owl("merge", "tiny-llama", "m-lora", "--dtype", "bfloat16", "--name", "merged-bf16", "--json")
    assert bf16.code == 0, bf16.err
    assert bf16.json()["digest"] != digest
    assert owl("show", "merged-bf16", "--json").json()["recipe"]["params"] == {"dtype": "bfloat16"}
    assert owl("export", "merged-bf16", tmp_path / "bf16").code == 0
    weights = load_file(tmp_path / "bf16" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    full = load_file(tmp_path / "merged" / "model.safetensors")
    for key, t in full.items():  # merged in float32, rounded once
        assert torch.equal(weights[key], t.to(torch.bfloat16))

    assert owl("merge", "tiny-llama", "m-lora", "--dtype", "float16").code == 2
    assert owl("merge", "tiny-llama", "m-lora", "--name", "bad name").code == 2
    assert owl("merge", "m-lora", "m-lora").code == 5  # an adapter is not a base model
    assert owl("merge", "tiny-llama", "tiny-llama").code == 5  # a model is not an adapter


def test_merge_dora_and_refusals(
    owl, tiny_llama: Path, tiny_llama_other: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    from runtime.test_convert import write_tiny_gguf

    assert owl("import", tiny_llama).code == 0
    _tune(owl, "tiny-llama", tiny_alpaca, "m-dora", "--method", "dora")
    r = owl("merge", "tiny-llama", "m-dora", "--name", "merged-dora")
    assert r.code == 0, r.err
    _assert_merged_like_peft(owl, tmp_path, "tiny-llama", "m-dora", "merged-dora")

    # Another base identity: refused, naming what differs.
    assert owl("import", tiny_llama_other, "--name", "other-llama").code == 0
    r = owl("merge", "other-llama", "m-dora")
    assert r.code == 5 and "m-dora" in r.err and "shapes" in r.err, r.err

    # A GGUF base: refused with the hint to convert it first.
    gguf = write_tiny_gguf(tiny_llama, tmp_path / "tiny.gguf")
    assert owl("import", gguf, "--name", "tiny-gguf").code == 0
    r = owl("merge", "tiny-gguf", "m-dora")
    assert r.code == 5 and "owl convert tiny-gguf:latest --to hf" in r.err, r.err

    # A base whose facts say it is quantized: refused, never requantized silently.
    quant = tmp_path / "tiny-bnb"
    shutil.copytree(tiny_llama, quant)
    cfg = json.loads((quant / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quant / "config.json").write_text(json.dumps(cfg))
    assert owl("import", quant, "--name", "tiny-bnb").code == 0
    assert owl("show", "tiny-bnb", "--json").json()["facts"]["quantization"] == "bnb-4bit"
    r = owl("merge", "tiny-bnb", "m-dora")
    assert r.code == 5 and "quantized (bnb-4bit)" in r.err, r.err
    models = [row for row in owl("ls", "--json").json() if row["kind"] == "model"]
    assert len(models) == 5  # tiny-llama, merged-dora and the three refused bases: nothing else stored

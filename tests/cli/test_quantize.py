"""`owl quantize` through the real CLI: stored variants with lineage, recipe and measured drift; refusals
that leave the store as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")


def names(owl) -> set[str]:
    return {a["names"][0] for a in owl("ls", "--json").json() if a["names"]}


def test_two_gguf_targets_share_one_scoring_and_carry_lineage(owl, tiny_llama: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    r = owl(
        "quantize", "tiny-llama", "--to", "gguf-q8_0", "--to", "gguf-q4_0", "--eval-tokens", "256", "--json"
    )
    assert r.code == 0, r.err
    out = {o["target"]: o for o in r.json()}
    src = owl("show", "tiny-llama", "--json").json()
    for target, o in out.items():
        info = owl("show", o["digest"], "--json").json()
        assert info["format"] == "gguf" and info["kind"] == "model"
        assert [(p["relation"], p["digest"]) for p in info["parents"]] == [("quantized_from", src["digest"])]
        assert info["recipe"]["name"] == "quantize" and info["recipe"]["params"]["to"] == target
        assert info["recipe"]["inputs"] == {"source": src["digest"]}
        assert info["license"] == src["license"]
        q = info["quality"]
        assert q["runtime"].startswith("llama.cpp") and q["tokens"] == 255 and q["chunks"] == 1
        assert q["ppl_source"] == out["gguf-q8_0"]["quality"]["ppl_source"]  # the source scored once
        assert q["kl_mean"] >= 0 and 0 < q["top1"] <= 1 and q["size_bytes"] > 0
    assert out["gguf-q8_0"]["quality"]["kl_mean"] < out["gguf-q4_0"]["quality"]["kl_mean"]
    assert out["gguf-q8_0"]["export"]["bits_per_weight"] > out["gguf-q4_0"]["export"]["bits_per_weight"]
    shown = owl("show", "tiny-llama-q8-0")
    assert shown.code == 0 and "quantization drift" in shown.out and "llama.cpp" in shown.out


def test_bnb_variant_is_scored_in_torch_and_reloads(owl, tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    assert owl("import", tiny_llama).code == 0
    r = owl(
        "quantize", "tiny-llama", "--to", "bnb-nf4", "--eval-tokens", "128", "--name", "tiny-nf4", "--json"
    )
    assert r.code == 0, r.err
    (o,) = r.json()
    assert o["quality"]["runtime"].startswith("torch") and o["quality"]["kl_mean"] > 0
    info = owl("show", "tiny-nf4", "--json").json()
    assert info["format"] == "hf" and info["facts"]["quantization"]
    assert owl("export", "tiny-nf4", tmp_path / "nf4").code == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "nf4")
    assert model.config.quantization_config.load_in_4bit


def test_quantized_source_is_refused_unless_dequantized_first(owl, tiny_llama: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("quantize", "tiny-llama", "--to", "gguf-q4_1", "--no-eval", "--name", "t4").code == 0
    before = names(owl)
    r = owl("quantize", "t4", "--to", "gguf-q8_0", "--no-eval")
    assert r.code != 0 and "already quantized" in r.err and "--from-dequantized" in r.err
    assert len(r.err.strip().splitlines()) == 1 and names(owl) == before
    r = owl("quantize", "t4", "--to", "gguf-q8_0", "--from-dequantized", "--eval-tokens", "64", "--json")
    assert r.code == 0, r.err
    info = owl("show", r.json()[0]["digest"], "--json").json()
    assert info["descends_from_quantized"] == "t4:latest (gguf:Q4_1)"
    assert info["recipe"]["params"]["from_dequantized"] is True


def test_drift_guard_and_bad_targets_store_nothing(owl, tiny_llama: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    before = names(owl)
    r = owl("quantize", "tiny-llama", "--to", "gguf-q4_0", "--eval-tokens", "128", "--max-ppl-increase", "0")
    assert r.code != 0 and "perplexity rose" in r.err and "nothing was stored" in r.err
    r = owl("quantize", "tiny-llama", "--to", "gguf-q8_0", "--eval-text", "/no/such/text.txt")
    assert r.code == 3 and "no such evaluation text file" in r.err  # checked before any export
    r = owl("quantize", "tiny-llama", "--to", "gguf-q3_x")
    assert r.code != 0 and "gguf-q8_0" in r.err and len(r.err.strip().splitlines()) == 1
    assert names(owl) == before


def test_adapter_to_gguf_lora_is_stored_as_an_adapter(owl, tiny_llama: Path, tiny_adapter: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_adapter, "--name", "tiny-lora").code == 0
    r = owl("quantize", "tiny-lora", "--to", "gguf-lora", "--json")
    assert r.code == 0, r.err
    info = owl("show", r.json()[0]["digest"], "--json").json()
    assert info["kind"] == "adapter" and info["format"] == "gguf"
    assert info["parents"][0]["relation"] == "quantized_from"


def test_a_full_disk_leaves_the_store_intact(owl, owl_home: Path, tiny_llama: Path) -> None:
    """A real write failure in a child `owl` limited to 96 KiB files (RLIMIT_FSIZE)."""
    assert owl("import", tiny_llama).code == 0
    before = names(owl)
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (98304, 98304))\n"
        "from owlkit.cli.main import main\n"
        "main(['quantize', 'tiny-llama', '--to', 'gguf-f32', '--no-eval'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OWL_HOME": str(owl_home)})  # fmt: skip
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "disk" in errors[0] and "Traceback" not in proc.stderr, proc.stderr
    assert names(owl) == before
    assert owl("verify", "tiny-llama").code == 0


def test_k_quants_go_through_llama_cpps_quantizer(owl, tiny_llama: Path, monkeypatch) -> None:
    assert owl("import", tiny_llama).code == 0
    r = owl("quantize", "tiny-llama", "--to", "gguf-q4_k_m", "--no-eval", "--json")
    assert r.code == 0, r.err
    (o,) = r.json()
    assert o["export"]["quantizer"] == "llama.cpp llama_model_quantize" and o["quality"] is None
    info = owl("show", o["digest"], "--json").json()
    assert info["facts"]["quantization"] == "gguf:Q4_K_M"
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as without the gguf extra
    r = owl("quantize", "tiny-llama", "--to", "gguf-q6_k", "--no-eval")
    assert r.code != 0 and "owlkit[gguf]" in r.err and len(r.err.strip().splitlines()) == 1

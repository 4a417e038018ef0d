"""The real models in ../shared through the real CLI (skipped with a reason when ../shared is absent)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from owltest import SMOLLM_GGUF, STORIES, need

pytestmark = pytest.mark.realmodel
OWL = str(Path(sys.executable).with_name("owl"))


def owl(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`owl --home HOME ARGS` in this process (a fresh interpreter per call cost a torch import each:
    about 20 s of this module), with its exit code and output as a subprocess would give them."""
    from owlkit.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = ["--home", str(home), *map(str, args)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess([OWL, *argv], code, out.getvalue(), err.getvalue())


def greedy_ids(model, tok, prompt: str, n: int) -> list[int]:
    import torch

    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1] :].tolist()


def test_stories260k_export_reproduces_greedy_tokens(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    home = tmp_path / "home"
    r = owl(home, "import", need(STORIES), "--name", "stories")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "exported"
    assert owl(home, "export", "stories", out).returncode == 0
    original = AutoModelForCausalLM.from_pretrained(STORIES)
    exported = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    a = greedy_ids(original, AutoTokenizer.from_pretrained(STORIES), "Once upon a time", 40)
    b = greedy_ids(exported, tok, "Once upon a time", 40)
    assert a == b
    assert "Lily" in tok.decode(b)
    run = owl(home, "run", "stories", "Once upon a time", "--max-tokens", "30")
    assert run.returncode == 0 and "there was a little girl named Lily" in run.stdout
    run = owl(home, "run", "stories", "Hi", "--chat")
    assert run.returncode == 2 and "stories:latest has no chat template" in run.stderr


@pytest.fixture(scope="module")
def smol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("smol") / "home"
    r = owl(home, "import", need(SMOLLM_GGUF), "--name", "smollm2")
    assert r.returncode == 0, r.stderr
    r = owl(home, "convert", "smollm2", "--to", "hf")
    assert r.returncode == 0, r.stderr
    return home


def test_smollm2_converted_matches_gguf_and_shares_identity(smol: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = json.loads(owl(smol, "show", "smollm2", "--json").stdout)
    hf = json.loads(owl(smol, "show", "smollm2-hf", "--json").stdout)
    assert hf["format"] == "hf" and hf["dtype"] == "float32" and hf["license"] == "Apache-2.0"
    assert hf["parents"][0]["relation"] == "converted_from" and hf["parents"][0]["digest"] == gguf["digest"]
    assert hf["recipe"]["name"] == "convert" and hf["recipe"]["inputs"] == {"source": gguf["digest"]}
    assert hf["base_identity"] == gguf["base_identity"]
    for key in ("tokenizer_digest", "chat_template_digest", "vocab_size", "shapes", "architecture"):
        assert hf["facts"][key] == gguf["facts"][key], key

    out = tmp_path / "hf"
    assert owl(smol, "export", "smollm2-hf", out).returncode == 0
    direct = AutoModelForCausalLM.from_pretrained(SMOLLM_GGUF.parent, gguf_file=SMOLLM_GGUF.name)
    direct_tok = AutoTokenizer.from_pretrained(SMOLLM_GGUF.parent, gguf_file=SMOLLM_GGUF.name)
    converted = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert greedy_ids(direct, direct_tok, "Once upon a time", 20) == greedy_ids(
        converted, tok, "Once upon a time", 20
    )


def test_smollm2_chat_through_owl_run(smol: Path) -> None:
    r = owl(smol, "run", "smollm2-hf", "What is the capital of France?", "--chat", "--max-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    r = owl(smol, "run", "smollm2", "What is the capital of France?", "--chat", "--max-tokens", "16")
    assert r.returncode == 0 and "Paris" in r.stdout


def test_convert_refuses_non_gguf_and_bad_dtype(smol: Path) -> None:
    r = owl(smol, "convert", "smollm2-hf", "--to", "hf")
    assert r.returncode == 5 and "not GGUF" in r.stderr
    r = owl(smol, "convert", "smollm2", "--dtype", "int3")
    assert r.returncode == 2 and "float32" in r.stderr


def test_adapter_on_gguf_of_same_identity_warns_and_other_identity_refused(
    smol: Path, tmp_path: Path
) -> None:
    """An adapter trained on the converted folder applies to the GGUF it came from (same base identity),
    with a warning that the quantization differs; on another model it is refused naming what differs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = tmp_path / "base"
    owl(smol, "export", "smollm2-hf", base_dir, "--link")
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir), LoraConfig(r=2, target_modules=["q_proj"])
    )
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "smollm2-hf"
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    assert owl(smol, "import", adapter, "--name", "smol-lora").returncode == 0
    info = json.loads(owl(smol, "show", "smol-lora", "--json").stdout)
    assert info["parents"][0]["name"] == "smollm2-hf:latest"
    r = owl(smol, "run", "smol-lora", "Hello", "--base", "smollm2", "--max-tokens", "3")
    assert r.returncode == 0, r.stderr
    assert "gguf:Q4_1" in r.stderr  # trained on unquantized weights, applied to the Q4_1 GGUF
    assert owl(smol, "import", need(STORIES), "--name", "stories").returncode == 0
    r = owl(smol, "run", "smol-lora", "Hello", "--base", "stories", "--max-tokens", "3")
    assert r.returncode == 5 and "vocab_size" in r.stderr and len(r.stderr.strip().splitlines()) == 1

"""Every store command end to end through the real CLI, on tiny models built in code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def test_import_ls_show_verify(owl, tiny_llama: Path) -> None:
    r = owl("import", tiny_llama)
    assert r.code == 0, r.err
    assert "imported tiny-llama" in r.out
    rows = owl("ls", "--json").json()
    assert len(rows) == 1 and rows[0]["names"] == ["tiny-llama:latest"]
    assert rows[0]["kind"] == "model" and rows[0]["format"] == "hf" and rows[0]["license"] == "Apache-2.0"
    info = owl("show", "tiny-llama", "--json").json()
    assert info["architecture"] == "llama" and info["parameters"] > 0 and info["dtype"] == "float32"
    assert info["facts"]["tokenizer_digest"].startswith("sha256:")
    assert info["facts"]["chat_template_digest"].startswith("sha256:")
    assert info["origin"]["source_path"] == str(tiny_llama.resolve())
    assert "README.md metadata" in info["license_detail"]["source"]
    paths = {f["path"]: f for f in info["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(paths)
    weights = paths["model.safetensors"]
    assert (
        weights["size"] == (tiny_llama / "model.safetensors").stat().st_size and len(weights["sha256"]) == 64
    )
    human = owl("show", "tiny-llama")
    assert "model.safetensors" in human.out and "Apache-2.0" in human.out
    assert owl("verify", "--all").code == 0
    assert owl("ls").code == 0


def test_reimport_is_idempotent_and_identical_files_stored_once(
    owl, owl_home: Path, tiny_llama: Path, tmp_path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_llama, copy)
    (copy / "extra.txt").write_text("one more file")
    a = owl("import", tiny_llama, "--json").json()
    b = owl("import", tiny_llama, "--name", "again", "--json").json()
    c = owl("import", copy, "--json").json()
    assert a["digest"] == b["digest"] != c["digest"]
    blobs = [p for p in (owl_home / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == len(list(tiny_llama.iterdir())) + 1  # only extra.txt is new


def test_verify_names_corrupt_and_missing_files(owl, owl_home: Path, tiny_llama: Path) -> None:
    info = owl("import", tiny_llama, "--json").json()
    shown = owl("show", info["digest"][:14], "--json").json()
    files = {f["path"]: f["sha256"] for f in shown["files"]}
    weights = owl_home / "blobs" / "sha256" / files["model.safetensors"][:2] / files["model.safetensors"][2:]
    weights.chmod(0o644)
    with open(weights, "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    config = owl_home / "blobs" / "sha256" / files["config.json"][:2] / files["config.json"][2:]
    config.unlink()
    r = owl("verify", "tiny-llama")
    assert r.code == 6
    assert "model.safetensors" in r.err and "corrupt" in r.err
    assert "config.json" in r.err and "missing" in r.err


def test_tag_rm_gc(owl, tiny_llama: Path, tiny_adapter: Path) -> None:
    owl("import", tiny_llama)
    assert owl("tag", "tiny-llama", "tiny:v1").code == 0
    assert sorted(owl("show", "tiny:v1", "--json").json()["names"]) == ["tiny-llama:latest", "tiny:v1"]
    owl("import", tiny_adapter, "--name", "lora")
    r = owl("rm", "tiny:v1")  # one of two names: only the name goes
    assert r.code == 0 and "untagged tiny:v1" in r.out and "tiny-llama:latest" in r.out
    assert owl("show", "tiny:v1").code == 3 and owl("show", "tiny-llama").code == 0
    r = owl("rm", "tiny-llama")
    assert r.code == 5 and "dependents" in r.err and "lora" in r.err
    assert owl("rm", "lora").code == 0
    assert owl("tag", "tiny-llama", "keep").code == 0
    assert owl("rm", "keep", "--untag").code == 0
    assert owl("rm", "tiny-llama").code == 0
    gc = owl("gc", "--json").json()
    assert gc["blobs_removed"] > 0
    assert owl("ls", "--json").json() == []
    assert owl("verify", "--all").code == 0


def test_unknown_and_invalid_refs(owl, tiny_llama: Path, tmp_path: Path) -> None:
    owl("import", tiny_llama)
    assert owl("import", tiny_llama, "--name", "deadbeef").code == 2  # would shadow digest prefixes
    (tmp_path / "afile").write_text("x")
    r = owl("export", "tiny-llama", tmp_path / "afile")
    assert r.code == 5 and "is a file" in r.err
    r = owl("show", "tiny-lama")
    assert r.code == 3 and "did you mean tiny-llama" in r.err and len(r.err.strip().splitlines()) == 1
    assert owl("import", tiny_llama, "--name", "bad name!").code == 2
    r = owl("import", "/nonexistent/model")
    assert r.code == 3 and "/nonexistent/model" in r.err
    assert owl("ls", "--kind", "nonsense").code == 2
    # a bad option value is a usage error (2), not an internal one
    assert owl("run", "tiny-llama", "hi", "--max-tokens", "many").code == 2
    assert owl("no-such-command").code == 2


def test_export_copies_and_edits_leave_store_intact(owl, tiny_llama: Path, tmp_path: Path) -> None:
    owl("import", tiny_llama)
    out = tmp_path / "exported"
    assert owl("export", "tiny-llama", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_llama.iterdir())
    (out / "config.json").write_text("{}")  # edit in place
    with open(out / "model.safetensors", "r+b") as f:
        f.write(b"garbage")
    assert owl("verify", "tiny-llama").code == 0
    assert owl("export", "tiny-llama", out).code == 5  # refuses a non-empty folder


def test_export_reloads_with_transformers(owl, tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    owl("import", tiny_llama)
    out = tmp_path / "linked"
    assert owl("export", "tiny-llama", out, "--link").code == 0
    a = AutoModelForCausalLM.from_pretrained(tiny_llama)
    b = AutoModelForCausalLM.from_pretrained(out)
    ids = AutoTokenizer.from_pretrained(out)("Once upon a time", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_adapter_edges_resolved_and_unresolved(owl, tiny_llama: Path, tiny_adapter: Path) -> None:
    r = owl("import", tiny_adapter, "--name", "early-lora", "--json")
    assert r.code == 0
    info = owl("show", "early-lora", "--json").json()
    assert info["kind"] == "adapter"
    assert info["parents"] == [
        {"relation": "adapter_of", "digest": None, "name": None, "unresolved": "tiny-llama"}
    ]
    owl("import", tiny_llama)
    owl("import", tiny_adapter, "--name", "lora")
    info = owl("show", "lora", "--json").json()
    base = owl("show", "tiny-llama", "--json").json()
    assert info["parents"][0]["digest"] == base["digest"] and info["parents"][0]["relation"] == "adapter_of"
    assert any(c["name"] == "lora:latest" for c in base["children"])
    shown = owl("show", "tiny-llama").out  # as a person reads it: one lineage table, edges named
    assert "lineage" in shown and "childre:" not in shown
    assert any(line.split()[:3] == ["child", "adapter_of", "lora:latest"] for line in shown.splitlines())


def test_show_renders_the_recipe_as_a_table(owl, tiny_llama: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("quantize", "tiny-llama", "--to", "gguf-q8_0", "--no-eval", "--name", "q8").code == 0
    rows = [line.split() for line in owl("show", "q8").out.splitlines()]
    assert ["recipe:", "quantize"] in rows and ["to", "gguf-q8_0"] in rows and ["seed", "-"] in rows
    assert ["parent", "quantized_from", "tiny-llama:latest"] in rows
    assert not any("{" in word for row in rows for word in row)  # no raw Python dict


def test_run_streams_text_and_adapter_checked_against_base(owl, tiny_llama: Path, tiny_other_adapter) -> None:
    owl("import", tiny_llama)
    r = owl("run", "tiny-llama", "Once upon a time", "--max-tokens", "5")
    assert r.code == 0 and r.out.strip()
    r2 = owl("run", "tiny-llama", "Once upon a time", "--max-tokens", "5", "--chat")
    assert r2.code == 0
    owl("import", tiny_other_adapter["base"], "--name", "wide")
    owl("import", tiny_other_adapter["adapter"], "--name", "wide-lora")
    r = owl("run", "wide-lora", "hi", "--base", "tiny-llama", "--max-tokens", "2")
    assert r.code == 5 and "shapes" in r.err
    r = owl("run", "wide-lora", "hi", "--backend", "gguf")  # one option name in run, chat and serve
    assert r.code == 5 and "is a model/hf, not a GGUF model" in r.err and len(r.err.strip().splitlines()) == 1


@pytest.fixture(scope="session")
def tiny_other_adapter(tmp_path_factory, tiny_llama_other: Path) -> dict[str, Path]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter2") / "wide-lora"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_other), LoraConfig(r=2))
    model.save_pretrained(out)
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "wide"
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    return {"base": tiny_llama_other, "adapter": out}

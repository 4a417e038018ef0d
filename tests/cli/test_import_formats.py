"""Import detection of every kind owlkit stores: datasets, single files, pipelines, pickles."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from owltest import ALPACA, SMOLLM_GGUF, need


def test_import_single_safetensors(owl, tiny_llama: Path) -> None:
    r = owl("import", tiny_llama / "model.safetensors", "--name", "bare", "--json")
    assert r.code == 0
    assert r.json()["format"] == "safetensors" and r.json()["parameters"] > 0


@pytest.mark.realmodel
def test_import_alpaca_dataset_with_its_license(owl) -> None:
    r = owl("import", need(ALPACA), "--name", "alpaca", "--json")
    assert r.code == 0, r.err
    info = owl("show", "alpaca", "--json").json()
    assert info["kind"] == "dataset" and info["facts"]["data_format"] == "alpaca"
    assert info["license"] == "CC-BY-NC-4.0"


@pytest.mark.parametrize(
    "rows,fmt",
    [
        (
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
            "openai-messages",
        ),
        ([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}], "sharegpt"),
        ([{"text": "plain text"}], "text"),
    ],
)
def test_import_jsonl_formats(owl, tmp_path: Path, rows, fmt) -> None:
    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = owl("import", f, "--json")
    assert r.code == 0, r.err
    assert owl("show", r.json()["digest"][:16], "--json").json()["facts"]["data_format"] == fmt


def test_import_diffusers_pipeline(owl, tmp_path: Path) -> None:
    pipe = tmp_path / "pipe"
    (pipe / "unet").mkdir(parents=True)
    (pipe / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    (pipe / "unet" / "config.json").write_text("{}")
    r = owl("import", pipe, "--json")
    assert r.code == 0, r.err
    assert r.json()["kind"] == "pipeline"
    assert owl("verify", r.json()["digest"][:12]).code == 0


@pytest.mark.realmodel
def test_import_real_gguf(owl) -> None:
    r = owl("import", need(SMOLLM_GGUF), "--name", "smollm2", "--json")
    assert r.code == 0, r.err
    info = owl("show", "smollm2", "--json").json()
    assert info["format"] == "gguf" and info["architecture"] == "llama"
    assert info["parameters"] == 134_515_008 and info["quantization"] == "gguf:Q4_1"
    assert info["license"] == "Apache-2.0" and info["license_detail"]["source"] == "GGUF general.license"
    assert info["facts"]["vocab_size"] == 49152 and info["facts"]["chat_template_digest"]
    assert info["files"][0]["sha256"] == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_refused_and_never_runs(owl, owl_home: Path, tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    evil = tmp_path / "pytorch_model.bin"
    evil.write_bytes(pickle.dumps({"w": _Payload(marker)}, protocol=4))
    r = owl("import", evil)
    assert r.code == 5 and "--convert-pickle" in r.err and "pytorch_model.bin" in r.err
    r = owl("import", evil, "--convert-pickle")
    assert r.code == 5 and "pytorch_model.bin" in r.err
    assert not marker.exists()
    assert owl("ls", "--json").json() == []  # nothing stored from a refused import


def test_benign_pickle_converted_with_edge(owl, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(3)}
    ckpt = tmp_path / "weights.pt"
    torch.save(sd, ckpt)
    r = owl("import", ckpt, "--convert-pickle", "--name", "conv", "--json")
    assert r.code == 0, r.err
    info = owl("show", "conv", "--json").json()
    assert info["format"] == "safetensors" and info["files"][0]["path"] == "weights.safetensors"
    assert info["parents"][0]["relation"] == "converted_from"
    assert info["recipe"]["name"] == "convert-pickle"
    original = owl("show", info["parents"][0]["digest"][7:20], "--json").json()
    assert original["format"] == "pickle"
    import hashlib

    assert original["files"][0]["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    out = tmp_path / "out"
    owl("export", "conv", out)
    back = load_file(out / "weights.safetensors")
    assert all(torch.equal(back[k], v) for k, v in sd.items())


def test_invalid_safetensors_one_line_error(owl, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    r = owl("import", bad)
    assert r.code == 4 and "bad.safetensors" in r.err and len(r.err.strip().splitlines()) == 1


def test_hf_folder_with_pickle_weights_converted_and_loadable(owl, tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "pickled-llama"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").unlink()
    original = AutoModelForCausalLM.from_pretrained(tiny_llama)
    torch.save(original.state_dict(), folder / "pytorch_model.bin")
    r = owl("import", folder)
    assert r.code == 5 and "pytorch_model.bin" in r.err and "--convert-pickle" in r.err
    assert owl("ls", "--json").json() == []
    r = owl("import", folder, "--convert-pickle", "--name", "unpickled", "--json")
    assert r.code == 0, r.err
    info = owl("show", "unpickled", "--json").json()
    paths = [f["path"] for f in info["files"]]
    assert "model.safetensors" in paths and "pytorch_model.bin" not in paths
    assert info["parents"][0]["relation"] == "converted_from" and info["flags"] == []
    out = tmp_path / "out"
    owl("export", "unpickled", out)
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert torch.equal(original(ids).logits, reloaded(ids).logits)

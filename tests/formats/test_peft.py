"""owlkit.formats.peft: a real LoRA adapter saved by peft, and broken ones."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlkit.errors import InvalidFile
from owlkit.formats.peft import inspect_peft


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_config(folder: Path, **changes: object) -> None:
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(changes)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))


def test_real_lora_adapter(tiny_adapter: Path) -> None:
    from safetensors import safe_open

    got = inspect_peft(tiny_adapter)
    assert (got.kind, got.format, got.base_ref) == ("adapter", "peft", "tiny-llama")
    with safe_open(str(tiny_adapter / "adapter_model.safetensors"), "np") as f:
        expected = sum(f.get_tensor(k).size for k in f.keys())  # noqa: SIM118
    cfg = json.loads((tiny_adapter / "adapter_config.json").read_text())
    assert got.facts == {
        "peft_type": "LORA",
        "r": 4,
        "lora_alpha": 8,
        "use_rslora": False,
        "use_dora": False,
        "target_modules": ["q_proj", "v_proj"],
        "task_type": cfg.get("task_type"),
        "modules_to_save": None,
        "parameters": expected,
        "dtype": "float32",
    }
    assert expected > 0
    assert "adapter_config.json" in got.files and "adapter_model.safetensors" in got.files
    assert got.flags == [] and got.origin.source_path == str(tiny_adapter.resolve())


def test_card_license_and_base_revision(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    (folder / "README.md").write_text("---\nlicense: llama3.2\nbase_model: meta-llama/Llama-3.2-1B\n---\n")
    edit_config(folder, revision="main", target_modules=["v_proj", "q_proj", "o_proj"])
    got = inspect_peft(folder)
    assert got.license.id == "LicenseRef-llama3.2"
    assert got.side["card_base_model"] == "meta-llama/Llama-3.2-1B" and got.side["base_revision"] == "main"
    assert got.facts["target_modules"] == ["o_proj", "q_proj", "v_proj"]


def test_regex_target_modules_kept(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    edit_config(folder, target_modules=r".*\.(q|v)_proj")
    assert inspect_peft(folder).facts["target_modules"] == r".*\.(q|v)_proj"


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"peft_type": None}, "no 'peft_type'"),
        ({"r": -1}, "'r' must be a positive integer"),
        ({"r": True}, "'r' must be a positive integer"),
        ({"lora_alpha": "8"}, "'lora_alpha' must be a number"),
        ({"target_modules": [1, 2]}, "'target_modules' must be a list"),
        ({"use_dora": "yes"}, "'use_dora' must be true or false"),
        ({"base_model_name_or_path": 5}, "'base_model_name_or_path' must be a string"),
    ],
)
def test_bad_config_values(tiny_adapter: Path, tmp_path: Path, changes: dict, match: str) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    edit_config(folder, **changes)
    with pytest.raises(InvalidFile, match=f"adapter_config.json: {match}"):
        inspect_peft(folder)


def test_config_not_an_object(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    (folder / "adapter_config.json").write_text('["LORA"]')
    with pytest.raises(InvalidFile, match=r"adapter_config\.json: expected a JSON object"):
        inspect_peft(folder)


def test_missing_weights(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    (folder / "adapter_model.safetensors").unlink()
    with pytest.raises(InvalidFile, match=r"no adapter_model\.safetensors"):
        inspect_peft(folder)


def test_pickle_only_adapter_flagged(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04not loaded")
    got = inspect_peft(folder)
    assert "pickle-weights" in got.flags and got.side["pickle_weights"] == ["adapter_model.bin"]
    assert got.facts["parameters"] is None


def test_truncated_weights(tiny_adapter: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_adapter, tmp_path / "a")
    data = (folder / "adapter_model.safetensors").read_bytes()
    (folder / "adapter_model.safetensors").write_bytes(data[:-7])
    with pytest.raises(InvalidFile, match=r"adapter_model\.safetensors"):
        inspect_peft(folder)

"""bitsandbytes variants: NF4 and int8 folders that transformers reloads quantized with no extra
arguments, whose logits stay close to the float32 model's, written byte for byte the same every time,
with the source's tokenizer files beside them; bad inputs fail with one-line owlkit errors and leave
nothing behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from owlkit.errors import InvalidFile, NotFound, Refused, UsageError
from owlkit.runtime.load import keep_4bit_on_float_path

pytest.importorskip("bitsandbytes")

# Measured on the tiny random Llama (logits up to about 0.34 in size): NF4 2.7e-2, int8 2.6e-3.
TOLERANCE = {"nf4": 6e-2, "int8": 1e-2}
LAYER = {"nf4": "Linear4bit", "int8": "Linear8bitLt"}


def export(src: Path, out: Path, mode: str) -> dict:
    from owlkit.quantize.bnb import export_bnb

    return export_bnb(src, out, mode)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_reloads_quantized_and_close(tiny_llama: Path, tmp_path: Path, mode: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / mode
    written = export(tiny_llama, out, mode)

    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == written
    assert written["quant_method"] == "bitsandbytes"
    if mode == "nf4":
        assert written["load_in_4bit"] and written["bnb_4bit_quant_type"] == "nf4"
        assert written["bnb_4bit_use_double_quant"] and written["bnb_4bit_compute_dtype"] == "float32"
    else:
        assert written["load_in_8bit"] and not written["load_in_4bit"]
    assert "transformers_version" not in config
    assert "transformers_version" not in json.loads((out / "generation_config.json").read_text())
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (tiny_llama / name).read_bytes(), name

    # No quantization_config passed: the folder alone says how to load it. Its 4-bit layers run on
    # bitsandbytes' float path, as owlkit loads them: the AVX512-BF16 path cannot run these widths.
    model = keep_4bit_on_float_path(AutoModelForCausalLM.from_pretrained(out, device_map="cpu"))
    quantized = [n for n, m in model.named_modules() if type(m).__name__ == LAYER[mode]]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down in each of the two layers
    assert type(model.lm_head).__name__ == "Linear"  # the output head stays unquantized

    reference = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    ids = torch.tensor([[0, 5, 17, 42, 8, 63, 2, 90]])
    with torch.no_grad():
        expected, got = reference(ids).logits, model(ids).logits
    assert not torch.equal(expected, got)  # really quantized
    assert (expected - got).abs().max().item() < TOLERANCE[mode]


@pytest.mark.parametrize("mode", ["nf4", "int8"])
def test_same_bytes_twice(tiny_llama: Path, tmp_path: Path, mode: str) -> None:
    export(tiny_llama, tmp_path / "a", mode)
    export(tiny_llama, tmp_path / "b", mode)
    assert digests(tmp_path / "a") == digests(tmp_path / "b")


def test_bad_inputs(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(NotFound, match="no such model folder"):
        export(tmp_path / "absent", out, "nf4")

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidFile, match=r"no config\.json"):
        export(empty, out, "nf4")

    garbage = tmp_path / "garbage"
    shutil.copytree(tiny_llama, garbage)
    (garbage / "config.json").write_text("{not json")
    with pytest.raises(InvalidFile, match=r"config\.json: not valid JSON"):
        export(garbage, out, "int8")

    (garbage / "config.json").write_bytes((tiny_llama / "config.json").read_bytes())
    (garbage / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage}")
    for mode in ("nf4", "int8"):
        with pytest.raises(InvalidFile, match=r"model\.safetensors"):
            export(garbage, out, mode)

    (garbage / "model.safetensors").unlink()
    (garbage / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(Refused, match="pickle"):
        export(garbage, out, "nf4")

    with pytest.raises(UsageError, match="fp4"):
        export(tiny_llama, out, "fp4")
    assert not out.exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an empty folder"):
        export(tiny_llama, taken, "nf4")
    assert (taken / "keep.txt").read_text() == "mine"


def test_refuses_a_quantized_source(tiny_llama: Path, tmp_path: Path) -> None:
    export(tiny_llama, tmp_path / "q", "int8")
    with pytest.raises(Refused, match="quantization_config already"):
        export(tmp_path / "q", tmp_path / "again", "nf4")


def test_interrupted_export_leaves_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    from owlkit.quantize.bnb import export_bnb

    def stop_after_weights(message: str) -> None:
        if message.startswith("copying"):  # model.safetensors is on disk by now
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export_bnb(tiny_llama, tmp_path / "new", "nf4", progress=stop_after_weights)
    assert not (tmp_path / "new").exists()

    given = tmp_path / "given"
    given.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export_bnb(tiny_llama, given, "int8", progress=stop_after_weights)
    assert given.is_dir() and not any(given.iterdir())

"""`owl diff` through the real CLI on tiny random Llamas, adapters and their GGUF variants, and the tensor
comparison `owl rebuild` reuses (compare_weight_files, first_tensor_difference), checked against numpy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from owlkit.errors import UsageError
from owlkit.formats import tensor_diff as owldiff
from owlkit.formats.tensor_diff import compare_weight_files, first_tensor_difference
from owltest import build_adapter

PERTURBED = "model.layers.1.mlp.down_proj.weight"


def imported(owl, folder: Path, name: str) -> dict:
    r = owl("import", folder, "--name", name, "--json")
    assert r.code == 0, r.err
    return owl("show", name, "--json").json()


def diff_json(owl, a: str, b: str) -> dict:
    r = owl("diff", a, b, "--json")
    assert r.code == 0, r.err
    return r.json()


def blob(owl, name: str, suffix: str) -> Path:
    """The stored file of an artifact with this suffix (content-addressed, no extension)."""
    from owlkit.store import open_store

    info = owl("show", name, "--json").json()
    sha = next(f["sha256"] for f in info["files"] if f["path"].endswith(suffix))
    return open_store().blobs.path(sha)


@pytest.fixture(scope="module")
def perturbed(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A copy of the tiny Llama with one weight of one tensor moved by 0.25; (folder, exact max diff)."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path_factory.mktemp("perturbed") / "tiny-perturbed"
    shutil.copytree(tiny_llama, out)
    tensors = load_file(out / "model.safetensors")
    w = tensors[PERTURBED].copy()
    old = w[3, 5]
    w[3, 5] = old + np.float32(0.25)
    tensors[PERTURBED] = w
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out, abs(float(w[3, 5]) - float(old))


def test_an_artifact_against_itself_is_identical(owl, tiny_llama: Path) -> None:
    imported(owl, tiny_llama, "tiny")
    r = owl("diff", "tiny", "tiny")
    assert r.code == 0 and "same artifact" in r.out and "nothing differs" in r.out
    d = diff_json(owl, "tiny", "tiny")
    assert d["identical"] is True and d["files"]["same"] == 7
    assert not d["files"]["changed"] and not d["tensors"]["differing"] and not d["lineage"]["only_a"]
    assert set(d) == {
        "a",
        "b",
        "identical",
        "files",
        "tensors",
        "configs",
        "card",
        "manifest",
        "facts",
        "recipe",
        "lineage",
        "notes",
    }


def test_one_perturbed_tensor_is_named_with_its_max_difference(owl, tiny_llama: Path, perturbed) -> None:
    folder, delta = perturbed
    imported(owl, tiny_llama, "tiny")
    imported(owl, folder, "tiny-perturbed")
    d = diff_json(owl, "tiny", "tiny-perturbed")
    assert d["identical"] is False
    assert [f["path"] for f in d["files"]["changed"]] == ["model.safetensors"]
    assert not d["files"]["added"] and not d["files"]["removed"] and d["files"]["same"] == 6
    t = d["tensors"]
    assert t["pairs"] == [{"format": "safetensors", "a": ["model.safetensors"], "b": ["model.safetensors"]}]
    assert [x["name"] for x in t["differing"]] == [PERTURBED]
    (only,) = t["differing"]
    assert only["max_abs"] == pytest.approx(delta, rel=1e-12)
    assert only["mean_abs"] == pytest.approx(delta / (32 * 64), rel=1e-9)
    assert only["note"] == "values differ" and only["dtype_a"] == only["dtype_b"] == "F32"
    assert t["same"] == t["compared"] - 1
    layers = {x["layer"]: x for x in t["layers"]}
    assert layers[1]["differing"] == 1 and layers[1]["max_abs"] == only["max_abs"]
    assert layers[0]["differing"] == 0 and layers[0]["max_abs"] == 0.0
    assert d["configs"] == {} and d["card"] is None and not d["recipe"]["a"] and not d["recipe"]["b"]
    text = owl("diff", "tiny", "tiny-perturbed").out
    assert PERTURBED in text and "values differ" in text and "1 changed" in text

    # the same answer from the library on the stored files, and the first difference in file order
    a, b = blob(owl, "tiny", ".safetensors"), blob(owl, "tiny-perturbed", ".safetensors")
    diffs = compare_weight_files(a, b)
    assert [x.name for x in diffs if x.differs] == [PERTURBED]
    first = first_tensor_difference(a, b)
    assert first is not None and first.name == PERTURBED and first.max_abs == only["max_abs"]
    assert first_tensor_difference(a, a) is None


def test_config_and_card_changes_name_their_keys(owl, tiny_llama: Path, tmp_path: Path) -> None:
    edited = tmp_path / "tiny-edited"
    shutil.copytree(tiny_llama, edited)
    cfg = json.loads((edited / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    cfg["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    del cfg["pad_token_id"]
    (edited / "config.json").write_text(json.dumps(cfg, indent=2))
    (edited / "README.md").write_text("---\nlicense: mit\ntags: [owl]\n---\n# tiny-llama\n")
    imported(owl, tiny_llama, "tiny")
    imported(owl, edited, "tiny-edited")
    d = diff_json(owl, "tiny", "tiny-edited")
    assert sorted(f["path"] for f in d["files"]["changed"]) == ["README.md", "config.json"]
    assert d["tensors"]["pairs"] and not d["tensors"]["differing"]  # same weights, compared anyway
    c = d["configs"]["config.json"]
    assert c["changed"]["rms_norm_eps"]["b"] == 1e-5
    assert set(c["added"]) >= {"rope_scaling.rope_type", "rope_scaling.factor"}
    assert "pad_token_id" in c["removed"]
    assert d["card"]["changed"] == {"license": {"a": "apache-2.0", "b": "mit"}}
    assert d["card"]["added"] == {"tags": ["owl"]}
    assert d["manifest"]["changed"] == {"license": {"a": "Apache-2.0", "b": "MIT"}}
    text = owl("diff", "tiny", "tiny-edited").out
    assert "rope_scaling.factor" in text and "card metadata" in text


def test_models_of_different_shapes(owl, tiny_llama: Path, tiny_llama_other: Path) -> None:
    imported(owl, tiny_llama, "tiny")
    imported(owl, tiny_llama_other, "wide")
    d = diff_json(owl, "tiny", "wide")
    by = {x["name"]: x for x in d["tensors"]["differing"]}
    emb = by["model.embed_tokens.weight"]
    assert emb["shape_a"] == [96, 32] and emb["shape_b"] == [96, 48]
    assert emb["note"] == "shape differs" and emb["max_abs"] is None
    assert d["configs"]["config.json"]["changed"]["hidden_size"] == {"a": 32, "b": 48}
    assert d["facts"]["changed"]["shapes.hidden"] == {"a": 32, "b": 48}
    assert all(x["max_abs"] is None for x in d["tensors"]["layers"] if x["differing"] == x["tensors"])


def test_two_adapters_of_one_base(owl, tiny_llama: Path, tiny_adapter: Path, tmp_path: Path) -> None:
    other = build_adapter(tiny_llama, tmp_path / "lora-r8", "tiny-llama", seed=5, r=8)
    imported(owl, tiny_llama, "tiny-llama")
    imported(owl, tiny_adapter, "lora-a")
    imported(owl, other, "lora-b")
    d = diff_json(owl, "lora-a", "lora-b")
    assert d["configs"]["adapter_config.json"]["changed"]["r"] == {"a": 4, "b": 8}
    differing = d["tensors"]["differing"]
    assert differing and all(x["note"] == "shape differs" for x in differing)
    assert {x["name"].rsplit(".", 2)[-2] for x in differing} == {"lora_A", "lora_B"}
    assert d["lineage"]["same"] and d["lineage"]["same"][0]["relation"] == "adapter_of"
    assert not d["lineage"]["only_a"] and not d["lineage"]["only_b"]


def test_gguf_variants_recipes_and_lineage(
    owl, tiny_llama: Path, tiny_llama_other: Path, tmp_path: Path
) -> None:
    pytest.importorskip("gguf", reason="gguf-py (the ml extra) is not installed")
    imported(owl, tiny_llama, "tiny")
    imported(owl, tiny_llama_other, "wide")
    for args in (("tiny", "--to", "gguf-q8_0", "--to", "gguf-f16"), ("wide", "--to", "gguf-q8_0")):
        r = owl("quantize", *args, "--no-eval")
        assert r.code == 0, r.err
    d = diff_json(owl, "tiny-q8-0", "tiny-f16")
    # paired by format although the file names differ
    assert d["tensors"]["pairs"] == [{"format": "gguf", "a": ["gguf-q8_0.gguf"], "b": ["gguf-f16.gguf"]}]
    differing = d["tensors"]["differing"]
    assert len(differing) == 16  # every matrix: Q8_0 against F16; the F32 norms are the same
    assert all(
        x["note"] == "dtype differs" and (x["dtype_a"], x["dtype_b"]) == ("Q8_0", "F16") for x in differing
    )
    assert all(0 < x["mean_abs"] <= x["max_abs"] < 0.01 for x in differing)
    assert d["recipe"]["changed"] == {"params.to": {"a": "gguf-q8_0", "b": "gguf-f16"}}
    assert d["lineage"]["same"][0]["relation"] == "quantized_from" and not d["lineage"]["only_a"]
    assert d["facts"]["changed"]["dtype"] == {"a": "Q8_0", "b": "F16"}

    d = diff_json(owl, "tiny-q8-0", "wide-q8-0")
    tiny, wide = (owl("show", n, "--json").json()["digest"] for n in ("tiny", "wide"))
    assert d["recipe"]["changed"] == {"inputs.source": {"a": tiny, "b": wide}}
    assert [p["digest"] for p in d["lineage"]["only_a"]] == [tiny]
    assert [p["digest"] for p in d["lineage"]["only_b"]] == [wide]
    text = owl("diff", "tiny-q8-0", "wide-q8-0").out
    assert "inputs.source" in text and "tiny:latest" in text and "only B" in text

    d = diff_json(owl, "tiny", "tiny-q8-0")
    assert d["lineage"]["direct"] == ["B quantized_from A"]
    assert d["recipe"]["a"] is False and d["recipe"]["b"] is True
    assert any("only A has safetensors weights" in n for n in d["notes"])

    # chunked reading gives what whole tensors give, across Q8_0 block boundaries
    import gguf

    from owlkit.formats.gguf import read_gguf

    a, b = blob(owl, "tiny-q8-0", ".gguf"), blob(owl, "tiny-f16", ".gguf")
    whole = {x.name: x for x in compare_weight_files(a, b)}
    ga, gb = read_gguf(a), read_gguf(b)
    ta = next(t for t in ga.tensors if t.name == "blk.1.ffn_down.weight")
    tb = next(t for t in gb.tensors if t.name == ta.name)
    va = gguf.quants.dequantize(
        np.fromfile(a, np.uint8, ta.nbytes, offset=ta.offset), gguf.GGMLQuantizationType.Q8_0
    )
    vb = np.fromfile(b, np.float16, tb.numel, offset=tb.offset).astype(np.float64)
    exact = np.abs(va.reshape(-1).astype(np.float64) - vb)
    assert whole[ta.name].max_abs == exact.max()
    assert whole[ta.name].mean_abs == pytest.approx(exact.mean(), rel=1e-12)
    first = first_tensor_difference(a, b)
    assert first is not None and first.name == next(n for n, x in whole.items() if x.differs)
    assert first.max_abs == whole[first.name].max_abs
    with pytest.MonkeyPatch.context() as m:
        m.setattr(owldiff, "CHUNK_ELEMENTS", 64)
        chunked = {x.name: x for x in compare_weight_files(a, b)}
    assert {n: (x.max_abs, x.note) for n, x in chunked.items()} == {
        n: (x.max_abs, x.note) for n, x in whole.items()
    }
    assert all(chunked[n].mean_abs == pytest.approx(x.mean_abs, rel=1e-12) for n, x in whole.items())
    # one Q8_0 block changed: only that block is decoded, and its difference is exact
    changed = tmp_path / "changed.gguf"
    data = bytearray(a.read_bytes())
    data[ta.offset + 34 * 5 + 7] ^= 0x40  # one int8 quant of block 5 (after its 2-byte fp16 scale)
    changed.write_bytes(bytes(data))
    vc = gguf.quants.dequantize(
        np.fromfile(changed, np.uint8, ta.nbytes, offset=ta.offset), gguf.GGMLQuantizationType.Q8_0
    )
    exact = np.abs(va.reshape(-1).astype(np.float64) - vc.reshape(-1))
    (one,) = [x for x in compare_weight_files(a, changed) if x.differs]
    assert one.name == ta.name and one.note == "values differ" and one.dtype_a == one.dtype_b == "Q8_0"
    assert one.max_abs == exact.max() > 0 and one.mean_abs == pytest.approx(exact.mean(), rel=1e-12)
    with pytest.raises(UsageError, match="two files of one format"):
        compare_weight_files(a, blob(owl, "tiny", ".safetensors"))


def test_unknown_ref_is_one_line(owl, tiny_llama: Path) -> None:
    imported(owl, tiny_llama, "tiny")
    r = owl("diff", "tiny", "nosuch")
    assert r.code == 3 and "'nosuch' not found" in r.err and len(r.err.strip().splitlines()) == 1

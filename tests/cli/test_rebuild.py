"""`owl rebuild`: every recipe re-derives its artifact bit for bit in a fresh process, and each way a
rebuild can fail to reproduce (a tampered blob, a changed input, a changed recipe param, another thread
count) is reported as exactly that."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

TUNE = ("--steps", "3", "--batch-size", "2", "--seq-len", "64", "--r", "4")


@pytest.fixture
def tuned(owl, tiny_llama: Path, tiny_alpaca: Path) -> str:
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "data").code == 0
    r = owl("tune", "tiny-llama", "data", "--method", "lora", *TUNE, "--name", "t-lora")
    assert r.code == 0, r.err
    return "t-lora"


def rebuild(owl, *args: str) -> tuple[int, dict]:
    r = owl("rebuild", *args, "--json")
    assert r.out, r.err
    return r.code, r.json()


def _catalog(owl_home: Path) -> sqlite3.Connection:
    return sqlite3.connect(owl_home / "catalog.db")


def _edit_manifest(owl, owl_home: Path, ref: str, edit) -> None:
    """Change a stored manifest in the catalog behind owlkit's back (what tampering looks like)."""
    digest = owl("show", ref, "--json").json()["digest"]
    with _catalog(owl_home) as db:
        (text,) = db.execute("SELECT manifest FROM artifacts WHERE digest = ?", (digest,)).fetchone()
        manifest = json.loads(text)
        edit(manifest)
        db.execute("UPDATE artifacts SET manifest = ? WHERE digest = ?", (json.dumps(manifest), digest))


def _blob(owl, ref: str, path: str) -> Path:
    from owlkit.store import open_store

    store = open_store()
    rec = store.find(ref)
    sha = next(f.sha256 for f in rec.manifest.files if f.path == path)
    return store.blobs.path(sha)


def test_lora_tune_rebuilds_identically(owl, tuned: str) -> None:
    code, report = rebuild(owl, tuned)
    assert code == 0 and report["verdict"] == "identical", report
    assert set(report["files"].values()) == {"same"}
    assert report["steps"] == {"recorded": 3, "rebuilt": 3}
    assert report["environment"] == []
    assert report["rebuilt_digest"] == report["digest"]


def test_merge_convert_and_q8_quantize_rebuild_identically(owl, tuned: str, tiny_llama: Path) -> None:
    assert owl("merge", "tiny-llama", tuned, "--name", "merged").code == 0
    assert owl("quantize", "merged", "--to", "gguf-q8_0", "--no-eval", "--name", "m-q8").code == 0
    assert owl("convert", "m-q8", "--to", "hf", "--name", "m-q8-hf").code == 0
    for ref in ("merged", "m-q8", "m-q8-hf"):
        code, report = rebuild(owl, ref)
        assert code == 0 and report["verdict"] == "identical", (ref, report)


def test_a_tampered_blob_is_named_with_its_tensor(owl, tuned: str) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    blob = _blob(owl, tuned, "adapter_model.safetensors")
    tensors = load_file(blob)
    name = sorted(tensors)[1]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] += np.float32(0.25)
    blob.chmod(0o644)
    save_file(tensors, blob)
    code, report = rebuild(owl, tuned)
    assert code == 11 and report["verdict"] == "different"
    assert any("adapter_model.safetensors" in p for p in report["stored_problems"])
    first = report["first_difference"]
    assert first["file"] == "adapter_model.safetensors" and first["tensor"] == name
    assert first["max_abs"] == pytest.approx(0.25, abs=1e-6)


def test_a_changed_input_dataset_is_named(owl, tuned: str) -> None:
    blob = _blob(owl, "data", owl("show", "data", "--json").json()["files"][0]["path"])
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"owl", b"cat"))
    r = owl("rebuild", tuned)
    assert r.code == 6 and "input data changed" in r.err and len(r.err.strip().splitlines()) == 1


def test_a_changed_recipe_param_is_reported_as_the_difference(owl, owl_home: Path, tuned: str) -> None:
    _edit_manifest(owl, owl_home, tuned, lambda m: m["recipe"]["params"].update(lr=0.05))
    code, report = rebuild(owl, tuned)
    assert code == 11 and report["environment"] == []
    assert report["first_difference"]["file"] == "adapter_model.safetensors"
    assert report["first_difference"]["max_abs"] > 0


def test_another_thread_count_is_an_environment_difference(owl, tuned: str) -> None:
    from owlkit.store import open_store

    recorded = open_store().find(tuned).side["training"]["threads"]
    other = 1 if recorded != 1 else 2
    code, report = rebuild(owl, tuned, "--threads", str(other))
    assert f"threads: recorded {recorded}, now {other} (--threads {other})" in report["environment"]
    assert code in (0, 10)  # the tiny model may or may not round differently; the cause is named either way


def test_what_cannot_be_rebuilt_says_so(owl, owl_home: Path, tuned: str) -> None:
    r = owl("rebuild", "tiny-llama")
    assert r.code == 5 and "was imported" in r.err and "nothing to rebuild" in r.err
    _edit_manifest(owl, owl_home, tuned, lambda m: m["recipe"].update(schema=99))
    r = owl("rebuild", tuned)
    assert r.code == 5 and "schema 99" in r.err and "upgrade owlkit" in r.err


def test_a_missing_input_is_named_with_its_origin(owl, tuned: str) -> None:
    assert owl("rm", "data", "--force").code == 0
    r = owl("rebuild", tuned)
    assert r.code == 3 and "input data" in r.err and "data:latest" in r.err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["qlora", "full"])
def test_qlora_and_full_tunes_rebuild_identically(
    owl, tiny_llama: Path, tiny_alpaca: Path, method: str
) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "data").code == 0
    assert owl("tune", "tiny-llama", "data", "--method", method, *TUNE, "--name", "t").code == 0
    code, report = rebuild(owl, "t")
    assert code == 0 and report["verdict"] == "identical", report


def test_merge_adapters_rebuilds_identically(owl, tuned: str, tiny_llama: Path, tmp_path: Path) -> None:
    from owltest import build_adapter

    other = build_adapter(
        tiny_llama, tmp_path / "other", "tiny-llama", seed=9, r=4, target_modules="all-linear"
    )
    assert owl("import", other, "--name", "other").code == 0
    r = owl("merge-adapters", tuned, "other", "--weights", "0.7,0.3", "--method", "dare_ties", "--seed", "3",
            "--name", "combo")  # fmt: skip
    assert r.code == 0, r.err
    code, report = rebuild(owl, "combo")
    assert code == 0 and report["verdict"] == "identical", report

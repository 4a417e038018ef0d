"""The recipes layer through the Python API: `owl rebuild` and `owl diff` print the results' to_dict(),
a `--convert-pickle` import is a recipe that rebuilds bit for bit, and one registry knows every recipe
name that any code stores."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import os
import pkgutil
import shutil
from pathlib import Path

import pytest

from owlkit import Owl
from owlkit.api import DiffReport, RebuildResult

SRC = Path(__file__).resolve().parents[2] / "src" / "owlkit"


def _pickle(path: Path, seed: int) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    torch.save({"w": torch.randn(4, 6, generator=g), "b": torch.randn(6, generator=g)}, path)
    return path


def _blob(api: Owl, ref: str, rel: str) -> Path:
    from owlkit.store.store import Store

    store = Store(api.home, write=False)
    try:
        sha = next(f.sha256 for f in store.find(ref).manifest.files if f.path == rel)
        return store.blobs.path(sha)
    finally:
        store.close()


def test_rebuild_and_diff_json_is_to_dict(owl, owl_home: Path, tmp_path: Path) -> None:
    api = Owl(owl_home)
    for name, seed in (("conv-a", 0), ("conv-b", 1)):
        ckpt = _pickle(tmp_path / name / "w.pt", seed)  # one file name: the recipes differ in their input
        assert owl("import", ckpt, "--convert-pickle", "--name", name).code == 0

    rebuilt = api.rebuild("conv-a")
    assert isinstance(rebuilt, RebuildResult) and rebuilt.identical
    assert owl("rebuild", "conv-a", "--json").json() == rebuilt.to_dict()

    diff = api.diff("conv-a", "conv-b")
    assert isinstance(diff, DiffReport) and not diff.identical
    assert owl("diff", "conv-a", "conv-b", "--json").json() == diff.to_dict()
    assert {d.name for d in diff.tensors.differing} == {"w", "b"}
    # the recipes differ in their input only: the pickle originals, named for people
    assert list(diff.recipe.changed) == ["inputs.source"] and not diff.recipe.added
    source = diff.recipe.changed["inputs.source"]
    assert set(diff.recipe.labels) == {source["a"], source["b"]}
    same = api.diff(api.get("conv-a"), "conv-a")
    assert same.identical and owl("diff", "conv-a", "conv-a", "--json").json() == same.to_dict()


def test_a_differing_rebuild_names_its_tensor_in_both(owl, owl_home: Path, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import load_file, save_file

    api = Owl(owl_home)
    assert owl("import", _pickle(tmp_path / "m.pt", 0), "--convert-pickle", "--name", "m").code == 0
    blob = _blob(api, "m", "m.safetensors")
    tensors = load_file(blob)
    tensors["w"] = tensors["w"].copy()
    tensors["w"].flat[3] += np.float32(0.5)
    blob.chmod(0o644)
    save_file(tensors, blob)

    report = api.rebuild("m")
    assert report.verdict == "different" and report.exit_code == 11
    first = report.first_difference
    assert first is not None and (first.file, first.tensor) == ("m.safetensors", "w")
    assert first.max_abs == pytest.approx(0.5, abs=1e-6)
    r = owl("rebuild", "m", "--json")
    assert r.code == 11 and r.json() == report.to_dict()


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_a_convert_pickle_import_rebuilds_bit_identically(
    owl, owl_home: Path, tmp_path: Path, tiny_llama: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if layout == "file":
        src = _pickle(tmp_path / "weights.pt", 0)
    else:  # a Hugging Face folder whose weights are a pickle, next to its config and tokenizer
        import torch
        from safetensors.torch import load_file

        src = tmp_path / "pickled-llama"
        shutil.copytree(tiny_llama, src)
        torch.save(load_file(src / "model.safetensors"), src / "pytorch_model.bin")
        (src / "model.safetensors").unlink()
    imported = owl("import", src, "--convert-pickle", "--name", "conv", "--json").json()
    monkeypatch.delenv("OWL_HOME")  # the rebuild's child process works on the API's store all the same
    before = dict(os.environ)
    api = Owl(owl_home)
    detail = api.show("conv")
    assert detail.recipe is not None and detail.recipe["name"] == "convert-pickle"
    assert detail.recipe["inputs"] == {"source": imported["converted_from"]}

    report = api.rebuild("conv")
    assert report.identical and report.exit_code == 0, report
    assert report.recipe == "convert-pickle" and report.rebuilt_digest == report.digest
    assert set(report.files.values()) == {"same"} and report.environment == []
    assert dict(os.environ) == before


def _stored_recipe_names() -> set[str]:
    """The first argument of every ``make_recipe(...)`` call under src/owlkit: a string, or a module
    constant (``NAME``) read from the module."""
    names = set()
    for path in SRC.rglob("*.py"):
        module = ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "make_recipe":
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    names.add(arg.value)
                else:
                    assert isinstance(arg, ast.Name), f"{module}: make_recipe's name is {ast.dump(arg)}"
                    names.add(getattr(importlib.import_module(module), arg.id))
    return names


def test_the_registry_covers_every_recipe_name_stored() -> None:
    import owlkit.recipes
    from owlkit.recipes.registry import RECIPES

    stored = _stored_recipe_names()
    assert "convert-pickle" in stored and len(stored) >= 7
    assert stored <= set(RECIPES), f"stored but not in recipes/registry.py: {stored - set(RECIPES)}"
    for info in pkgutil.iter_modules(owlkit.recipes.__path__):
        module = importlib.import_module(f"owlkit.recipes.{info.name}")
        if hasattr(module, "NAME"):  # a recipe module: registered, with the shape rebuild relies on
            assert RECIPES[module.NAME] is module
            assert dataclasses.is_dataclass(module.Params) and callable(module.run)


def test_only_the_recipes_package_makes_recipes() -> None:
    """Every derived artifact goes through recipes.store_output: nothing else builds a Recipe."""
    makers = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Recipe":
                makers.add(str(path.relative_to(SRC)))
    # make_recipe builds them; the manifest reader rebuilds stored ones from JSON
    assert makers == {"recipes/__init__.py", "store/manifest.py"}

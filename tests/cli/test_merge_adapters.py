"""`owl merge-adapters` through the real CLI: every method's stored result equals PEFT's own
add_weighted_adapter run here on the same adapters; lineage edges, determinism (dare_ties included),
`owl run` on the result; refusals for unequal ranks without svd, another base, DoRA and bad weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owltest import build_adapter

# (method, adapters used, weights, extra flags, PEFT kwargs)
CASES = [
    ("linear", ("lora-a", "lora-b"), [0.7, 0.3], (), {}),
    ("ties", ("lora-a", "lora-b"), [1.0, 0.5], ("--density", "0.6"), {"density": 0.6}),
    ("dare_ties", ("lora-a", "lora-b"), [1.0, 1.0], ("--density", "0.5", "--seed", "7"), {"density": 0.5}),
    ("svd", ("lora-a", "lora-r8"), [0.5, -0.5], ("--svd-rank", "6"), {"svd_rank": 6}),
]


@pytest.fixture(scope="module")
def adapters(
    tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path, tiny_adapter: Path
) -> dict[str, Path]:
    """Three LoRA adapters of the tiny Llama: two of rank 4, one of rank 8 (another target set)."""
    root = tmp_path_factory.mktemp("combine")
    return {
        "lora-a": tiny_adapter,
        "lora-b": build_adapter(tiny_llama, root / "lora-b", "tiny-llama", seed=5),
        "lora-r8": build_adapter(
            tiny_llama,
            root / "lora-r8",
            "tiny-llama",
            seed=7,
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj"],
        ),
    }


@pytest.fixture
def stocked(owl, tiny_llama: Path, adapters: dict[str, Path]) -> dict[str, Path]:
    assert owl("import", tiny_llama).code == 0
    for name, folder in adapters.items():
        r = owl("import", folder, "--name", name)
        assert r.code == 0, r.err
    return adapters


def _peft_reference(base: Path, folders: list[Path], weights: list[float], method: str, seed: int, **kw):
    """PEFT's own combination, computed independently of owlkit: the combined adapter's state dict."""
    import torch
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), folders[0], adapter_name="x0"
    )
    for i, folder in enumerate(folders[1:], 1):
        model.load_adapter(folder, adapter_name=f"x{i}")
    torch.manual_seed(seed)
    model.add_weighted_adapter(
        [f"x{i}" for i in range(len(folders))], weights, "mix", combination_type=method, **kw
    )
    return get_peft_model_state_dict(model, adapter_name="mix", save_embedding_layers=False)


def test_every_method_matches_peft_with_lineage_determinism_and_runs(
    owl, tiny_llama: Path, stocked: dict[str, Path], tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import load_file

    base = owl("show", "tiny-llama", "--json").json()["digest"]
    digests = {n: owl("show", n, "--json").json()["digest"] for n in stocked}
    for method, names, weights, extra, kw in CASES:
        args = (
            "merge-adapters",
            *names,
            "--weights",
            ",".join(map(str, weights)),
            "--method",
            method,
            *extra,
        )
        r = owl(*args, "--name", f"mix-{method}", "--json")
        assert r.code == 0, r.err
        digest = r.json()["digest"]

        info = owl("show", f"mix-{method}", "--json").json()
        assert info["kind"] == "adapter" and info["format"] == "peft"
        assert {(p["relation"], p["digest"]) for p in info["parents"]} == {
            ("adapter_of", base),
            *(("merged_from", digests[n]) for n in names),
        }
        assert info["recipe"]["name"] == "merge-adapters"
        assert info["recipe"]["inputs"] == {
            "base": base,
            "adapter1": digests[names[0]],
            "adapter2": digests[names[1]],
        }
        assert info["recipe"]["params"]["method"] == method and info["recipe"]["params"]["weights"] == weights
        assert info["facts"]["base_digest"] == base and info["facts"]["base_identity"].startswith("sha256:")

        assert owl("export", f"mix-{method}", tmp_path / method).code == 0
        got = load_file(tmp_path / method / "adapter_model.safetensors")
        seed = int(extra[extra.index("--seed") + 1]) if "--seed" in extra else 0
        want = _peft_reference(tiny_llama, [stocked[n] for n in names], weights, method, seed, **kw)
        assert sorted(got) == sorted(want)
        for key, tensor in want.items():
            torch.testing.assert_close(got[key], tensor, atol=1e-6, rtol=0, msg=f"{method} {key}")
        config = json.loads((tmp_path / method / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == "tiny-llama"
        card = (tmp_path / method / "README.md").read_text()
        assert method in card and all(n in card for n in names)

        if method in ("dare_ties", "svd"):  # the random and the decomposing method rebuild to the same bytes
            again = owl(*args, "--name", f"again-{method}", "--json")
            assert again.code == 0, again.err
            assert again.json()["digest"] == digest

    # The svd result has rank 6, the others rank 4; the combined adapter runs like any adapter.
    assert owl("show", "mix-svd", "--json").json()["facts"]["r"] == 6
    r = owl("run", "mix-ties", "Once upon a time", "--max-tokens", "4")
    assert r.code == 0 and "4 tokens" in r.err, r.err  # random weights: the text may be blank


def test_refusals(owl, stocked: dict[str, Path], tiny_other_adapter: dict[str, Path]) -> None:
    r = owl("merge-adapters", "lora-a", "lora-r8", "--weights", "0.5,0.5", "--method", "linear")
    assert r.code == 2 and "--method svd" in r.err and "r=4" in r.err and "r=8" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = owl("merge-adapters", "lora-a", "lora-b", "--weights", "0.5", "--method", "linear")
    assert r.code == 2 and "1 weights for 2 adapters" in r.err
    r = owl("merge-adapters", "lora-a", "lora-b", "-w", "0.5", "-w", "x", "--method", "linear")
    assert r.code == 2 and "'x' is not a number" in r.err
    r = owl("merge-adapters", "lora-a", "lora-b", "-w", "1", "-w", "1", "--method", "cat")
    assert r.code == 2 and "--method 'cat'" in r.err
    r = owl("merge-adapters", "lora-a", "lora-b", "-w", "1,1", "--method", "linear", "--density", "0.5")
    assert r.code == 2 and "--density" in r.err
    r = owl("merge-adapters", "lora-a", "lora-a", "-w", "1,1", "--method", "linear")
    assert r.code == 2 and "given twice" in r.err

    assert owl("import", tiny_other_adapter["base"], "--name", "wide").code == 0
    assert owl("import", tiny_other_adapter["adapter"], "--name", "wide-lora").code == 0
    r = owl("merge-adapters", "lora-a", "wide-lora", "-w", "1,1", "--method", "svd")
    assert r.code == 5 and "shapes" in r.err


def test_dora_refused(owl, stocked: dict[str, Path], tiny_llama: Path, tmp_path: Path) -> None:
    dora = build_adapter(tiny_llama, tmp_path / "dora", "tiny-llama", seed=4, use_dora=True)
    assert owl("import", dora, "--name", "dora").code == 0
    r = owl("merge-adapters", "lora-a", "dora", "-w", "1,1", "--method", "svd")
    assert r.code == 5 and "DoRA" in r.err and "owl merge" in r.err


@pytest.fixture(scope="module")
def tiny_other_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama_other: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wide") / "wide-lora"
    return {"base": tiny_llama_other, "adapter": build_adapter(tiny_llama_other, out, "wide", seed=2)}

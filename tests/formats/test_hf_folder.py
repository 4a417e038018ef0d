"""owlkit.formats.hf_folder (and the diffusers pipeline reader sharing its folder walk)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from owlkit.errors import InvalidFile, Refused
from owlkit.formats.base import MODEL_FACT_KEYS, digest_text
from owlkit.formats.diffusers import inspect_pipeline
from owlkit.formats.hf_folder import (
    CUSTOM_CODE_WARNING,
    folder_origin,
    inspect_hf_folder,
    looks_like_repo_id,
    quantization_of,
    walk_folder,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "realmodels" / "stories260k" / "hf"


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2))


def save_tensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path))
    return path


def library_count(path: Path) -> int:
    """Parameter count as the safetensors library sees it (an independent reading)."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        return sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys())  # noqa: SIM118


# --- a tiny Llama saved by transformers ---------------------------------------------------------------


def test_tiny_llama_facts(tiny_llama: Path) -> None:
    got = inspect_hf_folder(tiny_llama)
    assert (got.kind, got.format, got.root) == ("model", "hf", tiny_llama)
    assert set(got.facts) == set(MODEL_FACT_KEYS)
    config = json.loads((tiny_llama / "config.json").read_text())
    assert got.facts["architecture"] == "llama"
    assert got.facts["architectures"] == ["LlamaForCausalLM"]
    assert got.facts["parameters"] == library_count(tiny_llama / "model.safetensors")
    assert got.facts["dtype"] == "float32"
    assert got.facts["quantization"] is None
    assert got.facts["vocab_size"] == config["vocab_size"]
    assert got.facts["context_length"] == 128
    assert got.facts["shapes"] == {"layers": 2, "hidden": 32, "intermediate": 64, "heads": 4, "kv_heads": 2}
    assert got.facts["tie_word_embeddings"] is False
    template = (tiny_llama / "chat_template.jinja").read_text()
    assert got.facts["chat_template_digest"] == digest_text(template)
    assert got.facts["tokenizer_digest"] is None
    assert got.license.id == "Apache-2.0" and got.license.source == "README.md metadata 'license'"
    assert got.origin.source_path == str(tiny_llama.resolve()) and got.origin.repo_id is None
    assert got.flags == [] and got.warnings == []
    assert got.side["card"]["license"] == "apache-2.0"
    assert got.side["generation_config"]["eos_token_id"] == 1


def test_files_are_every_regular_file_sorted(tiny_llama: Path) -> None:
    got = inspect_hf_folder(tiny_llama)
    expected = sorted(p.relative_to(tiny_llama).as_posix() for p in tiny_llama.rglob("*") if p.is_file())
    assert got.files == expected
    assert "model.safetensors" in got.files and "config.json" in got.files


def test_facts_are_deterministic(tiny_llama: Path, tmp_path: Path) -> None:
    copy = copy_of(tiny_llama, tmp_path / "elsewhere")
    assert inspect_hf_folder(copy).facts == inspect_hf_folder(tiny_llama).facts


@pytest.mark.realmodel
def test_stories260k() -> None:
    if not STORIES.exists():
        pytest.skip(f"{STORIES} is absent (../shared not beside the repo; set OWL_SHARED)")
    got = inspect_hf_folder(STORIES)
    assert got.facts["parameters"] == library_count(STORIES / "model.safetensors") == 260_032
    assert got.facts["architecture"] == "llama" and got.facts["dtype"] == "float32"
    assert got.facts["shapes"] == {"layers": 5, "hidden": 64, "intermediate": 172, "heads": 8, "kv_heads": 4}
    assert got.facts["tie_word_embeddings"] is True and got.facts["vocab_size"] == 512


# --- the folder walk ----------------------------------------------------------------------------------


def test_hidden_and_cache_dirs_skipped(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    for rel in (
        ".git/HEAD",
        ".cache/huggingface/x.lock",
        ".huggingface/y",
        "__pycache__/a.pyc",
        ".gitattributes",
    ):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text("x")
    (folder / "sub").mkdir()
    (folder / "sub" / "notes.txt").write_text("kept")
    files = inspect_hf_folder(folder).files
    assert "sub/notes.txt" in files
    assert not any(f.startswith((".", "__pycache__")) for f in files)


def test_symlink_inside_is_followed(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "extra").mkdir()
    (folder / "extra" / "real.json").write_text("{}")
    (folder / "link.json").symlink_to("extra/real.json")
    assert "link.json" in walk_folder(folder)


def test_symlink_outside_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(Refused, match=r"notes.txt: symlink to .* points outside the folder"):
        inspect_hf_folder(folder)


def test_directory_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m" / "real").mkdir(parents=True)
    (tmp_path / "m" / "alias").symlink_to("real", target_is_directory=True)
    with pytest.raises(Refused, match="alias: directory symlinks are not followed"):
        walk_folder(tmp_path / "m")


def test_broken_symlink(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "gone.bin").symlink_to(tmp_path / "m" / "nothing")
    with pytest.raises(InvalidFile, match=r"gone\.bin: symlink"):
        walk_folder(tmp_path / "m")


def make_cache_snapshot(src: Path, cache: Path, repo: str = "models--org--tiny", rev: str = "abc123") -> Path:
    """The Hugging Face cache layout: blobs by hash, snapshot files as relative symlinks to them."""
    blobs = cache / repo / "blobs"
    snap = cache / repo / "snapshots" / rev
    blobs.mkdir(parents=True)
    for p in sorted(src.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            blob = blobs / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = snap / p.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return snap


def test_cache_layout_symlinks_and_origin(tiny_llama: Path, tmp_path: Path) -> None:
    snap = make_cache_snapshot(tiny_llama, tmp_path / "hub")
    got = inspect_hf_folder(snap)
    assert got.files == inspect_hf_folder(tiny_llama).files
    assert (got.origin.repo_id, got.origin.revision) == ("org/tiny", "abc123")
    assert got.origin.via == "Hugging Face cache layout"
    assert got.facts == inspect_hf_folder(tiny_llama).facts


def test_cache_layout_still_refuses_links_leaving_the_repo(tiny_llama: Path, tmp_path: Path) -> None:
    snap = make_cache_snapshot(tiny_llama, tmp_path / "hub")
    (tmp_path / "elsewhere.txt").write_text("x")
    (snap / "extra.txt").symlink_to(tmp_path / "elsewhere.txt")
    with pytest.raises(Refused, match=r"extra\.txt"):
        inspect_hf_folder(snap)


# --- origin and card ----------------------------------------------------------------------------------


def test_origin_from_name_or_path(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    write_json(folder / "config.json", {**config, "_name_or_path": "HuggingFaceTB/SmolLM2-135M"})
    origin = inspect_hf_folder(folder).origin
    assert (origin.repo_id, origin.via) == ("HuggingFaceTB/SmolLM2-135M", "config.json _name_or_path")


@pytest.mark.parametrize(
    "value", ["/home/me/model", "./local/model", "a/../b", "model", "org/name/extra", None, 3]
)
def test_local_paths_are_not_repo_ids(value: object) -> None:
    assert not looks_like_repo_id(value)
    assert folder_origin(Path("."), value).repo_id is None


def test_card_base_model_is_not_origin(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "README.md").write_text(
        "---\nlicense: llama2\nbase_model: meta-llama/Llama-2-7b-hf\n---\n# ft\n"
    )
    got = inspect_hf_folder(folder)
    assert got.side["card_base_model"] == "meta-llama/Llama-2-7b-hf"
    assert got.origin.repo_id is None
    assert got.license.id == "LicenseRef-llama2"


def test_invalid_card_front_matter_warns(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "README.md").write_text("---\nlicense: [mit\n---\n")
    got = inspect_hf_folder(folder)
    assert any(w.startswith("README.md: front matter is not valid YAML") for w in got.warnings)
    assert got.license.id == "unknown"


def test_license_file_notice_and_policy(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "README.md").unlink()
    (folder / "LICENSE").write_text("LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date")
    (folder / "NOTICE").write_text("Llama 3.1 is licensed under the Llama 3.1 Community License")
    (folder / "USE_POLICY.md").write_text("# Acceptable Use Policy")
    got = inspect_hf_folder(folder)
    assert got.license.id == "LicenseRef-llama3.1" and got.license.source == "file LICENSE (title match)"
    assert got.side["notice_files"] == ["NOTICE"] and got.side["policy_files"] == ["USE_POLICY.md"]
    assert {"LICENSE", "NOTICE", "USE_POLICY.md"} <= set(got.files)


# --- config, weights, shards ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,match",
    [("[1, 2]", "expected a JSON object, found list"), ('{"a": 1,,}', r"not valid JSON \(line 1")],
)
def test_bad_config(tiny_llama: Path, tmp_path: Path, content: str, match: str) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "config.json").write_text(content)
    with pytest.raises(InvalidFile, match=f"config.json: {match}"):
        inspect_hf_folder(folder)


def test_no_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(InvalidFile, match=r"no config\.json"):
        inspect_hf_folder(tmp_path / "m")


def test_corrupt_weights_header(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[8] = ord("[")
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(InvalidFile, match=r"model\.safetensors: header does not start"):
        inspect_hf_folder(folder)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """The tiny Llama saved in several shards with an index, by transformers itself."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("sharded") / "m"
    AutoModelForCausalLM.from_pretrained(tiny_llama).save_pretrained(out, max_shard_size="40KB")
    return out


def test_sharded_parameters_sum_over_shards(sharded: Path, tiny_llama: Path) -> None:
    shards = sorted(p.name for p in sharded.glob("model-*.safetensors"))
    assert len(shards) > 1 and (sharded / "model.safetensors.index.json").exists()
    got = inspect_hf_folder(sharded)
    assert got.facts["parameters"] == inspect_hf_folder(tiny_llama).facts["parameters"]
    assert got.facts["parameters"] == sum(library_count(sharded / s) for s in shards)


def test_missing_shard_named(sharded: Path, tmp_path: Path) -> None:
    folder = copy_of(sharded, tmp_path / "m")
    victim = sorted(folder.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(
        InvalidFile, match=f"model.safetensors.index.json: names shard {victim.name}, which is not"
    ):
        inspect_hf_folder(folder)


def test_index_entry_not_in_its_shard(sharded: Path, tmp_path: Path) -> None:
    folder = copy_of(sharded, tmp_path / "m")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    first_shard = next(iter(index["weight_map"].values()))
    index["weight_map"]["model.ghost.weight"] = first_shard
    write_json(folder / "model.safetensors.index.json", index)
    with pytest.raises(InvalidFile, match=r"maps tensor 'model\.ghost\.weight'"):
        inspect_hf_folder(folder)


def test_index_shard_path_escaping(sharded: Path, tmp_path: Path) -> None:
    folder = copy_of(sharded, tmp_path / "m")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["x"] = "../other.safetensors"
    write_json(folder / "model.safetensors.index.json", index)
    with pytest.raises(InvalidFile, match="leaves the folder"):
        inspect_hf_folder(folder)


def test_pickle_beside_safe_weights_left_out(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    # Bytes only: pickles are never loaded here, so the content does not matter.
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    (folder / "training_args.bin").write_bytes(b"\x80\x04not loaded")
    got = inspect_hf_folder(folder)
    assert "pytorch_model.bin" not in got.files and "training_args.bin" not in got.files
    assert "pickle-weights" not in got.flags
    assert any(w.startswith("pytorch_model.bin: pickle left out") for w in got.warnings)
    assert sorted(got.side["left_out"]) == ["pytorch_model.bin", "training_args.bin"]


def test_pickle_only_weights_flagged(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    (folder / "optimizer.pt").write_bytes(b"\x80\x04not loaded")
    got = inspect_hf_folder(folder)
    assert "pickle-weights" in got.flags
    assert got.side["pickle_weights"] == ["pytorch_model.bin"]
    assert "pytorch_model.bin" in got.files and "optimizer.pt" not in got.files
    assert got.facts["parameters"] is None and got.facts["dtype"] == "float32"  # declared in config.json


def test_custom_code_recorded_not_run(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    config = json.loads((folder / "config.json").read_text())
    write_json(folder / "config.json", {**config, "auto_map": {"AutoModelForCausalLM": "modeling_evil.Evil"}})
    got = inspect_hf_folder(folder)
    assert got.flags == ["custom-code: modeling_evil.py, config.json auto_map"]
    assert CUSTOM_CODE_WARNING in got.warnings
    assert got.side["auto_map"] == {"config.json": {"AutoModelForCausalLM": "modeling_evil.Evil"}}
    assert "modeling_evil.py" in got.files
    assert not marker.exists()


def test_named_chat_templates(tiny_llama: Path, tmp_path: Path) -> None:
    folder = copy_of(tiny_llama, tmp_path / "m")
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [
        {"name": "tool_use", "template": "{{ tools }}"},
        {"name": "default", "template": "{{ messages }}"},
    ]
    write_json(folder / "tokenizer_config.json", cfg)
    got = inspect_hf_folder(folder)
    assert got.facts["chat_template_digest"] == digest_text("{{ messages }}")
    assert got.side["chat_template_names"] == ["default", "tool_use"]
    cfg["chat_template"] = "{{ plain }}"
    write_json(folder / "tokenizer_config.json", cfg)
    assert inspect_hf_folder(folder).facts["chat_template_digest"] == digest_text("{{ plain }}")


def test_weights_dtype_follows_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_json(
        folder / "config.json",
        {"model_type": "gpt2", "n_layer": 1, "n_embd": 8, "n_head": 2, "n_positions": 16},
    )
    save_tensors(
        folder / "model.safetensors",
        {"wte": np.zeros((16, 8), dtype=np.float16), "ln.bias": np.zeros(8, dtype=np.float32)},
    )
    got = inspect_hf_folder(folder)
    assert got.facts["dtype"] == "float16" and got.facts["parameters"] == 136
    assert got.facts["shapes"] == {"layers": 1, "hidden": 8, "intermediate": None, "heads": 2, "kv_heads": 2}
    assert got.facts["context_length"] == 16 and got.facts["architecture"] == "gpt2"


@pytest.mark.parametrize(
    "config,expected",
    [
        ({}, None),
        ({"quantization_config": {"quant_method": "gptq", "bits": 4}}, "gptq"),
        ({"quantization_config": {"quant_method": "AWQ"}}, "awq"),
        (
            {
                "quantization_config": {
                    "quant_method": "bitsandbytes",
                    "load_in_4bit": True,
                    "bnb_4bit_quant_type": "nf4",
                }
            },
            "bnb-nf4",
        ),
        ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, "bnb-4bit"),
        ({"quantization_config": {"load_in_8bit": True}}, "bnb-8bit"),
    ],
)
def test_quantization(config: dict, expected: str | None) -> None:
    assert quantization_of(config) == expected


def test_multimodal_text_config(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_json(
        folder / "config.json",
        {
            "model_type": "llava",
            "text_config": {
                "num_hidden_layers": 3,
                "hidden_size": 16,
                "num_attention_heads": 4,
                "vocab_size": 50,
            },
        },
    )
    save_tensors(folder / "model.safetensors", {"w": np.zeros(4, dtype=np.float32)})
    facts = inspect_hf_folder(folder).facts
    assert facts["shapes"]["layers"] == 3 and facts["vocab_size"] == 50 and facts["shapes"]["kv_heads"] == 4


# --- diffusers pipelines ------------------------------------------------------------------------------


def make_pipeline(folder: Path) -> Path:
    write_json(
        folder / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": "0.30.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
        },
    )
    save_tensors(folder / "unet" / "diffusion_pytorch_model.safetensors", {"w": np.zeros((4, 4), np.float16)})
    write_json(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel"})
    save_tensors(folder / "vae" / "diffusion_pytorch_model.safetensors", {"w": np.zeros(3, np.float32)})
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    write_json(folder / "text_encoder" / "config.json", {"model_type": "clip_text_model"})
    (folder / "text_encoder" / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    write_json(folder / "scheduler" / "scheduler_config.json", {"_class_name": "PNDMScheduler"})
    (folder / "README.md").write_text("---\nlicense: creativeml-openrail-m\n---\n# pipe\n")
    return folder


def test_pipeline(tmp_path: Path) -> None:
    folder = make_pipeline(tmp_path / "pipe")
    got = inspect_pipeline(folder)
    assert (got.kind, got.format) == ("pipeline", "diffusers")
    assert got.facts == {
        "pipeline_class": "StableDiffusionPipeline",
        "components": ["scheduler", "text_encoder", "unet", "vae"],
    }
    assert got.license.id == "LicenseRef-creativeml-openrail-m"
    # Per component: vae's pickle has a safe twin, text_encoder's pickle is its only weights.
    assert "vae/diffusion_pytorch_model.bin" not in got.files
    assert got.side["pickle_weights"] == ["text_encoder/pytorch_model.bin"] and "pickle-weights" in got.flags
    assert got.files == [f for f in walk_folder(folder) if f != "vae/diffusion_pytorch_model.bin"]


def test_pipeline_bad_index(tmp_path: Path) -> None:
    write_json(tmp_path / "p" / "model_index.json", {"unet": ["diffusers", "UNet2DConditionModel"]})
    with pytest.raises(InvalidFile, match=r"model_index\.json: no '_class_name'"):
        inspect_pipeline(tmp_path / "p")

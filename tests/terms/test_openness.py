"""`owl openness` and `owl attach` through the real CLI: MOF components, class, OSAID verdict, layers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from owlkit.terms.openness import (
    CLASSES,
    card_sections,
    components,
    find_component,
    license_fits,
    license_is_open,
    license_is_open_terms,
    license_is_osi,
)

OPEN_CARD = """---
license: apache-2.0
datasets:
- owl/tiny-instructions
model-index:
- name: open-owl
  results:
  - task: {type: text-generation}
    metrics: [{type: exact_match, value: 0.5}]
---
# open-owl

A tiny open model for tests; everything needed to rebuild it ships beside the weights.

## Training data

Twelve alpaca rows written for the tests (tiny-instructions), released under CC-BY-4.0.

## Evaluation

Exact match on the held-out rows in eval/heldout.jsonl is 50 percent.

## Citation

```bibtex
@misc{owl2026, title={An open owl}, year={2026}}
```
"""

# The files an open release carries beside its weights, by the component each one is found as.
OPEN_FILES = {
    "train.py": "# the training loop\n",
    "preprocess.py": "# turns raw rows into alpaca rows\n",
    "evaluate.py": "# exact match on eval/heldout.jsonl\n",
    "inference.py": "# loads the folder and generates\n",
    "requirements.txt": "torch\ntransformers\n",
    "technical_report.md": "# How open-owl was made\n",
    "samples/outputs.jsonl": '{"prompt": "Say hello.", "output": "hello"}\n',
    "training_args.json": '{"learning_rate": 0.001, "max_steps": 10}\n',
    "eval/heldout.jsonl": '{"instruction": "Say hello.", "input": "", "output": "hello"}\n',
}

ROWS = [
    {"instruction": "Reverse the words.", "input": "owl, model", "output": "model | owl"},
    {"instruction": "Say hello.", "input": "", "output": "hello"},
] * 6


def _open_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    (dest / "README.md").write_text(OPEN_CARD)
    for rel, text in OPEN_FILES.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text(text)
    ckpt = dest / "checkpoints" / "step-5"
    ckpt.mkdir(parents=True)
    shutil.copyfile(dest / "model.safetensors", ckpt / "model.safetensors")
    return dest


def _weights_only(src: Path, dest: Path) -> Path:
    """Weights, config and tokenizer under Apache-2.0 (a LICENSE text), and nothing else."""
    shutil.copytree(src, dest)
    (dest / "README.md").unlink()
    (dest / "LICENSE").write_text("\n    Apache License\n    Version 2.0, January 2004\n")
    return dest


def _dataset(dest: Path) -> Path:
    dest.mkdir()
    (dest / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (dest / "README.md").write_text(
        "---\nlicense: cc-by-4.0\n---\n# tiny-instructions\n\nTwelve alpaca rows written by hand for tests.\n"
    )
    return dest


def _by_name(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["components"]}


def _check_json_shape(report: dict) -> None:
    assert set(report) == {"name", "digest", "kind", "license", "mof", "components", "osaid", "layers"}
    assert set(report["mof"]) == {"class", "label", "classes"}
    assert [c["class"] for c in report["mof"]["classes"]] == ["III", "II", "I"]
    assert set(report["mof"]["classes"][0]) == {"class", "label", "met", "missing", "unlicensed", "not_open"}
    assert len(report["components"]) == 17
    for c in report["components"]:
        assert set(c) == {
            "id", "name", "class", "required", "content", "layer", "rule", "present", "status", "matched",
            "evidence", "detected", "license", "license_open", "license_fits", "covered_by", "note",
        }  # fmt: skip
        assert c["status"] in ("included", "unlicensed", "not-open", "missing", "optional", "covered")
    assert set(report["osaid"]) == {"verdict", "meets", "elements", "reasons"}
    assert [layer["layer"] for layer in report["layers"]] == ["weights", "code", "data", "governance"]
    assert set(report["layers"][0]) == {"layer", "status", "present", "missing", "problems", "total", "notes"}


# ----- the table and the license tests --------------------------------------------------------------


def test_components_follow_the_model_openness_framework() -> None:
    COMPONENTS = components()  # read from mof.yaml
    assert len(COMPONENTS) == 17
    assert len({c.id for c in COMPONENTS}) == 17 and len({c.name for c in COMPONENTS}) == 17
    required = {cls: sorted(c.id for c in COMPONENTS if c.mof_class == cls and c.required) for cls in CLASSES}
    optional = {cls: [c.id for c in COMPONENTS if c.mof_class == cls and not c.required] for cls in CLASSES}
    # MOT mof.settings.yml ids, as docs/openness-and-licenses.md A2 lists them
    assert required == {"III": [9, 10, 11, 12, 13, 14], "II": [7, 8, 18, 19], "I": [15, 16, 21, 24]}
    assert optional == {"III": [20], "II": [22], "I": [17]}
    assert {c.layer for c in COMPONENTS} == {"weights", "code", "data", "governance"}
    assert all(c.rule.describe() for c in COMPONENTS)


def test_license_tests_follow_mof_and_osaid() -> None:
    assert license_is_open("Apache-2.0") and license_is_osi("Apache-2.0")
    assert license_is_open("CC-BY-4.0") and not license_is_osi("CC-BY-4.0")
    assert license_is_open("CDLA-Permissive-2.0") and license_is_open("LicenseRef-openmdw-1.0")
    for closed in ("CC-BY-NC-4.0", "CC-BY-ND-4.0", "LicenseRef-llama2", "LicenseRef-gemma", "unknown", None):
        assert not license_is_open(closed)
    assert license_is_open("MIT OR LicenseRef-llama2")  # the user may pick MIT
    assert not license_is_open("MIT AND LicenseRef-llama2")
    assert license_is_osi("GPL-2.0-or-later WITH Classpath-exception-2.0")
    assert license_is_open_terms("CC-BY-4.0") and not license_is_open_terms("WTFPL")
    # type fit only warns: Apache-2.0 is recommended for code and documents, not for data (weights)
    assert license_fits("Apache-2.0", "code") and license_fits("Apache-2.0", "document")
    assert not license_fits("Apache-2.0", "data") and license_fits("CDLA-Permissive-2.0", "data")


def test_component_names_match_loosely_and_errors_list_them() -> None:
    from owlkit.errors import UsageError

    assert find_component("training CODE").name == "Training code"
    assert find_component("model parameters final").name == "Model parameters (Final)"
    with pytest.raises(UsageError, match=r"choose one of Model architecture, .*Model metadata$"):
        find_component("weights")


def test_card_sections_skip_empty_template_sections_and_code() -> None:
    body = (
        "## Training Data\n\n<!-- describe it -->\n\n[More Information Needed]\n\n"
        "## Evaluation\n\nExact match is fifty percent.\n\n"
        "```python\n# Results\nprint('not a heading')\n```\n"
    )
    assert [h for h, _ in card_sections(body)] == ["Evaluation"]


# ----- through the CLI --------------------------------------------------------------------------------


def test_fully_open_model_reaches_class_i_and_meets_osaid(owl, tiny_llama: Path, tmp_path: Path) -> None:
    folder = _open_model(tiny_llama, tmp_path / "open-owl")
    before = owl("import", folder, "--name", "open-owl", "--json").json()["digest"]
    r = owl(
        "attach", "open-owl", "--component", "datasets", "--url", "https://example.org/tiny-instructions",
        "--license", "cc-by-4.0",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "attached Datasets" in r.out

    report = owl("openness", "open-owl", "--json").json()
    comps = _by_name(report)
    assert report["digest"] == before  # attaching never changes what the artifact is
    assert report["mof"]["class"] == "I", report["mof"]["classes"]
    assert all(c["met"] for c in report["mof"]["classes"])
    assert all(c["present"] and c["license_open"] for c in comps.values()), [
        (n, c["status"]) for n, c in comps.items() if c["status"] != "included"
    ]
    matched = {name: (c["matched"], c["evidence"]) for name, c in comps.items()}
    assert matched["Model architecture"][0] == "facts"
    assert matched["Model parameters (Final)"] == ("files", "model.safetensors")
    assert matched["Model parameters (Intermediate)"] == ("files", "checkpoints/step-5/model.safetensors")
    assert matched["Model card"][0] == "card"
    assert matched["Data card"] == ("card-section", "README.md section 'Training data'")
    assert matched["Evaluation results"] == ("card-metadata", "card metadata model-index")
    assert matched["Research paper"] == ("card-section", "README.md section 'Citation'")
    assert matched["Training code"] == ("files", "train.py")
    assert matched["Data preprocessing code"] == ("files", "preprocess.py")
    assert matched["Evaluation code"] == ("files", "evaluate.py")
    assert matched["Inference code"] == ("files", "inference.py")
    assert matched["Evaluation data"] == ("files", "eval/heldout.jsonl")
    assert matched["Technical report"] == ("files", "technical_report.md")
    assert matched["Sample model outputs"] == ("files", "samples/outputs.jsonl")
    assert matched["Model metadata"] == ("files", "training_args.json")
    assert matched["Supporting libraries and tools"] == ("files", "requirements.txt")
    assert matched["Datasets"] == ("attachment", "https://example.org/tiny-instructions")
    assert comps["Datasets"]["license"] == "CC-BY-4.0" and comps["Datasets"]["license_fits"] is False
    assert comps["Model parameters (Final)"]["license_fits"] is False  # Apache-2.0 weights: a warning only
    assert report["osaid"] == {
        "verdict": "meets",
        "meets": True,
        "elements": {"data_information": True, "code": True, "parameters": True},
        "reasons": [],
    }
    assert {layer["layer"]: layer["status"] for layer in report["layers"]} == dict.fromkeys(
        ("weights", "code", "data", "governance"), "open"
    )

    text = owl("openness", "open-owl")
    assert text.code == 0
    assert "MOF class: I (Class I - Open Science)" in text.out
    assert "OSAID 1.0: meets" in text.out
    assert "attachment: https://example.org/tiny-instructions" in text.out


def test_weights_only_apache_model_is_class_iii_at_most_and_fails_osaid(
    owl, tiny_llama: Path, tmp_path: Path
) -> None:
    assert owl("import", _weights_only(tiny_llama, tmp_path / "bare"), "--name", "bare").code == 0
    report = owl("openness", "bare", "--json").json()
    _check_json_shape(report)
    comps = _by_name(report)
    assert report["license"] == "Apache-2.0"
    assert comps["Model parameters (Final)"]["status"] == "included"
    assert comps["Model architecture"]["status"] == "included"
    assert report["mof"]["class"] == "none"
    iii, ii, i = report["mof"]["classes"]
    assert iii["class"] == "III" and not iii["met"]
    assert iii["missing"] == ["Model card", "Data card", "Technical report", "Evaluation results"]
    assert ii["missing"] == ["Training code", "Inference code", "Evaluation code", "Evaluation data"]
    assert i["missing"] == [
        "Research paper",
        "Datasets",
        "Data preprocessing code",
        "Model parameters (Intermediate)",
    ]
    osaid = report["osaid"]
    assert osaid["verdict"] == "does not meet"
    assert osaid["elements"] == {"data_information": False, "code": False, "parameters": True}
    assert any(r.startswith("data information: data card missing") for r in osaid["reasons"])
    assert any(r.startswith("data information: the training data is not listed") for r in osaid["reasons"])
    code = next(r for r in osaid["reasons"] if r.startswith("code: "))
    assert "training code missing" in code and "inference code missing" in code
    assert not any(r.startswith("parameters") for r in osaid["reasons"])
    layers = {layer["layer"]: layer for layer in report["layers"]}
    assert layers["weights"]["status"] == "partial" and layers["data"]["status"] == "closed"

    # Documents kept elsewhere lift it to class III, and no further: the tooling is still missing.
    for component in ("Model card", "Data card", "Technical report", "Evaluation results"):
        url = "https://example.org/" + component.replace(" ", "-")
        r = owl("attach", "bare", "-c", component, "--url", url, "--license", "CC-BY-4.0")
        assert r.code == 0, r.err
    report = owl("openness", "bare", "--json").json()
    assert report["mof"]["class"] == "III"
    assert report["mof"]["classes"][1]["missing"] == ii["missing"]
    assert not report["osaid"]["meets"]

    text = owl("openness", "bare")
    assert "MOF class: III (Class III - Open Model)" in text.out
    assert "OSAID 1.0: does not meet" in text.out and "- code: " in text.out


def test_tuned_adapter_finds_datasets_data_card_and_code_through_lineage(
    owl, tiny_llama: Path, tmp_path: Path
) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("import", _dataset(tmp_path / "tiny-instructions")).code == 0
    args = ("--steps", "1", "--batch-size", "2", "--r", "2", "--name", "t-lora")
    r = owl("tune", "tiny-llama", "tiny-instructions", *args)
    assert r.code == 0, r.err
    report = owl("openness", "t-lora", "--json").json()
    comps = _by_name(report)
    assert report["kind"] == "adapter"
    assert comps["Datasets"]["matched"] == "lineage"
    assert comps["Datasets"]["evidence"].startswith("trained_on tiny-instructions")
    assert comps["Datasets"]["license"] == "CC-BY-4.0" and comps["Datasets"]["status"] == "included"
    assert comps["Data card"]["matched"] == "lineage"
    assert "README.md card of tiny-instructions" in comps["Data card"]["evidence"]
    for name in ("Training code", "Data preprocessing code", "Model metadata"):
        assert comps[name]["matched"] == "recipe", name
    assert comps["Training code"]["license"] == "Apache-2.0"  # owlkit's license: owlkit's code ran
    assert comps["Model card"]["matched"] == "card"  # owl tune writes one
    assert comps["Model parameters (Final)"]["evidence"] == "adapter_model.safetensors"
    assert report["osaid"]["elements"]["data_information"] is True

    assert owl("openness", "tiny-instructions").code == 5  # a dataset has no MOF components

    # merged into its base, the weights still come from that data: the edge is found through merged_from
    assert owl("merge", "tiny-llama", "t-lora", "--name", "t-merged").code == 0
    merged = _by_name(owl("openness", "t-merged", "--json").json())
    assert merged["Datasets"]["matched"] == "lineage" and merged["Datasets"]["license"] == "CC-BY-4.0"


def test_attach_validates_and_never_changes_the_digest(owl, tiny_llama: Path, tmp_path: Path) -> None:
    folder = _weights_only(tiny_llama, tmp_path / "bare")
    digest = owl("import", folder, "--name", "bare", "--json").json()["digest"]

    def attach(component: str, url: str, *more: str):
        return owl("attach", "bare", "--component", component, "--url", url, *more)

    r = attach("weights", "https://example.org/x")
    assert r.code == 2
    assert r.err.count("\n") == 1 and "choose one of Model architecture" in r.err and "Training code" in r.err
    assert attach("Training code", "not a url").code == 2
    assert owl("attach", "bare", "--component", "Training code").code == 2  # no --url
    assert owl("attach", "nothing-here", "--component", "Training code", "--url", "https://x.org").code == 3

    r = attach("training CODE", "https://github.com/org/owl", "--license", "mit")
    assert r.code == 0 and "attached Training code to bare:latest (MIT): https://github.com/org/owl" in r.out
    out = attach("Inference code", "https://x.org/i", "--license", "my own terms", "--json").json()
    assert out["license"] == "unknown" and out["license_given"] == "my own terms" and not out["replaced"]
    assert any("not recognised" in w for w in out["warnings"])
    assert (
        "replaced Training code"
        in attach("Training code", "https://x.org/owl2", "--license", "Apache 2.0").out
    )
    assert attach("Research paper", "https://arxiv.org/abs/2403.13784", "--license", "CC-BY-4.0").code == 0

    report = owl("openness", "bare", "--json").json()
    assert report["digest"] == digest  # attachments live beside the manifest, never in it
    comps = _by_name(report)
    training = comps["Training code"]
    assert (training["matched"], training["evidence"], training["license"]) == (
        "attachment",
        "https://x.org/owl2",
        "Apache-2.0",
    )
    assert comps["Inference code"]["status"] == "unlicensed"
    # MOF: the technical report may be omitted when the research paper is included
    assert (comps["Technical report"]["status"], comps["Technical report"]["covered_by"]) == (
        "covered",
        "Research paper",
    )
    assert "Technical report" not in report["mof"]["classes"][0]["missing"]

    assert owl("attach", "bare", "-c", "Inference code", "--remove").code == 0
    assert owl("attach", "bare", "-c", "Inference code", "--remove").code == 3
    assert _by_name(owl("openness", "bare", "--json").json())["Inference code"]["status"] == "missing"
    assert owl("verify", "bare").code == 0

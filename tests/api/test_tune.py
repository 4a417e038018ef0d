"""The training commands through the Python API: `owl tune`, `owl data demo`, `owl merge`,
`owl merge-adapters` and `owl quantize` print their result's to_dict() with --json, a script gets the
same artifact the CLI makes (the same YAML + flag merging for tune), and progress arrives as events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from owlkit import Owl
from owlkit.adapt.params import TuneParams
from owlkit.api import DemoDataResult, DriftReport, ProgressEvent, Stored, TuneResult
from owlkit.errors import UsageError
from owltest import build_adapter


def as_json(result: Any) -> Any:
    """A result as the CLI prints it: through JSON (tuples become lists, paths strings)."""
    return json.loads(json.dumps(result.to_dict(), default=str))


@pytest.fixture
def returned(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the CLI's `Owl` calls returned, by method: the result the command rendered."""
    got: dict[str, Any] = {}

    def spy(method: str) -> None:
        original = getattr(Owl, method)

        def wrapper(self: Owl, *args: Any, **kwargs: Any) -> Any:
            got[method] = original(self, *args, **kwargs)
            return got[method]

        monkeypatch.setattr(Owl, method, wrapper)

    for method in ("tune", "quantize"):
        spy(method)
    return got


def test_tune_with_config_and_flags_is_the_clis_tune(
    owl, owl_home: Path, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path, returned: dict[str, Any]
) -> None:
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({"r": 4, "lr": 0.01, "batch_size": 2, "steps": 50, "seq_len": 64}))
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "tiny-data").code == 0
    r = owl("tune", "tiny-llama", "tiny-data", "--config", config, "--steps", "2", "--name", "t", "--json")
    assert r.code == 0, r.err
    assert r.json() == as_json(returned["tune"])

    events: list[ProgressEvent] = []
    res = Owl(owl_home).tune(
        "tiny-llama", "tiny-data", config=config, steps=2, name="t2", progress=events.append
    )
    assert isinstance(res, TuneResult)
    assert res.digest == r.json()["digest"]  # the same params, merged the same way: the same adapter
    assert res.names == ["t:latest", "t2:latest"] and res.steps == 2 and res.tokens_per_s > 0
    assert [e["loss"] for e in res.log] == [e["loss"] for e in r.json()["training"]["log"]]
    params = Owl(owl_home).show(res.digest).recipe["params"]  # type: ignore[index]
    assert (params["r"], params["lr"], params["steps"], params["seq_len"]) == (4, 0.01, 2, 64)

    assert {(e.stage, e.unit) for e in events} == {("training", "steps")}
    assert [e.done for e in events] == [0, 1, 2] and events[-1].total == 2
    assert set(events[-1].info) >= {"loss", "tokens_per_s"}


def test_tune_params_merge_a_yaml_file_with_keywords(tmp_path: Path) -> None:
    config = tmp_path / "p.yaml"
    TuneParams(method="dora", r=16, targets=["q_proj"], steps=7).to_yaml(config)
    merged = TuneParams.merged(config, r=4, steps=None, targets="q_proj, v_proj")
    assert (merged.method, merged.r, merged.steps, merged.targets) == ("dora", 4, 7, ["q_proj", "v_proj"])
    assert TuneParams.merged(None, targets="all-linear") == TuneParams()
    with pytest.raises(UsageError, match="unknown tune params rank"):
        TuneParams.merged(None, rank=4)
    with pytest.raises(UsageError, match="--r"):
        Owl(tmp_path / "h").tune("base", "data", r=0)  # checked before anything is resolved


def test_data_demo_merge_and_merge_adapters_json_is_to_dict(
    owl, owl_home: Path, tiny_llama: Path, tiny_adapter: Path, tmp_path: Path
) -> None:
    api = Owl(owl_home)
    r = owl("data", "demo", "--train", "20", "--heldout", "5", "--seed", "3", "--json")
    assert r.code == 0, r.err
    demo = api.data_demo(train=20, heldout=5, seed=3)
    assert isinstance(demo, DemoDataResult) and r.json() == demo.to_dict()
    assert (demo.name, demo.train, demo.heldout, demo.seed) == ("demo-data:latest", 20, 5, 3)

    other = build_adapter(tiny_llama, tmp_path / "lora-b", "tiny-llama", seed=5)
    for ref, path in (("tiny-llama", tiny_llama), ("lora-a", tiny_adapter), ("lora-b", other)):
        assert owl("import", path, "--name", ref).code == 0
    r = owl("merge", "tiny-llama", "lora-a", "--name", "merged", "--json")
    assert r.code == 0, r.err
    events: list[ProgressEvent] = []
    merged = api.merge("tiny-llama", "lora-a", name="merged", progress=events.append)
    assert isinstance(merged, Stored) and r.json() == merged.to_dict()
    assert [(e.done, e.total) for e in events] == [(0, None), (1, 1)]

    args = ("lora-a", "lora-b", "--weights", "0.7,0.3", "--method", "linear", "--name", "mixed", "--json")
    r = owl("merge-adapters", *args)
    assert r.code == 0, r.err
    mixed = api.merge_adapters(["lora-a", "lora-b"], weights=[0.7, 0.3], method="linear", name="mixed")
    assert r.json() == mixed.to_dict()
    with pytest.raises(UsageError, match="one weight per adapter"):
        api.merge_adapters(["lora-a", "lora-b"], weights=[1.0], method="linear")


def test_quantize_json_is_to_dict_with_typed_drift_rows(
    owl, owl_home: Path, tiny_llama: Path, returned: dict[str, Any]
) -> None:
    assert owl("import", tiny_llama).code == 0
    r = owl("quantize", "tiny-llama", "--to", "gguf-q8_0,gguf-f16", "--eval-tokens", "64", "--json")
    assert r.code == 0, r.err
    report = returned["quantize"]
    assert isinstance(report, DriftReport) and r.json() == as_json(report)
    assert [v.target for v in report] == ["gguf-q8_0", "gguf-f16"] and len(report) == 2
    row = report.rows[0]
    assert row.artifact == "tiny-llama-q8-0:latest" and row.ppl == report[0].quality["ppl"]
    assert row.size_bytes and row.bits_per_weight and row.runtime and 0 < row.top1 <= 1

    events: list[ProgressEvent] = []
    again = Owl(owl_home).quantize(
        "tiny-llama", ["gguf-q8_0"], eval_tokens=64, name="q8", progress=events.append
    )
    assert again[0].digest == report[0].digest  # the same weights: the same artifact, named again
    assert any("message" in e.info for e in events)  # the status lines
    scoring = [e for e in events if e.stage.startswith("scoring (")]
    assert scoring and scoring[-1].done == scoring[-1].total and scoring[-1].unit == "items"

    unmeasured = Owl(owl_home).quantize("tiny-llama", "gguf-q8_0", evaluate=False, name="q8-plain")
    assert unmeasured[0].quality is None and unmeasured.rows[0].runtime is None and unmeasured.has_figures
    with pytest.raises(UsageError, match="--name names one result"):
        Owl(owl_home).quantize("tiny-llama", ["gguf-q8_0", "gguf-f16"], name="x")

"""`owl eval` through the Python API: what `owl eval --json` prints is `Owl.eval(...).to_dict()` (but
for the seconds it took), for every option, and the API reports its stages as progress events."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from owlkit import Owl
from owlkit.api import EvalResult
from owlkit.errors import UsageError


def _split_data(tiny_alpaca: Path, folder: Path) -> Path:
    rows = tiny_alpaca.read_text().splitlines()
    folder.mkdir()
    (folder / "train.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "test.jsonl").write_text("\n".join(rows[:3]) + "\n")
    return folder


def _timed(report: dict) -> dict:
    assert isinstance(report.pop("seconds"), float)
    return report


def test_eval_json_is_to_dict(
    owl, owl_home: Path, tiny_llama: Path, tiny_adapter: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    data = _split_data(tiny_alpaca, tmp_path / "split-data")
    for path, name in ((tiny_llama, "tiny-llama"), (tiny_adapter, "ad"), (data, "split-data")):
        assert owl("import", path, "--name", name).code == 0
    api = Owl(owl_home)
    runs = [
        ((), {}),
        (
            (
                "--split",
                "train",
                "--template",
                "alpaca",
                "--limit",
                "2",
                "--batch-size",
                "1",
                "--max-tokens",
                "3",
            ),
            {"split": "train", "template": "alpaca", "limit": 2, "batch_size": 1, "max_tokens": 3},
        ),
        (("--base", "tiny-llama", "--limit", "1"), {"base": "tiny-llama", "limit": 1}),
    ]
    for i, (flags, options) in enumerate(runs):
        ref = "ad" if "base" in options else "tiny-llama"
        r = owl("eval", ref, "split-data", *flags, "--json")
        assert r.code == 0, r.err
        res = api.eval(ref, "split-data", **options)
        assert isinstance(res, EvalResult)
        assert _timed(r.json()) == _timed(res.to_dict()), flags
        assert json.loads(json.dumps(res.to_dict())) == res.to_dict()  # plain JSON types throughout
        assert (
            res.n == (3, 2, 1)[i] and res.correct <= res.n and res.ci95[0] <= res.exact_match <= res.ci95[1]
        )


def test_eval_takes_artifacts_and_paths_and_reports_progress(
    owl_home: Path, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    before = dict(os.environ)
    api = Owl(owl_home)
    model = api.import_(tiny_llama, name="m").artifact
    data = _split_data(tiny_alpaca, tmp_path / "d")
    with pytest.raises(UsageError, match="--template 'plain'"):
        api.eval(model, data, template="plain")
    assert [a.kind for a in api.ls()] == ["model"]  # refused before the data was imported
    events = []
    res = api.eval(model, data, limit=2, batch_size=1, max_tokens=2, progress=events.append)
    assert (res.model, res.data, res.split, res.n) == ("m:latest", "d:latest", "test", 2)
    stages = {e.stage: e for e in events}
    assert list(stages) == ["loading m:latest", "generating 2 answers"]
    assert [(e.done, e.total) for e in events if e.stage.startswith("generating")] == [(0, 2), (1, 2), (2, 2)]
    assert dict(os.environ) == before

"""`owl eval` through the real CLI: the test split of a stored dataset, an adapter scored with the
template it was trained with, and one-line errors for a dataset without a test split."""

from __future__ import annotations

import json
from pathlib import Path


def _folder(path: Path, files: dict[str, list[dict]]) -> Path:
    path.mkdir()
    for name, rows in files.items():
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_scores_the_test_split_and_an_adapter(
    owl, tiny_llama: Path, tiny_alpaca: Path, tmp_path: Path
) -> None:
    rows = [json.loads(line) for line in tiny_alpaca.read_text().splitlines()]
    data = _folder(tmp_path / "split-data", {"train.jsonl": rows, "test.jsonl": rows[:3]})
    assert owl("import", tiny_llama).code == 0
    assert owl("import", data, "--name", "split-data").code == 0
    r = owl("eval", "tiny-llama", "split-data", "--json")
    assert r.code == 0, r.err
    report = r.json()
    assert report["n"] == 3 and report["split"] == "test" and report["template"] == "chat"
    low, high = report["ci95"]
    assert 0 <= low <= report["exact_match"] <= high <= 1
    tuned = owl("tune", "tiny-llama", "split-data", "--steps", "2", "--batch-size", "2", "--r", "4",
                "--template", "alpaca", "--seq-len", "512", "--name", "t-lora", "--json")  # fmt: skip
    assert tuned.code == 0, tuned.err
    assert tuned.json()["training"]["data"]["files"] == ["train.jsonl"]  # the test split is not trained on
    r = owl("eval", "t-lora", "split-data", "--limit", "2", "--max-tokens", "4", "--json")
    assert r.code == 0, r.err
    assert r.json()["template"] == "alpaca" and r.json()["n"] == 2
    r = owl("eval", "t-lora", "split-data", "--limit", "1", "--max-tokens", "2")
    assert r.code == 0 and "exact match 0/1" in r.out and "95% CI" in r.out


def test_eval_without_a_test_split_is_one_line_error(owl, tiny_llama: Path, tiny_alpaca: Path) -> None:
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_alpaca, "--name", "flat").code == 0
    r = owl("eval", "tiny-llama", "flat")
    assert r.code == 4 and "no test split" in r.err and len(r.err.strip().splitlines()) == 1
    r = owl("eval", "tiny-llama", "flat", "--split", "nope")
    assert r.code == 2 and "split 'nope'" in r.err

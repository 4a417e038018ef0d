"""owlkit.formats.datasets: every supported file type and instruction format, folders, malformed files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from owlkit.errors import InvalidFile, Refused
from owlkit.formats import datasets
from owlkit.formats.datasets import inspect_dataset, read_data_file

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
ALPACA = SHARED / "data" / "alpaca-5k"

ALPACA_ROWS = [
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Say hi.", "input": "", "output": "hi"},
    {"instruction": "Name a colour.", "output": "blue"},
]
SHAREGPT_ROWS = [
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
    {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "2+2?"}]},
]
MESSAGES_ROWS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "x"}]},
            {"role": "assistant", "content": None},
        ]
    },
]
TEXT_ROWS = [{"text": "Once upon a time."}, {"text": "The end."}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_json(path: Path, value: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


@pytest.mark.realmodel
def test_alpaca_5k() -> None:
    if not ALPACA.exists():
        pytest.skip(f"{ALPACA} is absent (../shared not beside the repo; set OWL_SHARED)")
    got = inspect_dataset(ALPACA)
    assert (got.kind, got.format) == ("dataset", "dataset")
    assert got.facts == {
        "data_format": "alpaca",
        "rows": 5000,
        "columns": ["input", "instruction", "output"],
        "files": ["alpaca_5000.json"],
    }
    assert got.license.id == "CC-BY-NC-4.0" and got.license.source == "file DATA_LICENSE (title match)"
    assert "DATA_LICENSE" in got.files and "seed_tasks.jsonl" in got.files
    # The seed tasks are another shape: stored, listed, not counted.
    seeds = next(d for d in got.side["data_files"] if d["path"] == "seed_tasks.jsonl")
    assert seeds["format"] == "unknown" and seeds["rows"] == 175


@pytest.mark.parametrize(
    "rows,fmt",
    [
        (ALPACA_ROWS, "alpaca"),
        (SHAREGPT_ROWS, "sharegpt"),
        (MESSAGES_ROWS, "openai-messages"),
        (TEXT_ROWS, "text"),
    ],
)
@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_json_formats(tmp_path: Path, rows: list[dict], fmt: str, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    write_jsonl(path, rows) if suffix == ".jsonl" else write_json(path, rows)
    got = inspect_dataset(path)
    assert got.facts["data_format"] == fmt and got.facts["rows"] == len(rows)
    assert got.facts["columns"] == sorted({k for r in rows for k in r})
    assert got.files == [path.name] and got.root == path and got.license.id == "unknown"


def test_json_lines_under_a_json_name(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.json", ALPACA_ROWS)
    assert inspect_dataset(path).facts["rows"] == 3


def test_unknown_shape(tmp_path: Path) -> None:
    got = inspect_dataset(write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": 1}]))
    assert got.facts == {
        "data_format": "unknown",
        "rows": 1,
        "columns": ["answer", "question"],
        "files": ["d.jsonl"],
    }


def test_partly_fitting_rows_warn(tmp_path: Path) -> None:
    got = inspect_dataset(write_jsonl(tmp_path / "d.jsonl", [*ALPACA_ROWS, {"instruction": "no output"}]))
    assert got.facts["data_format"] == "alpaca" and got.facts["rows"] == 4
    assert any("1 of 4 rows checked do not fit the alpaca format" in w for w in got.warnings)


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["instruction", "input", "output"])
        w.writerow(["Quote, with comma", "line\nbreak", "ok"])
        w.writerow(["Second", "", "done"])
    got = inspect_dataset(path)
    assert got.facts == {
        "data_format": "alpaca",
        "rows": 2,
        "columns": ["input", "instruction", "output"],
        "files": ["d.csv"],
    }


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("text,label\nhello,1\nbad,row,extra\n")
    with pytest.raises(InvalidFile, match=r"d\.csv: line 3 has 3 fields, the header has 2"):
        inspect_dataset(path)


def test_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(MESSAGES_ROWS[:1] * 6), path)
    got = inspect_dataset(path)
    assert got.facts == {
        "data_format": "openai-messages",
        "rows": 6,
        "columns": ["messages"],
        "files": ["d.parquet"],
    }


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1 but not really")
    with pytest.raises(InvalidFile, match=r"d\.parquet: not a readable Parquet file"):
        inspect_dataset(path)


def test_plain_text(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("First line.\n\nSecond line.\nThird.\n")
    got = inspect_dataset(path)
    assert got.facts == {"data_format": "text", "rows": 3, "columns": ["text"], "files": ["corpus.txt"]}


def test_text_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"ok\nbad \xff\n")
    with pytest.raises(InvalidFile, match=r"corpus\.txt: line 2 is not UTF-8"):
        inspect_dataset(path)


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n{"text": "c"}\n')
    with pytest.raises(InvalidFile, match=r"d.jsonl: line 3 is not valid JSON"):
        inspect_dataset(path)


def test_jsonl_row_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n["b"]\n')
    with pytest.raises(InvalidFile, match=r"d\.jsonl: line 2 is a JSON list, not an object"):
        inspect_dataset(path)


def test_malformed_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text('[\n {"text": "a"},\n {"text": }\n]')
    with pytest.raises(InvalidFile, match=r"d.json: not valid JSON \(line 3"):
        inspect_dataset(path)


def test_json_over_the_cap_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path / "d.json", TEXT_ROWS)
    monkeypatch.setattr(datasets, "MAX_JSON_BYTES", 10)
    with pytest.raises(Refused, match="convert it to JSON Lines"):
        inspect_dataset(path)


def test_json_object_is_metadata_not_rows(tmp_path: Path) -> None:
    assert read_data_file(write_json(tmp_path / "dataset_info.json", {"features": {}})).rows is None


# --- folders ------------------------------------------------------------------------------------------


def test_folder_with_card_and_auxiliary_files(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    write_jsonl(folder / "train.jsonl", SHAREGPT_ROWS)
    write_jsonl(folder / "data" / "test.jsonl", SHAREGPT_ROWS[:1])
    write_json(folder / "dataset_info.json", {"description": "x"})
    (folder / "README.md").write_text(
        "---\nlicense: cc-by-4.0\ntask_categories: [text-generation]\n---\n# ds\n"
    )
    (folder / "LICENSE.txt").write_text("Attribution 4.0 International\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "x.jsonl").write_text("not data\n")
    got = inspect_dataset(folder)
    assert got.facts == {
        "data_format": "sharegpt",
        "rows": 3,
        "columns": ["conversations"],
        "files": ["data/test.jsonl", "train.jsonl"],
    }
    assert got.license.id == "CC-BY-4.0" and got.license.source == "README.md metadata 'license'"
    assert got.side["card"]["task_categories"] == ["text-generation"]
    assert got.files == ["LICENSE.txt", "README.md", "data/test.jsonl", "dataset_info.json", "train.jsonl"]
    assert all(d["path"] != "LICENSE.txt" for d in got.side["data_files"])


def test_folder_of_mixed_formats(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "ds" / "a.jsonl", ALPACA_ROWS)
    write_jsonl(tmp_path / "ds" / "b.jsonl", MESSAGES_ROWS)
    got = inspect_dataset(tmp_path / "ds")
    assert got.facts["data_format"] == "mixed" and got.facts["rows"] == 5


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "README.md").write_text("# nothing\n")
    with pytest.raises(InvalidFile, match="no data files"):
        inspect_dataset(tmp_path / "ds")


def test_dataset_cache_origin(tmp_path: Path) -> None:
    snap = tmp_path / "hub" / "datasets--tatsu-lab--alpaca" / "snapshots" / "deadbeef"
    write_jsonl(snap / "data.jsonl", ALPACA_ROWS)
    origin = inspect_dataset(snap).origin
    assert (origin.repo_id, origin.revision) == ("tatsu-lab/alpaca", "deadbeef")

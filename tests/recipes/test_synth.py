"""The demo-data recipe: owlkit's own generated task data (counts, format, held-out disjointness,
determinism, license detection, storage and the `owl data demo` command)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from owlkit.errors import UsageError
from owlkit.formats.datasets import inspect_dataset
from owlkit.recipes.demo_data import (
    DEFAULT_NAME,
    HELDOUT_FILE,
    INPUT_SEP,
    OUTPUT_SEP,
    TRAIN_FILE,
    WORDS,
    DemoDataParams,
    alpaca_row,
    demo_data,
    generate,
    write_demo_data,
)
from owlkit.store import open_store

SMALL = {"train": 300, "heldout": 60}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_word_list_is_clean() -> None:
    assert len(WORDS) >= 300
    assert not [w for w, n in Counter(WORDS).items() if n > 1]
    assert all(w.isascii() and w.isalpha() and w.islower() for w in WORDS)


def test_alpaca_row_reverses() -> None:
    row = alpaca_row(("apple", "river", "seven"))
    assert row["input"] == "apple, river, seven"
    assert row["output"] == "seven | river | apple"
    assert row["instruction"]


def test_default_counts_and_disjointness() -> None:
    data = generate(DemoDataParams())
    assert (len(data.train), len(data.heldout)) == (1000, 200)
    sets = [frozenset(r) for r in data.train + data.heldout]
    assert len(set(sets)) == len(sets)  # no two rows anywhere share a word set
    assert not {tuple(r) for r in data.train} & {tuple(r) for r in data.heldout}
    for words in data.train + data.heldout:
        assert 3 <= len(words) <= 5
        assert len(set(words)) == len(words)
        assert set(words) <= set(WORDS)
    # the generator explores the range, not one length
    assert {len(w) for w in data.train} == {3, 4, 5}


def test_heldout_does_not_depend_on_train_size() -> None:
    a = generate(DemoDataParams(train=50, heldout=40, seed=3))
    b = generate(DemoDataParams(train=500, heldout=40, seed=3))
    assert a.heldout == b.heldout
    assert a.train == b.train[:50]


def test_folder_is_alpaca_cc0(tmp_path: Path) -> None:
    params = DemoDataParams(**SMALL, seed=1)
    data = write_demo_data(tmp_path / "d", params)
    ins = inspect_dataset(tmp_path / "d")
    assert ins.kind == "dataset"
    assert ins.facts["data_format"] == "alpaca"
    assert ins.facts["rows"] == 360
    assert ins.facts["columns"] == ["input", "instruction", "output"]
    assert ins.license.id == "CC0-1.0"
    assert not ins.warnings
    train = _rows(tmp_path / "d" / TRAIN_FILE)
    heldout = _rows(tmp_path / "d" / HELDOUT_FILE)
    assert len(train) == 300 and len(heldout) == 60
    assert [r["input"] for r in heldout] == [INPUT_SEP.join(w) for w in data.heldout]
    for row in train + heldout:
        words = row["input"].split(INPUT_SEP)
        assert row["output"].split(OUTPUT_SEP) == words[::-1]
    card = ins.side["card"]
    assert card["license"] == "cc0-1.0"
    assert card["seed"] == 1 and card["generator"] == "owlkit.recipes.demo_data"


def test_license_file_alone_is_cc0(tmp_path: Path) -> None:
    """The LICENSE text is recognised by itself, not only through the card's metadata."""
    from owlkit.formats.license import match_license_text

    write_demo_data(tmp_path / "d", DemoDataParams(train=5, heldout=5))
    assert match_license_text((tmp_path / "d" / "LICENSE").read_text()) == "CC0-1.0"


def test_stored_digest_is_reproducible(tmp_path: Path) -> None:
    params = DemoDataParams(**SMALL, seed=7)
    first = demo_data(open_store(tmp_path / "a", write=True), params)
    store_b = open_store(tmp_path / "b", write=True)
    second = demo_data(store_b, DemoDataParams(**SMALL, seed=7))
    assert first == second
    other = demo_data(store_b, DemoDataParams(**SMALL, seed=8), name="other")
    assert other != first
    rec = store_b.find(DEFAULT_NAME)
    m = rec.manifest
    assert (m.kind, m.license, m.parents) == ("dataset", "CC0-1.0", [])
    assert m.recipe.name == "demo-data" and m.recipe.seed == 7 and m.recipe.inputs == {}
    assert m.recipe.params == {"train": 300, "heldout": 60, "seed": 7, "min_words": 3, "max_words": 5}
    assert m.facts["splits"] == {"train": 300, "heldout": 60}
    assert rec.side["license"]["id"] == "CC0-1.0"


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"train": 0}, "--train"),
        ({"heldout": -1}, "--heldout"),
        ({"seed": -1}, "--seed"),
        ({"min_words": 4, "max_words": 3}, "--min-words"),
        ({"min_words": 1}, "--min-words"),
        ({"train": 2_000_000}, "--train"),
        ({"train": 40_000, "min_words": 2, "max_words": 2}, "--train"),
    ],
)
def test_bad_params(kwargs: dict, flag: str) -> None:
    with pytest.raises(UsageError, match=flag):
        DemoDataParams(**kwargs)


def test_cli_round_trip(owl) -> None:
    r = owl("data", "demo", "--train", "100", "--heldout", "20", "--seed", "2", "--json")
    assert r.code == 0, r.err
    got = r.json()
    assert got["names"] == ["demo-data:latest"]
    assert (got["train"], got["heldout"]) == (100, 20)
    again = owl("data", "demo", "--train", "100", "--heldout", "20", "--seed", "2", "--name", "again")
    assert again.code == 0, again.err
    assert got["digest"][:19] in again.out and "100 train" in again.out
    shown = owl("show", "demo-data", "--json")
    assert shown.code == 0, shown.err
    assert got["digest"] in shown.out and "CC0-1.0" in shown.out


def test_cli_bad_params(owl) -> None:
    r = owl("data", "demo", "--heldout", "0")
    assert r.code == 2
    assert "--heldout" in r.err
    assert owl("data", "demo", "--name", "bad..name").code == 2


def test_cli_help_explains_the_task(owl) -> None:
    r = owl("data", "demo", "--help")
    assert r.code == 0
    assert "reverse" in r.out.lower() and "seven | river | apple" in r.out

"""Typed views of facts and side records: a key spelt once, a missing or malformed value read as empty."""

from __future__ import annotations

from owlkit.store.records import Facts, Origin, SideInfo


def test_facts_read_typed_values_and_refuse_wrong_types() -> None:
    f = Facts({"architecture": "llama", "parameters": 5, "context_length": True, "shapes": [1], "dtype": 3})
    assert (f.architecture, f.parameters) == ("llama", 5)
    assert f.context_length is None  # a bool is not a count
    assert f.shapes == {} and f.dtype is None and f.quantization is None


def test_side_info_reads_each_record_or_nothing() -> None:
    side = SideInfo(
        {
            "origin": {"source_path": "/m", "repo_id": "org/m", "extra": 1, "revision": 7},
            "warnings": ["w"],
            "flags": "not a list",
            "training": {"steps": 3},
            "environment": {"libraries": {"owlkit": "0.1.0"}},
            "base_ref": "org/base",
        }
    )
    assert side.origin == Origin(source_path="/m", repo_id="org/m") and side.origin.where == "/m"
    assert side.warnings == ["w"] and side.flags == []
    assert side.training["steps"] == 3 and side.libraries == {"owlkit": "0.1.0"}
    assert side.base_ref == "org/base" and side.quality == {} and side.card == {}
    empty = SideInfo({})
    assert empty.origin == Origin() and empty.origin.where is None and empty.inputs == {}

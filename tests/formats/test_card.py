"""owlkit.formats.card: README.md front matter, parsed safely and bounded."""

from __future__ import annotations

import json
from pathlib import Path

from owlkit.formats.card import MAX_FRONT_MATTER, parse_card, parse_card_checked, read_card, read_card_checked

CARD = """---
license: apache-2.0
base_model: org/base
tags:
  - text-generation
datasets: [tatsu-lab/alpaca]
---
# A model

Some prose.
"""


def test_front_matter_and_body() -> None:
    meta, body = parse_card(CARD)
    assert meta == {
        "license": "apache-2.0",
        "base_model": "org/base",
        "tags": ["text-generation"],
        "datasets": ["tatsu-lab/alpaca"],
    }
    assert body == "# A model\n\nSome prose.\n"


def test_no_front_matter_is_all_body() -> None:
    assert parse_card("# Title\n---\nx: 1\n---\n") == ({}, "# Title\n---\nx: 1\n---\n")
    assert parse_card_checked("") == ({}, "", None)


def test_byte_order_mark_and_crlf() -> None:
    meta, body = parse_card("\ufeff---\r\nlicense: mit\r\n---\r\nbody\r\n")
    assert meta == {"license": "mit"} and body == "body\r\n"


def test_empty_front_matter() -> None:
    assert parse_card_checked("---\n---\nbody\n") == ({}, "body\n", None)


def test_invalid_yaml_is_ignored_with_a_reason() -> None:
    meta, body, problem = parse_card_checked("---\nlicense: [mit\n---\nbody\n")
    assert meta == {} and body == "body\n"
    assert problem and problem.startswith("front matter is not valid YAML")


def test_non_mapping_is_ignored_with_a_reason() -> None:
    meta, _, problem = parse_card_checked("---\n- a\n- b\n---\n")
    assert meta == {} and problem == "front matter is a YAML list, not a mapping"


def test_unclosed_front_matter() -> None:
    meta, body, problem = parse_card_checked("---\nlicense: mit\n# no end\n")
    assert meta == {} and body.startswith("---") and "closing" in problem


def test_python_tags_are_not_constructed() -> None:
    # safe_load refuses python/object tags: metadata is ignored, nothing runs.
    meta, _, problem = parse_card_checked("---\nx: !!python/object/apply:os.system ['true']\n---\n")
    assert meta == {} and "not valid YAML" in problem


def test_values_become_json_types() -> None:
    meta, _ = parse_card("---\ndate: 2024-05-01\nwhen: 2024-05-01 10:00:00\n1: one\nnan: .nan\n---\n")
    assert meta == {"date": "2024-05-01", "when": "2024-05-01T10:00:00", "1": "one", "nan": "nan"}
    json.dumps(meta)  # the side record is JSON


def test_alias_bomb_is_bounded() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(
            f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]"
        )
    meta, _, problem = parse_card_checked("---\n" + "\n".join(lines) + "\n---\n")
    assert meta == {} and "YAML aliases" in problem


def test_oversized_front_matter_is_not_parsed() -> None:
    big = "---\n" + "k: " + "x" * (MAX_FRONT_MATTER + 1) + "\n---\nbody\n"
    meta, body, problem = parse_card_checked(big)
    assert meta == {} and body == "body\n" and "larger than" in problem


def test_read_card(tmp_path: Path) -> None:
    assert read_card(tmp_path) is None
    (tmp_path / "README.md").write_text(CARD)
    meta, body = read_card(tmp_path)
    assert meta["license"] == "apache-2.0" and body.startswith("# A model")


def test_read_card_any_case_and_bad_bytes(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_bytes(b"---\nlicense: mit\n---\nbad \xff byte\n")
    meta, body, problem = read_card_checked(tmp_path)
    assert meta == {"license": "mit"} and "\ufffd" in body and problem is None

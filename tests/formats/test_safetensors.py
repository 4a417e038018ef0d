"""owlkit.formats.safetensors: the strict header reader, against the safetensors library and hostile files."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owlkit.errors import InvalidFile, NotFound
from owlkit.formats.safetensors import DTYPES, read_safetensors_header
from owltest import PROPS, flip_or_truncate, read_or_one_line_invalid

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
STORIES = SHARED / "realmodels" / "stories260k" / "hf" / "model.safetensors"


def raw_file(path: Path, header: dict | str | bytes, data: bytes = b"", *, length: int | None = None) -> Path:
    """Write a safetensors file by hand: u64 length, header bytes, data. ``length`` overrides the u64."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(",", ":"))
    if isinstance(header, str):
        header = header.encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def valid_file(tmp: Path) -> Path:
    """A small valid file written by the safetensors library itself."""
    from safetensors.numpy import save_file

    tensors = {
        "a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
        "b.bias": np.ones(5, dtype=np.float16),
        "c.ids": np.array([1, -2, 3], dtype=np.int64),
        "d.mask": np.array([True, False]),
        "e.q": np.arange(6, dtype=np.int8).reshape(2, 3),
        "f.empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = tmp / "valid.safetensors"
    save_file(tensors, str(path), metadata={"format": "np", "note": "tiny"})
    return path


# --- agreement with the safetensors library ----------------------------------------------------------


def test_matches_the_safetensors_library(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = valid_file(tmp_path)
    h = read_safetensors_header(path)
    raw = path.read_bytes()
    assert h.data_start == 8 + h.header_len
    assert h.metadata == {"format": "np", "note": "tiny"}
    with safe_open(str(path), "np") as f:
        assert f.metadata() == h.metadata
        assert sorted(f.keys()) == sorted(t.name for t in h.tensors)
        for t in h.tensors:
            arr = f.get_tensor(t.name)
            assert t.shape == arr.shape
            assert f.get_slice(t.name).get_dtype() == t.dtype
            # Absolute offsets point at exactly the library's bytes.
            assert raw[t.begin : t.end] == arr.tobytes()
    begins = [t.begin for t in h.tensors]
    assert begins == sorted(begins)
    assert h.tensors[-1].end == len(raw)
    assert h.parameters == 12 + 5 + 3 + 2 + 6 + 0
    assert h.dtype_summary() == "float32"


def test_torch_dtypes_bf16_and_fp8(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    path = tmp_path / "t.safetensors"
    tensors = {
        "w": torch.zeros(4, 8, dtype=torch.bfloat16),
        "s": torch.zeros(3, dtype=torch.float32),
        "f8": torch.zeros(2, 2, dtype=torch.float8_e4m3fn),
    }
    save_file(tensors, str(path))
    h = read_safetensors_header(path)
    loaded = load_file(str(path))
    assert {t.name: (t.dtype, t.shape) for t in h.tensors} == {
        "w": ("BF16", (4, 8)),
        "s": ("F32", (3,)),
        "f8": ("F8_E4M3", (2, 2)),
    }
    assert {n: tuple(v.shape) for n, v in loaded.items()} == {t.name: t.shape for t in h.tensors}
    assert h.dtype_summary() == "bfloat16"
    assert h.metadata == {}


@pytest.mark.realmodel
def test_real_stories260k() -> None:
    if not STORIES.exists():
        pytest.skip(f"real model absent: {STORIES} (set OWL_SHARED)")
    from safetensors import safe_open

    h = read_safetensors_header(STORIES)
    assert h.parameters == 260_032  # tied embeddings: no lm_head.weight
    assert len(h.tensors) == 47
    assert "lm_head.weight" not in {t.name for t in h.tensors}
    assert h.dtype_summary() == "float32"
    assert h.tensors[-1].end == STORIES.stat().st_size
    with safe_open(str(STORIES), "np") as f:
        assert f.metadata() == h.metadata
        names = f.keys()  # safe_open is not a mapping: no `in f`
        assert {k: tuple(f.get_slice(k).get_shape()) for k in names} == {t.name: t.shape for t in h.tensors}


# --- accepted edge cases ------------------------------------------------------------------------------


def test_entries_out_of_offset_order_are_returned_in_data_order(tmp_path: Path) -> None:
    header = {"z": entry("F32", [1], 0, 4), "a": entry("F32", [2], 4, 12)}
    # JSON order (a, z) differs from data order (z, a), as in files written name-sorted.
    text = json.dumps({"a": header["a"], "z": header["z"]})
    h = read_safetensors_header(raw_file(tmp_path / "x.safetensors", text, bytes(12)))
    assert [t.name for t in h.tensors] == ["z", "a"]
    assert h.tensors[0].begin == h.data_start


def test_zero_size_tensors_and_trailing_space_padding(tmp_path: Path) -> None:
    header = {"e": entry("F32", [0, 5], 0, 0), "x": entry("U8", [3], 0, 3), "f": entry("I8", [0], 3, 3)}
    text = json.dumps(header) + "    "  # the writer pads the header with spaces to 8 bytes
    h = read_safetensors_header(raw_file(tmp_path / "x.safetensors", text, b"abc"))
    assert [(t.name, t.numel) for t in h.tensors] == [("e", 0), ("x", 3), ("f", 0)]
    assert h.parameters == 3


def test_empty_file_of_tensors(tmp_path: Path) -> None:
    h = read_safetensors_header(raw_file(tmp_path / "x.safetensors", "{}"))
    assert h.tensors == [] and h.parameters == 0 and h.dtype_summary() is None


def test_sub_byte_dtype_f4_sized_in_bits(tmp_path: Path) -> None:
    ok = raw_file(tmp_path / "ok.safetensors", {"w": entry("F4", [2, 4], 0, 4)}, bytes(4))
    assert read_safetensors_header(ok).tensors[0].numel == 8
    odd = raw_file(tmp_path / "odd.safetensors", {"w": entry("F4", [3], 0, 2)}, bytes(2))
    with pytest.raises(InvalidFile, match="whole bytes"):
        read_safetensors_header(odd)


def test_dtype_table_covers_the_spec() -> None:
    assert set(DTYPES) >= {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"}
    assert {"BOOL", "F8_E4M3", "F8_E5M2"} <= set(DTYPES)
    assert DTYPES["BF16"] == (16, "bfloat16") and DTYPES["F4"][0] == 4


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_safetensors_header(tmp_path / "nope.safetensors")


# --- hand-crafted bad files: one reason each --------------------------------------------------------------

BAD = {
    "truncated-length": (b"\x10\x00\x00", "too short"),
    "truncated-header": (struct.pack("<Q", 100) + b'{"a":', "exceeds the file size"),
    "length-2^40": (struct.pack("<Q", 2**40) + b"{}", "exceeds the 100000000-byte limit"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_lengths(tmp_path: Path, case: str) -> None:
    blob, reason = BAD[case]
    path = tmp_path / "m.safetensors"
    path.write_bytes(blob)
    with pytest.raises(InvalidFile, match=reason) as err:
        read_safetensors_header(path)
    assert str(err.value).startswith("m.safetensors: ") and "\n" not in str(err.value)


def test_header_length_beyond_file_with_small_limit(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "m.safetensors", "{}")
    with pytest.raises(InvalidFile, match="exceeds the 1-byte limit"):
        read_safetensors_header(path, max_header=1)


HEADERS = {
    "gap": ({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 3, 5)}, 5, "gap of 1 bytes"),
    "gap-at-start": ({"a": entry("U8", [2], 2, 4)}, 4, "gap of 2 bytes"),
    "overlap": ({"a": entry("U8", [4], 0, 4), "b": entry("U8", [2], 2, 4)}, 4, "overlaps"),
    "trailing": ({"a": entry("U8", [2], 0, 2)}, 5, "3 trailing bytes"),
    "past-end": ({"a": entry("U8", [8], 0, 8)}, 4, "past the 4-byte data region"),
    "wrong-size": (
        {"a": entry("F32", [3], 0, 8), "b": entry("U8", [8], 8, 16)},
        16,
        "needs 12 bytes but spans 8",
    ),
    "huge-shape": ({"a": entry("F32", [2**62, 2**62], 0, 8)}, 8, "needs more bytes than the file holds"),
    "end-before-begin": ({"a": entry("U8", [0], 4, 2)}, 4, "before it begins"),
    "unknown-dtype": ({"a": entry("Q4", [2], 0, 1)}, 1, "unknown dtype 'Q4'"),
    "nul-in-name": ({"a\x00hidden": entry("U8", [1], 0, 1)}, 1, "control character"),
    "newline-in-name": ({"a\nb": entry("U8", [1], 0, 1)}, 1, "control character"),
    "empty-name": ({"": entry("U8", [1], 0, 1)}, 1, "empty tensor name"),
    "long-name": ({"n" * 1025: entry("U8", [1], 0, 1)}, 1, "longer than 1024"),
    "lone-surrogate": ({"a\ud800": entry("U8", [1], 0, 1)}, 1, "surrogate"),
    "unknown-field": ({"a": {**entry("U8", [1], 0, 1), "extra": 1}}, 1, "unknown field 'extra'"),
    "missing-field": ({"a": {"dtype": "U8", "shape": [1]}}, 1, "missing field 'data_offsets'"),
    "bool-in-shape": ({"a": entry("U8", [True], 0, 1)}, 1, "shape is not a list of non-negative"),
    "negative-dim": ({"a": entry("U8", [-1], 0, 1)}, 1, "shape is not a list of non-negative"),
    "float-offset": ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1.0]}}, 1, "data_offsets"),
    "rank-9": ({"a": entry("U8", [1] * 9, 0, 1)}, 1, "9 dimensions"),
    "entry-not-object": ({"a": [1, 2]}, 0, "not a JSON object"),
    "metadata-not-strings": ({"__metadata__": {"format": 1}}, 0, "__metadata__ value for 'format'"),
    "metadata-not-object": ({"__metadata__": ["pt"]}, 0, "__metadata__ is not a JSON object"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_bad_headers(tmp_path: Path, case: str) -> None:
    header, data_len, reason = HEADERS[case]
    path = raw_file(tmp_path / "m.safetensors", header, bytes(data_len))
    with pytest.raises(InvalidFile, match=reason) as err:
        read_safetensors_header(path)
    message = str(err.value)
    assert message.startswith("m.safetensors: ") and "\n" not in message and len(message) < 400


TEXTS = {
    "duplicate-key": ('{"a":%s,"a":%s}', "duplicate key 'a'"),
    "duplicate-in-entry": (
        '{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
        "duplicate key",
    ),
    "leading-space": (' {"a":%s}', "does not start with '{'"),
    "not-json": ('{"a":%s', "not valid JSON"),
    "nan": ('{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', "non-standard JSON constant NaN"),
    "not-object": ("[1]", "does not start with '{'"),
    "trailing-garbage": ('{"a":%s}x', "not valid JSON"),
    "huge-int": ('{"a":{"dtype":"U8","shape":[%s],"data_offsets":[0,1]}}' % ("9" * 5000), "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(TEXTS))
def test_bad_header_texts(tmp_path: Path, case: str) -> None:
    template, reason = TEXTS[case]
    one = json.dumps(entry("U8", [1], 0, 1))
    text = template.replace("%s", one) if "%s" in template else template
    path = raw_file(tmp_path / "m.safetensors", text, b"\x00")
    with pytest.raises(InvalidFile, match=reason):
        read_safetensors_header(path)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "m.safetensors", b'{"a\xff":1}')
    with pytest.raises(InvalidFile, match="not valid UTF-8"):
        read_safetensors_header(path)


def test_too_many_containers_refused_before_parsing(tmp_path: Path) -> None:
    path = raw_file(tmp_path / "m.safetensors", '{"a":' + "[" * 5000 + "]" * 5000 + "}")
    with pytest.raises(InvalidFile, match="JSON objects/arrays"):
        read_safetensors_header(path)


def test_tensor_count_bound(tmp_path: Path) -> None:
    # No real entry is under ~45 bytes, so more than one per 10 header bytes is refused up front.
    text = "{" + ",".join(f'"{i}":0' for i in range(1000)) + "}"
    path = raw_file(tmp_path / "m.safetensors", text)
    with pytest.raises(InvalidFile, match="1000 tensors in a"):
        read_safetensors_header(path)


# --- property-based: never anything but InvalidFile, never a big allocation ---------------------------


def _read_or_invalid(path: Path) -> None:
    read_or_one_line_invalid(read_safetensors_header, path)


@PROPS
@given(blob=st.binary(max_size=512))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "random.safetensors"
    path.write_bytes(blob)
    _read_or_invalid(path)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=4))
def test_random_json_headers(tmp_path_factory: pytest.TempPathFactory, header: dict) -> None:
    path = raw_file(tmp_path_factory.getbasetemp() / "json.safetensors", json.dumps(header), b"\x00" * 4)
    _read_or_invalid(path)


@pytest.fixture(scope="module")
def valid_blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return valid_file(tmp_path_factory.mktemp("st")).read_bytes()


def _mutate(blob: bytes, data: st.DataObject) -> bytes:
    header_end = 8 + int.from_bytes(blob[:8], "little")
    kind = data.draw(st.sampled_from(["flip", "truncate", "huge", "append", "digit"]))
    b = bytearray(blob)
    if kind in ("flip", "truncate"):
        flip_or_truncate(b, kind, header_end, data)
    elif kind == "huge":
        i = data.draw(st.integers(0, header_end - 8))
        b[i : i + 8] = struct.pack("<Q", data.draw(st.sampled_from([2**64 - 1, 2**63, 2**40, 2**32 + 1])))
    elif kind == "append":
        b += data.draw(st.binary(min_size=1, max_size=64))
    else:  # change one digit inside the JSON: offsets and shapes
        digits = [i for i in range(8, header_end) if chr(b[i]).isdigit()]
        i = data.draw(st.sampled_from(digits))
        b[i] = ord(str(data.draw(st.integers(0, 9))))
    return bytes(b)


@PROPS
@given(data=st.data())
def test_mutated_valid_file(
    tmp_path_factory: pytest.TempPathFactory, valid_blob: bytes, data: st.DataObject
) -> None:
    path = tmp_path_factory.getbasetemp() / "mutated.safetensors"
    path.write_bytes(_mutate(valid_blob, data))
    _read_or_invalid(path)


@settings(max_examples=50, deadline=2000)
@given(data=st.data())
def test_mutated_file_allocates_no_more_than_its_size(
    tmp_path_factory: pytest.TempPathFactory, valid_blob: bytes, data: st.DataObject
) -> None:
    path = tmp_path_factory.getbasetemp() / "mem.safetensors"
    path.write_bytes(_mutate(valid_blob, data))
    tracemalloc.start()
    try:
        _read_or_invalid(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= path.stat().st_size + 1024 * 1024


def test_huge_declared_header_allocates_nothing(tmp_path: Path) -> None:
    # A 4 MiB file claiming a 90 MB header: refused before any read of that size.
    path = raw_file(tmp_path / "m.safetensors", b"{" + bytes(4 << 20), length=90_000_000)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile, match="exceeds the file size"):
            read_safetensors_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024

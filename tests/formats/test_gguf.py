"""owlkit.formats.gguf: the strict GGUF reader, against gguf-py's writer and reader and hostile files."""

from __future__ import annotations

import os
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owlkit.errors import InvalidFile, NotFound
from owlkit.formats.base import MODEL_FACT_KEYS, digest_text
from owlkit.formats.gguf import (
    GGML_TYPES,
    LLAMA_FTYPES,
    GGUFFile,
    gguf_facts,
    gguf_license,
    gguf_origin,
    gguf_type_histogram,
    read_gguf,
)
from owltest import PROPS, flip_or_truncate, read_or_one_line_invalid

gguf = pytest.importorskip("gguf", reason="the gguf package (owlkit[ml]) builds the test files")

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
SMOLLM = SHARED / "realmodels" / "smollm2-135m-instruct-q4_1" / "SmolLM2-135M-Instruct.Q4_1.gguf"
TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


# --- building files -------------------------------------------------------------------------------------


def write_with_gguf(path: Path, *, output_weight: bool = False, file_type: int | None = 7) -> Path:
    """A small, valid llama-like GGUF written by gguf-py's own writer."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(2)
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_feed_forward_length(64)
    w.add_head_count(4)
    if file_type is not None:
        w.add_file_type(file_type)
    w.add_license("mit")
    w.add_string("general.source.huggingface.repository", "tiny-org/tiny-llama")
    w.add_token_list(["<unk>", "<s>", "</s>", "a", "b", "ab", "ĠÄ", "日本"])
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5, 2.25, 0.5, 1.0, 1.0, 3.0, 4.0])
    w.add_array("tokenizer.ggml.token_type", [2, 3, 3, 1, 1, 1, 1, 1])
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_chat_template(TEMPLATE)
    w.add_tensor("token_embd.weight", np.arange(8 * 32, dtype=np.float32).reshape(8, 32))
    # Q8_0 given as raw blocks: 4 rows of 32 elements = 4 x 34 bytes.
    q8 = np.frombuffer(bytes(range(136)), dtype=np.uint8).reshape(4, 34)
    w.add_tensor("blk.0.attn_q.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float16))
    w.add_tensor("blk.0.ffn_up.weight", np.zeros((3, 64, 32), dtype=np.float32))
    if output_weight:
        w.add_tensor("output.weight", np.ones((8, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else s
    return u64(len(b)) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def tinfo(name: str | bytes, dims: list[int], type_id: int, offset: int) -> bytes:
    return gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims) + u32(type_id) + u64(offset)


ARCH = kv("general.architecture", 8, gstr("llama"))


def raw_gguf(
    kvs: list[bytes] | None = None,
    tensors: list[bytes] | None = None,
    data: bytes = bytes(16),
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
) -> bytes:
    """A GGUF assembled by hand, for the fields gguf-py's writer will not get wrong on purpose."""
    kvs = [ARCH] if kvs is None else kvs
    tensors = [tinfo("w", [4], 0, 0)] if tensors is None else tensors
    head = magic + u32(version) + u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    body += bytes(-len(body) % alignment)
    return body + data


def put(tmp: Path, blob: bytes, name: str = "m.gguf") -> Path:
    path = tmp / name
    path.write_bytes(blob)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_with_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


# --- agreement with gguf-py -----------------------------------------------------------------------------


def assert_same_as_gguf_reader(g: GGUFFile, path: Path) -> None:
    r = gguf.GGUFReader(str(path))
    assert g.data_start == r.data_offset
    assert len(g.tensors) == len(r.tensors)
    for ours, theirs in zip(g.tensors, r.tensors, strict=True):
        assert ours.name == theirs.name
        assert ours.shape == tuple(int(d) for d in theirs.shape)
        assert ours.type_id == int(theirs.tensor_type)
        assert ours.type_name == theirs.tensor_type.name
        assert ours.offset == int(theirs.data_offset)
        assert ours.nbytes == int(theirs.n_bytes)
        assert ours.numel == int(theirs.n_elements)
    fields = {k: f.contents() for k, f in r.fields.items() if not k.startswith("GGUF.")}
    assert fields == g.metadata


def test_matches_gguf_reader(built: Path) -> None:
    g = read_gguf(built)
    assert_same_as_gguf_reader(g, built)
    assert g.version == 3 and g.alignment == 32 and g.warnings == []
    shapes = {t.name: (t.shape, t.type_name, t.nbytes) for t in g.tensors}
    assert shapes["token_embd.weight"] == ((32, 8), "F32", 8 * 32 * 4)  # ggml order: ne0 first
    assert shapes["blk.0.attn_q.weight"] == ((32, 4), "Q8_0", 136)
    assert shapes["blk.0.ffn_up.weight"] == ((32, 64, 3), "F32", 3 * 64 * 32 * 4)
    assert g.metadata["tokenizer.ggml.tokens"][-2:] == ["ĠÄ", "日本"]
    assert g.metadata["tokenizer.ggml.scores"] == [0.0, -1.5, 2.25, 0.5, 1.0, 1.0, 3.0, 4.0]
    assert g.metadata["tokenizer.ggml.add_bos_token"] is True
    raw = built.read_bytes()
    t = next(t for t in g.tensors if t.name == "blk.0.attn_q.weight")
    assert raw[t.offset : t.offset + t.nbytes] == bytes(range(136))


def test_facts(built: Path) -> None:
    g = read_gguf(built)
    facts = gguf_facts(g)
    assert set(facts) == set(MODEL_FACT_KEYS)
    assert facts["architecture"] == "llama"
    assert facts["parameters"] == 8 * 32 + 4 * 32 + 32 + 3 * 64 * 32
    assert facts["dtype"] == "F32"
    assert facts["quantization"] == "gguf:Q8_0"  # general.file_type 7 = MOSTLY_Q8_0
    assert facts["vocab_size"] == 8  # no llama.vocab_size: the token list's length
    assert facts["context_length"] == 256
    assert facts["shapes"] == {"layers": 2, "hidden": 32, "intermediate": 64, "heads": 4, "kv_heads": 4}
    assert facts["tie_word_embeddings"] is True
    assert facts["chat_template_digest"] == digest_text(TEMPLATE)
    assert facts["tokenizer_digest"] is None
    assert gguf_type_histogram(g) == {"F32": 2, "F16": 1, "Q8_0": 1}
    assert gguf_license(g) == "mit"
    assert gguf_origin(g) == ("tiny-org/tiny-llama", None, "GGUF general.source.huggingface.repository")


def test_facts_without_file_type_and_with_output(tmp_path: Path) -> None:
    g = read_gguf(write_with_gguf(tmp_path / "x.gguf", output_weight=True, file_type=None))
    facts = gguf_facts(g)
    assert facts["quantization"] == "gguf:F32"  # the predominant tensor type
    assert facts["tie_word_embeddings"] is False


def test_big_endian_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("w", np.ones(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(InvalidFile, match="big-endian GGUF not supported"):
        read_gguf(path)


def test_ggml_type_table_matches_gguf_py() -> None:
    known = {t.value: t for t in gguf.GGMLQuantizationType}
    for type_id, t in known.items():
        block, size = gguf.GGML_QUANT_SIZES[t]
        if t.name == "Q8_1":
            # ggml's block_q8_1 is two fp16 + 32 int8 = 36 bytes; gguf-py still says 4 + 4 + 32.
            assert GGML_TYPES[type_id] == ("Q8_1", 32, 36)
            continue
        assert GGML_TYPES[type_id] == (t.name, block, size), t.name
    assert {"BF16", "TQ1_0", "TQ2_0", "MXFP4", "IQ4_XS", "Q6_K", "I64", "F64"} <= {
        name for name, _, _ in GGML_TYPES.values()
    }


def test_file_type_names_match_gguf_py() -> None:
    for ft in gguf.LlamaFileType:
        if ft.name == "GUESSED":
            continue
        assert LLAMA_FTYPES[ft.value] == ft.name.removeprefix("MOSTLY_").removeprefix("ALL_"), ft.name


@pytest.mark.realmodel
def test_real_smollm2() -> None:
    if not SMOLLM.exists():
        pytest.skip(f"real model absent: {SMOLLM} (set OWL_SHARED)")
    start = time.perf_counter()
    g = read_gguf(SMOLLM)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, f"parsing took {elapsed:.2f}s"
    assert len(g.tensors) == 272
    assert g.parameters == 134_515_008
    assert gguf_type_histogram(g) == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert gguf_license(g) == "apache-2.0"
    facts = gguf_facts(g)
    assert facts["architecture"] == "llama"
    assert facts["dtype"] == "Q4_1" and facts["quantization"] == "gguf:Q4_1"
    assert facts["shapes"] == {"layers": 30, "hidden": 576, "intermediate": 1536, "heads": 9, "kv_heads": 3}
    assert facts["vocab_size"] == 49152 and len(g.metadata["tokenizer.ggml.tokens"]) == 49152
    assert facts["chat_template_digest"] == digest_text(g.metadata["tokenizer.chat_template"])
    assert facts["tie_word_embeddings"] is True
    assert_same_as_gguf_reader(g, SMOLLM)
    tracemalloc.start()
    try:
        read_gguf(SMOLLM)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < SMOLLM.stat().st_size // 4  # metadata only: the tensor data is never read


# --- origin and license ---------------------------------------------------------------------------------


def _with(metadata: dict) -> GGUFFile:
    return GGUFFile(Path("x.gguf"), 3, 32, metadata, [], 0)


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, (None, None, None)),
        (
            {"general.source.url": "https://huggingface.co/org/name"},
            ("org/name", None, "GGUF general.source.url"),
        ),
        (
            {"general.repo_url": "https://huggingface.co/org/name/tree/v1.0"},
            ("org/name", "v1.0", "GGUF general.repo_url"),
        ),
        (
            {"general.url": "https://hf.co/org/name/resolve/refs%2Fpr%2F3/model.gguf"},
            ("org/name", "refs/pr/3", "GGUF general.url"),
        ),
        ({"general.url": "https://huggingface.co/gpt2"}, ("gpt2", None, "GGUF general.url")),
        ({"general.url": "https://github.com/org/name"}, (None, None, None)),
        ({"general.url": "https://huggingface.co/datasets/org/data"}, (None, None, None)),
        ({"general.source.url": "org/name"}, (None, None, None)),  # a bare id only counts under .repository
        (
            {"general.source.url": "https://example.com", "general.url": "https://huggingface.co/a/b"},
            ("a/b", None, "GGUF general.url"),
        ),
        (
            {"general.source.huggingface.repository": "https://huggingface.co/a/b/commit/abc123"},
            ("a/b", "abc123", "GGUF general.source.huggingface.repository"),
        ),
        ({"general.source.huggingface.repository": "not a repo"}, (None, None, None)),
    ],
)
def test_origin(metadata: dict, expected: tuple) -> None:
    assert gguf_origin(_with(metadata)) == expected


def test_license_as_given() -> None:
    assert gguf_license(_with({"general.license": "Apache-2.0"})) == "Apache-2.0"
    assert gguf_license(_with({"general.license": 3})) is None
    assert gguf_license(_with({})) is None


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        read_gguf(tmp_path / "nope.gguf")


def test_hand_built_file_is_valid(tmp_path: Path) -> None:
    g = read_gguf(put(tmp_path, raw_gguf()))
    assert [(t.name, t.shape, t.type_name, t.nbytes) for t in g.tensors] == [("w", (4,), "F32", 16)]
    assert g.tensors[0].offset == g.data_start
    vocab_only = read_gguf(put(tmp_path, raw_gguf(tensors=[], data=b"")[:-4], "v.gguf"))  # no final padding
    assert vocab_only.tensors == []


def test_custom_alignment(tmp_path: Path) -> None:
    kvs = [ARCH, kv("general.alignment", 4, u32(64))]
    tensors = [tinfo("a", [4], 0, 0), tinfo("b", [4], 0, 64)]
    g = read_gguf(put(tmp_path, raw_gguf(kvs, tensors, bytes(80), alignment=64)))
    assert g.alignment == 64 and g.data_start % 64 == 0
    assert [t.offset - g.data_start for t in g.tensors] == [0, 64]


# --- hand-crafted bad files: one reason each --------------------------------------------------------------

W = [tinfo("w", [4], 0, 0)]
BAD = {
    "bad-magic": (raw_gguf(magic=b"GGML"), "magic is b'GGML'"),
    "too-short": (b"GGUF\x03\x00", "too short"),
    "version-1": (raw_gguf(version=1), "version 1 is no longer supported"),
    "version-4": (raw_gguf(version=4), "version 4 is not supported"),
    "huge-tensor-count": (raw_gguf(n_tensors=2**60), "tensor count 1152921504606846976 exceeds"),
    "huge-kv-count": (raw_gguf(n_kv=2**60), "key/value count 1152921504606846976 exceeds"),
    "counts-past-file": (raw_gguf(n_kv=1000), "cannot fit"),
    "huge-key-length": (raw_gguf([u64(2**62) + b"k"]), "length 4611686018427387904 exceeds"),
    "string-past-file": (raw_gguf([kv("k", 8, u64(10_000) + b"abc")]), "needs 10000 bytes"),
    "nested-array": (raw_gguf([kv("a", 9, u32(9) + u64(1) + u32(0) + u64(1) + b"\x00")]), "nested arrays"),
    "array-bad-type": (raw_gguf([kv("a", 9, u32(13) + u64(1) + b"\x00")]), "unknown element type 13"),
    "array-too-long": (raw_gguf([kv("a", 9, u32(0) + u64(2**40))]), "exceeds the limit"),
    "string-array-past-file": (raw_gguf([kv("a", 9, u32(8) + u64(100_000))]), "needs 800000 bytes"),
    "string-in-array-too-long": (raw_gguf([kv("a", 9, u32(8) + u64(1) + u64(2**50))]), "a\\[0\\] length"),
    "bad-value-type": (raw_gguf([kv("k", 13, b"\x00" * 8)]), "unknown type 13"),
    "bool-2": (raw_gguf([kv("k", 7, b"\x02")]), "BOOL holding 2"),
    "bool-array-2": (raw_gguf([kv("k", 9, u32(7) + u64(2) + b"\x01\x02")]), "other than 0 or 1"),
    "empty-key": (raw_gguf([kv("", 0, b"\x01")]), "empty metadata key"),
    "nul-in-key": (raw_gguf([kv("a\x00b", 0, b"\x01")]), "control character"),
    "key-not-utf8": (raw_gguf([kv(b"a\xffb", 0, b"\x01")]), "not valid UTF-8"),
    "value-not-utf8": (raw_gguf([kv("k", 8, gstr(b"\xc3("))]), "not valid UTF-8"),
    "duplicate-key": (raw_gguf([ARCH, ARCH]), "duplicate metadata key 'general.architecture'"),
    "alignment-48": (raw_gguf([kv("general.alignment", 4, u32(48))]), "not a power of two"),
    "alignment-0": (raw_gguf([kv("general.alignment", 4, u32(0))]), "not a power of two"),
    "alignment-u64": (raw_gguf([kv("general.alignment", 10, u64(32))]), "stored as UINT32"),
    "n-dims-5": (raw_gguf(tensors=[tinfo("w", [4, 1, 1, 1, 1], 0, 0)]), "5 dimensions"),
    "n-dims-0": (raw_gguf(tensors=[tinfo("w", [], 0, 0)]), "0 dimensions"),
    "zero-dim": (raw_gguf(tensors=[tinfo("w", [4, 0], 0, 0)]), "zero dimension"),
    "numel-overflow": (raw_gguf(tensors=[tinfo("w", [2**31, 2**31, 2**31], 0, 0)]), "more than 2\\^62"),
    "dim-2^64-1": (raw_gguf(tensors=[tinfo("w", [2**64 - 1], 0, 0)]), "more than 2\\^62"),
    "bad-type": (raw_gguf(tensors=[tinfo("w", [4], 99, 0)]), "unknown ggml type id 99"),
    "removed-type": (raw_gguf(tensors=[tinfo("w", [32], 4, 0)]), "removed ggml type Q4_2"),
    "block-divisibility": (
        raw_gguf(tensors=[tinfo("w", [16], 2, 0)]),
        "not a multiple of Q4_0's block of 32",
    ),
    "empty-tensor-name": (raw_gguf(tensors=[tinfo("", [4], 0, 0)]), "empty name"),
    "tensor-name-64-bytes": (raw_gguf(tensors=[tinfo("n" * 64, [4], 0, 0)]), "longer than llama.cpp's 63"),
    "nul-in-tensor-name": (raw_gguf(tensors=[tinfo("w\x00x", [4], 0, 0)]), "control character"),
    "duplicate-tensor": (raw_gguf(tensors=W + W, data=bytes(48)), "duplicate tensor name 'w'"),
    "unaligned-offset": (raw_gguf(tensors=[*W, tinfo("v", [4], 0, 16)], data=bytes(48)), "not aligned to 32"),
    "gap": (raw_gguf(tensors=[*W, tinfo("v", [4], 0, 64)], data=bytes(96)), "gap before tensor 'v'"),
    "overlap": (
        raw_gguf(tensors=[tinfo("w", [16], 0, 0), tinfo("v", [4], 0, 32)], data=bytes(80)),
        "overlaps",
    ),
    "out-of-order": (
        raw_gguf(tensors=[tinfo("w", [4], 0, 32), tinfo("v", [4], 0, 0)], data=bytes(48)),
        "gap",
    ),
    "out-of-bounds": (raw_gguf(tensors=[tinfo("w", [64], 0, 0)], data=bytes(32)), "runs past the end"),
    "trailing-bytes": (raw_gguf(data=bytes(16 + 16 + 40)), "40 trailing bytes"),
    "truncated-kv": (raw_gguf([kv("general.name", 8, gstr("x" * 40))])[:80], "needs"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_files(tmp_path: Path, case: str) -> None:
    blob, reason = BAD[case]
    with pytest.raises(InvalidFile, match=reason) as err:
        read_gguf(put(tmp_path, blob))
    message = str(err.value)
    assert message.startswith("m.gguf: ") and "\n" not in message and len(message) < 400


def test_tensor_name_of_63_bytes_is_fine(tmp_path: Path) -> None:
    g = read_gguf(put(tmp_path, raw_gguf(tensors=[tinfo("n" * 63, [4], 0, 0)])))
    assert g.tensors[0].name == "n" * 63


def test_invalid_utf8_in_a_token_is_replaced_with_a_warning(tmp_path: Path) -> None:
    tokens = kv("tokenizer.ggml.tokens", 9, u32(8) + u64(2) + gstr("ok") + gstr(b"\xe6\x97"))
    g = read_gguf(put(tmp_path, raw_gguf([ARCH, tokens])))
    assert g.metadata["tokenizer.ggml.tokens"] == ["ok", "\ufffd"]
    assert g.warnings == ["tokenizer.ggml.tokens: 1 strings were not valid UTF-8 (decoded with U+FFFD)"]


# --- property-based: never anything but InvalidFile, never a hang, no big allocation ----------------------


def _read_or_invalid(path: Path) -> None:
    read_or_one_line_invalid(read_gguf, path)


@PROPS
@given(blob=st.binary(max_size=512), prefix=st.sampled_from([b"", b"GGUF", b"GGUF\x03\x00\x00\x00"]))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes, prefix: bytes) -> None:
    _read_or_invalid(put(tmp_path_factory.getbasetemp(), prefix + blob, "random.gguf"))


@pytest.fixture(scope="module")
def valid_blob(built: Path) -> bytes:
    return built.read_bytes()


@pytest.fixture(scope="module")
def length_fields(built: Path, valid_blob: bytes) -> list[int]:
    """Offsets of the counts and of every string length field in the valid file: the values an attacker
    would inflate. Found by looking for each known string preceded by its own u64 length."""
    g = read_gguf(built)
    strings = list(g.metadata) + [t.name for t in g.tensors]
    strings += [v for v in g.metadata.values() if isinstance(v, str)]
    strings += g.metadata["tokenizer.ggml.tokens"]
    positions = {8, 16}
    for s in strings:
        b = s.encode("utf-8")
        at = valid_blob.find(u64(len(b)) + b)
        if at >= 0:
            positions.add(at)
    return sorted(positions)


def _mutate(blob: bytes, header_end: int, lengths: list[int], data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "huge-length", "huge-anywhere", "append"]))
    b = bytearray(blob)
    if kind in ("flip", "truncate"):
        flip_or_truncate(b, kind, header_end, data)
    elif kind in ("huge-length", "huge-anywhere"):
        i = data.draw(st.sampled_from(lengths) if kind == "huge-length" else st.integers(0, header_end - 8))
        value = data.draw(st.sampled_from([2**64 - 1, 2**63, 2**62, 2**40, 2**32, 2**24 + 1, len(blob)]))
        b[i : i + 8] = u64(value)
    else:
        b += data.draw(st.binary(min_size=1, max_size=64))
    return bytes(b)


@PROPS
@given(data=st.data())
def test_mutated_valid_file(
    tmp_path_factory: pytest.TempPathFactory, built: Path, valid_blob: bytes, length_fields: list[int], data
) -> None:
    header_end = read_gguf(built).data_start
    path = put(
        tmp_path_factory.getbasetemp(), _mutate(valid_blob, header_end, length_fields, data), "mut.gguf"
    )
    start = time.perf_counter()
    _read_or_invalid(path)
    assert time.perf_counter() - start < 1.0


@settings(max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_file_allocates_no_more_than_its_size(
    tmp_path_factory: pytest.TempPathFactory, built: Path, valid_blob: bytes, length_fields: list[int], data
) -> None:
    header_end = read_gguf(built).data_start
    path = put(
        tmp_path_factory.getbasetemp(), _mutate(valid_blob, header_end, length_fields, data), "mem.gguf"
    )
    tracemalloc.start()
    try:
        _read_or_invalid(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= path.stat().st_size + 1024 * 1024


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (lambda: raw_gguf([kv("k", 8, u64(9 << 20))]), "needs 9437184 bytes"),  # string length
        (lambda: raw_gguf([kv("k", 9, u32(8) + u64(2 << 20))]), "needs 16777216 bytes"),  # string array
        (lambda: raw_gguf([kv("k", 9, u32(12) + u64(2 << 20))]), "needs 16777216 bytes"),  # float64 array
        (lambda: raw_gguf(n_kv=700_000), "cannot fit"),  # under the cap, over the bytes left
        (lambda: raw_gguf(n_tensors=300_000), "cannot fit"),
    ],
)
def test_large_counts_in_a_large_file_allocate_nothing(tmp_path: Path, build, reason: str) -> None:
    # 8 MiB of zeros after a header whose count or length claims more than that.
    path = put(tmp_path, build() + bytes(8 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(InvalidFile, match=reason):
            read_gguf(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024

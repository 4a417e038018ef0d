"""`owl scan`'s scanner: every file gets a verdict by content, and no payload ever runs.

Payloads are built with pickle.dumps of __reduce__ objects or raw opcodes and are never loaded; each would
create a marker file if it ran, and every test asserts the marker is absent afterwards.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owlkit.formats.scan import FileVerdict, scan_file, scan_path, worst


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def payload(marker: Path, protocol: int = 4) -> bytes:
    return pickle.dumps(_System(marker), protocol=protocol)


def safetensors_bytes() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)


def torch_zip(data_pkl: bytes, member: str = "archive/data.pkl") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(member, data_pkl)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


@pytest.fixture
def marker(tmp_path: Path):
    m = tmp_path / "ran"
    yield m
    assert not m.exists(), "a payload ran"


def one(path: Path) -> FileVerdict:
    (v,) = scan_path(path)
    return v


def test_safetensors_and_plain_files_are_safe(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(safetensors_bytes())
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "README.md").write_text("# a model\n")
    verdicts = scan_path(tmp_path)
    assert [(v.path, v.kind, v.verdict) for v in verdicts] == [
        ("README.md", "other", "safe"),
        ("config.json", "json", "safe"),
        ("model.safetensors", "safetensors", "safe"),
    ]
    assert worst(verdicts) == "safe"


def test_tiny_hf_folder_is_safe(tiny_llama):
    verdicts = scan_path(tiny_llama)
    assert verdicts and worst(verdicts) == "safe", [v for v in verdicts if v.verdict != "safe"]


@pytest.mark.parametrize("protocol", [0, 2, 4])
@pytest.mark.parametrize("name", ["model.bin", "model.safetensors", "config.json", "weights"])
def test_pickle_payload_is_dangerous_under_any_name(tmp_path, marker, protocol, name):
    f = tmp_path / name
    f.write_bytes(payload(marker, protocol))
    v = one(f)
    assert (v.kind, v.verdict) == ("pickle", "dangerous")
    assert any("system" in r for r in v.reasons), v.reasons


def test_payload_before_a_broken_stream_and_in_a_stacked_stream(tmp_path, marker):
    broken = tmp_path / "broken.bin"
    broken.write_bytes(payload(marker) + b"\x80\x04garbage")
    stacked = tmp_path / "stacked.bin"
    stacked.write_bytes(pickle.dumps({"a": 1}, protocol=2) + payload(marker))
    unterminated = tmp_path / "cut.bin"
    unterminated.write_bytes(payload(marker, 0)[:-1])  # no STOP: pickle.load runs the call, then fails
    for f in (broken, stacked, unterminated):
        assert one(f).verdict == "dangerous", f.name


def test_benign_pickle_is_safe_and_broken_benign_is_suspicious(tmp_path):
    f = tmp_path / "plain.pkl"
    f.write_bytes(pickle.dumps({"a": [1, 2], "b": "x"}, protocol=4))
    assert one(f).verdict == "safe"
    f.write_bytes(pickle.dumps({"a": 1}, protocol=4) + b"\x80\x04\x95junk")
    assert one(f).verdict == "suspicious"


def test_numpy_arrays_are_safe_but_not_everything_numpy(tmp_path, marker):
    np = pytest.importorskip("numpy")
    f = tmp_path / "arrays.pkl"
    f.write_bytes(
        pickle.dumps({"a": np.arange(4), "b": np.float32(1.5), "o": np.array([1, "x"], dtype=object)})
    )
    assert one(f).verdict == "safe", one(f).reasons
    f.write_bytes(pickle.dumps(np.array([_System(marker)], dtype=object)))
    assert one(f).verdict == "dangerous"
    f.write_bytes(b"cnumpy\nload\n(S'x.npy'\ntR.")  # numpy, but not an array global
    assert one(f).verdict == "dangerous"


def test_torch_zip_payloads(tmp_path, marker):
    f = tmp_path / "pytorch_model.bin"
    f.write_bytes(torch_zip(payload(marker, 2)))
    assert (one(f).kind, one(f).verdict) == ("torch zip", "dangerous")
    f.write_bytes(torch_zip(pickle.dumps({"a": 1}, protocol=2)))
    assert one(f).verdict == "safe"
    f.write_bytes(torch_zip(b"x", member="../evil.pkl"))
    v = one(f)
    assert v.verdict == "dangerous" and "escapes" in v.reasons[0]
    f.write_bytes(torch_zip(b"x", member="/abs/readme"))
    assert one(f).verdict == "dangerous"


def test_zip_crc_error_is_dangerous(tmp_path, marker):
    raw = bytearray(torch_zip(pickle.dumps({"a": 1}, protocol=2)))
    at = raw.index(b"}")  # inside the stored data.pkl bytes: the CRC no longer matches
    raw[at] ^= 0xFF
    f = tmp_path / "model.pt"
    f.write_bytes(bytes(raw))
    assert one(f).verdict == "dangerous"


def _tokenizer_config(tmp_path: Path, template) -> Path:
    f = tmp_path / "tokenizer_config.json"
    f.write_text(json.dumps({"chat_template": template}))
    return f


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ ''['__class__'] }}",
        "{{ messages|attr('__class__') }}",
        "{{ messages|map(attribute='__class__')|list }}",
        "{{ messages[0]['__cla' ~ 'ss__'] }}",
        [{"name": "default", "template": "ok"}, {"name": "tool", "template": "{{ self.__init__ }}"}],
    ],
)
def test_chat_template_escapes_are_dangerous(tmp_path, template):
    v = one(_tokenizer_config(tmp_path, template))
    assert (v.kind, v.verdict) == ("chat template", "dangerous"), v.reasons


def test_real_chat_templates_are_safe(tmp_path):
    template = (
        "{% set ns = namespace(first=true) %}{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
        "<|{{ m['role'] }}|>{% generation %}{{ m['content'] | trim }}{% endgeneration %}{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    assert one(_tokenizer_config(tmp_path, template)).verdict == "safe"
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0].__globals__ }}")
    assert one(tmp_path / "chat_template.jinja").verdict == "dangerous"
    (tmp_path / "bad.jinja").write_text("{% for %}")
    assert one(tmp_path / "bad.jinja").verdict == "suspicious"


def _gguf(path: Path, template: str) -> Path:
    gguf = pytest.importorskip("gguf", reason="the gguf package (owlkit[ml]) builds the test files")
    import numpy as np

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.ones((4, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_structure_and_chat_template(tmp_path):
    ok = one(_gguf(tmp_path / "ok.gguf", "{% for m in messages %}{{ m.content }}{% endfor %}"))
    assert (ok.kind, ok.verdict) == ("gguf", "safe")
    bad = one(_gguf(tmp_path / "bad.gguf", "{{ lipsum.__globals__['os'].popen('id') }}"))
    assert bad.verdict == "dangerous" and any("__globals__" in r for r in bad.reasons)
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "ok.gguf").read_bytes()[:40])
    assert one(tmp_path / "cut.gguf").verdict == "suspicious"


def test_oversized_and_malformed_metadata(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(struct.pack("<Q", 200_000_000) + b"{}")
    v = one(f)
    assert v.verdict == "suspicious" and "limit" in v.reasons[0]
    _tokenizer_config(tmp_path, "x" * (300 << 10))
    v = one(tmp_path / "tokenizer_config.json")
    assert v.verdict == "suspicious" and "limit" in v.reasons[0]


def test_links_out_of_the_folder_are_not_followed(tmp_path, marker):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(payload(marker))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "inside.bin").symlink_to(outside)
    (folder / "loop").symlink_to(folder / "loop")
    (folder / "sub").mkdir()
    (folder / "sub" / "w.safetensors").write_bytes(safetensors_bytes())
    verdicts = {v.path: v for v in scan_path(folder)}
    assert verdicts["inside.bin"].kind == "link" and verdicts["inside.bin"].verdict == "suspicious"
    assert verdicts["sub/w.safetensors"].verdict == "safe"
    assert verdicts["loop"].verdict == "suspicious"


_FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(
    prefix=st.sampled_from([b"", b"\x80\x04", b"\x80\x02", b"PK\x03\x04", b"GGUF", struct.pack("<Q", 40)]),
    body=st.binary(max_size=300),
    name=st.sampled_from(["x.bin", "x.safetensors", "x.json", "x.gguf", "x.jinja"]),
)
def test_fuzzed_bytes_always_get_a_verdict(tmp_path, prefix, body, name):
    f = tmp_path / name
    f.write_bytes(prefix + body)
    v = scan_file(f, name)
    assert v.verdict in ("safe", "suspicious", "dangerous")


@pytest.mark.parametrize("legacy", [False, True])
def test_real_torch_checkpoint_is_safe(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    f = tmp_path / "pytorch_model.bin"
    state = {"w": torch.ones(2, 3), "b": torch.zeros(3, dtype=torch.float16)}
    torch.save(state, f, _use_new_zipfile_serialization=not legacy)
    v = one(f)
    assert (v.kind, v.verdict) == ("pickle" if legacy else "torch zip", "safe"), v.reasons


def test_a_7z_archive_is_opened_and_takes_its_worst_member(tmp_path: Path, marker: Path) -> None:
    """The "nullifAI" shape: a pickle payload inside a 7z archive, where blocklist scanners never look."""
    py7zr = pytest.importorskip("py7zr")
    bad, good = tmp_path / "bad.7z", tmp_path / "good.7z"
    with py7zr.SevenZipFile(bad, "w") as archive:
        archive.writestr(payload(marker), "model/data.pkl")
        archive.writestr(safetensors_bytes(), "model/w.safetensors")
    with py7zr.SevenZipFile(good, "w") as archive:
        archive.writestr(safetensors_bytes(), "w.safetensors")
    v = scan_file(bad, "bad.7z")
    assert (v.kind, v.verdict) == ("7z", "dangerous") and any("model/data.pkl" in r for r in v.reasons)
    assert scan_file(good, "good.7z").verdict == "safe"
    broken = tmp_path / "broken.7z"
    broken.write_bytes(bad.read_bytes()[:40])
    assert scan_file(broken, "broken.7z").verdict == "suspicious"

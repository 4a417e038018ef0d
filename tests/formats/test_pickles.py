"""Pickle checkpoints: payloads are found statically and never run; real torch checkpoints convert exactly.

Every malicious file here would create a marker file if it were unpickled (a control test proves that, in a
subprocess, with a different marker). After every owlkit call on such a file the test asserts the marker
does not exist.
"""

from __future__ import annotations

import io
import marshal
import os
import pickle
import pkgutil
import shlex
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from owlkit.errors import InvalidFile, Refused
from owlkit.formats.pickles import (
    ALLOWED_GLOBALS,
    PICKLE_SUFFIXES,
    PickleScan,
    convert_pickle_to_safetensors,
    load_state_dict_checked,
    looks_like_pickle,
    scan_pickle,
)

# --------------------------------------------------------------------------------------------------
# Building payloads. Plain ones through pickle.dumps of __reduce__ objects; the tricky ones by hand,
# opcode by opcode, because pickle.dumps never emits them.


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _Open:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


class _Resolve:
    """Pickles as pkgutil.resolve_name("os:system"): the function itself, called by _ResolveThenCall."""

    def __call__(self, *args):  # pickle insists a reduce target is callable
        raise AssertionError("never called")

    def __reduce__(self):
        return (pkgutil.resolve_name, ("os:system",))


class _ResolveThenCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (_Resolve(), (f"touch {shlex.quote(str(self.marker))}",))


def _op_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b  # BINUNICODE


def _op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def memo_stack_global(marker: Path) -> bytes:
    """builtins.open(marker, "w") named through STACK_GLOBAL with both strings fetched from the memo, and
    decoy strings "torch", "FloatStorage" pushed after a MARK and dropped by POP_MARK right before it, so a
    scanner that looks at the preceding opcodes instead of simulating the stack sees an allowed name."""
    return (
        b"\x80\x04"
        + _op_str("builtins") + b"\x94" + b"0"  # MEMOIZE as 0, POP
        + _op_str("open") + b"\x94" + b"0"  # MEMOIZE as 1, POP
        + b"h\x00" + b"h\x01"  # BINGET 0, BINGET 1
        + b"(" + _op_str("torch") + _op_str("FloatStorage") + b"1"  # MARK, decoys, POP_MARK
        + b"\x93"  # STACK_GLOBAL
        + _op_str(str(marker)) + _op_str("w") + b"\x86"  # TUPLE2
        + b"R."  # REDUCE, STOP
    )  # fmt: skip


def marshal_function(marker: Path) -> bytes:
    """types.FunctionType(marshal.loads(<code>), {})() — the bypass denylist scanners miss."""
    code = compile(f"open({str(marker)!r}, 'w').close()", "<payload>", "exec")
    blob = marshal.dumps(code)
    return (
        b"\x80\x03"
        + _op_global("types", "FunctionType")
        + _op_global("marshal", "loads")
        + b"B" + struct.pack("<I", len(blob)) + blob  # BINBYTES
        + b"\x85R"  # TUPLE1, REDUCE -> code object
        + b"}\x86R"  # EMPTY_DICT, TUPLE2, REDUCE -> function
        + b")R."  # EMPTY_TUPLE, REDUCE -> call it
    )  # fmt: skip


PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "os.system": lambda m: pickle.dumps(_System(m), protocol=2),
    "os.system-proto4": lambda m: pickle.dumps(_System(m), protocol=4),
    "builtins.open": lambda m: pickle.dumps(_Open(m), protocol=2),
    "memo-stack-global": memo_stack_global,
    "pkgutil.resolve_name": lambda m: pickle.dumps(_ResolveThenCall(m), protocol=4),
    "marshal+FunctionType": marshal_function,
}


@pytest.mark.skipif(os.name != "posix", reason="the os.system payloads run `touch`")
def test_payloads_are_live(tmp_path):
    """Control: each payload really creates its marker under a plain pickle.loads (in a child process)."""
    files = []
    for i, (name, build) in enumerate(PAYLOADS.items()):
        marker = tmp_path / f"control-{i}"
        p = tmp_path / f"control-{i}.bin"
        p.write_bytes(build(marker))
        files.append((name, p, marker))
    child = "import pickle, sys\nfor p in sys.argv[1:]:\n    pickle.loads(open(p, 'rb').read())\n"
    subprocess.run([sys.executable, "-c", child, *(str(p) for _, p, _ in files)], check=True, cwd=tmp_path)
    for name, _, marker in files:
        assert marker.exists(), f"control payload {name} did not run: the marker tests would prove nothing"


# --------------------------------------------------------------------------------------------------
# Containers for payloads


def torch_zip(
    data_pkl: bytes, member: str = "archive/data.pkl", extra: dict[str, bytes] | None = None
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(member, data_pkl)
        zf.writestr("archive/version", b"3\n")
        zf.writestr("archive/byteorder", b"little")
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return buf.getvalue()


MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _expect_refused_everywhere(path: Path, marker: Path, tmp_path: Path) -> None:
    """Every entry point refuses ``path`` (by allowlist or as invalid) and the payload never runs."""
    assert looks_like_pickle(path)
    assert not marker.exists()
    try:
        scan = scan_pickle(path)
    except (InvalidFile, Refused):  # broken containers, TorchScript archives
        pass
    else:
        assert not scan.ok and scan.disallowed, scan
    assert not marker.exists()
    with pytest.raises((Refused, InvalidFile)) as err:
        load_state_dict_checked(path)
    assert "\n" not in str(err.value) and path.name in str(err.value)
    assert not marker.exists()
    out = tmp_path / "out.safetensors"
    with pytest.raises((Refused, InvalidFile)):
        convert_pickle_to_safetensors(path, out)
    assert not marker.exists()
    assert not out.exists() and not (tmp_path / "out.safetensors.tmp").exists()


@pytest.fixture(autouse=True)
def _torch_or_skip():
    pytest.importorskip("torch", reason="pickle conversion needs torch (the 'ml' extra)")
    pytest.importorskip("picklescan", reason="pickle conversion needs picklescan (the 'ml' extra)")


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("wrap", ["raw.bin", "raw.pt", "zip.pt", "zip.bin"])
def test_payload_is_refused_and_never_runs(tmp_path, payload, wrap):
    marker = tmp_path / "MARKER"
    body = PAYLOADS[payload](marker)
    kind, suffix = wrap.split(".")
    path = tmp_path / f"model.{suffix}"
    path.write_bytes(body if kind == "raw" else torch_zip(body))
    scan = scan_pickle(path)
    assert not scan.ok
    assert not marker.exists()
    expected = {
        "os.system": "posix.system",
        "os.system-proto4": "posix.system",
        "builtins.open": "io.open",
        "memo-stack-global": "builtins.open",
        "pkgutil.resolve_name": "pkgutil.resolve_name",
        "marshal+FunctionType": "marshal.loads",
    }[payload]
    if os.name != "posix":
        expected = expected.replace("posix.", "nt.")
    assert expected in scan.disallowed, scan
    assert "torch.FloatStorage" not in scan.globals or payload != "memo-stack-global"
    _expect_refused_everywhere(path, marker, tmp_path)
    with pytest.raises(Refused, match="outside the tensor allowlist"):
        load_state_dict_checked(path)
    assert not marker.exists()


def test_memo_stack_global_resolves_as_the_real_unpickler_does(tmp_path):
    """The decoy pickle, run through an Unpickler whose find_class only records (imports nothing, returns a
    stub), asks for exactly what the scan reports: the simulation matches the real stack machine."""
    asked = []

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            asked.append(f"{module}.{name}")
            return lambda *args: None

    body = memo_stack_global(tmp_path / "MARKER")
    Recorder(io.BytesIO(body)).load()
    path = tmp_path / "decoy.bin"
    path.write_bytes(body)
    scan = scan_pickle(path)
    assert asked == ["builtins.open"]
    assert scan.globals == ["builtins.open"] and scan.disallowed == ["builtins.open"]
    assert not (tmp_path / "MARKER").exists()


def test_payload_followed_by_garbage(tmp_path):
    marker = tmp_path / "MARKER"
    for i, tail in enumerate([b"\x00garbage", b"\xff" * 64, b"PK\x03\x04junk"]):
        path = tmp_path / f"g{i}.bin"
        path.write_bytes(pickle.dumps(_System(marker), protocol=2) + tail)
        with pytest.raises(InvalidFile):
            scan_pickle(path)
        assert not marker.exists()
        _expect_refused_everywhere(path, marker, tmp_path)
    # nullifAI: a payload placed before a broken stream (no STOP ever comes)
    path = tmp_path / "broken.bin"
    path.write_bytes(pickle.dumps(_System(marker), protocol=2)[:-1] + b"\xff\xfe")
    with pytest.raises(InvalidFile):
        scan_pickle(path)
    _expect_refused_everywhere(path, marker, tmp_path)


def test_payload_in_a_second_pickle(tmp_path, tiny_state_dict):
    import torch

    marker = tmp_path / "MARKER"
    evil = pickle.dumps(_System(marker), protocol=2)
    # a benign pickle, then the payload (plain pickle files are scanned to their end)
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2) + evil)
    assert "posix.system" in scan_pickle(path).disallowed or os.name != "posix"
    _expect_refused_everywhere(path, marker, tmp_path)
    # legacy torch layout: magic number, then the payload where the protocol version belongs
    path = tmp_path / "legacy-evil.bin"
    path.write_bytes(MAGIC + evil + pickle.dumps(1001, protocol=2) + pickle.dumps({}, protocol=2) + evil)
    assert not scan_pickle(path).ok
    _expect_refused_everywhere(path, marker, tmp_path)
    # a complete, benign legacy file with the payload appended after its storages
    buf = io.BytesIO()
    torch.save(tiny_state_dict, buf, _use_new_zipfile_serialization=False)
    path = tmp_path / "legacy-appended.bin"
    path.write_bytes(buf.getvalue() + evil)
    with pytest.raises(InvalidFile, match="after the storages"):
        scan_pickle(path)
    _expect_refused_everywhere(path, marker, tmp_path)


def test_zip_tricks(tmp_path):
    marker = tmp_path / "MARKER"
    evil = pickle.dumps(_System(marker), protocol=2)
    benign = pickle.dumps({}, protocol=2)
    cases = {
        "dotdot.pt": torch_zip(benign, extra={"../evil.pkl": evil}),
        "absolute.pt": torch_zip(benign, extra={"/evil.pkl": evil}),
        "second-member.pt": torch_zip(benign, extra={"archive/other.pkl": evil}),
        "no-pkl.pt": torch_zip(b"x", member="archive/data.bin"),
        "torchscript.pt": torch_zip(
            benign, extra={"archive/constants.pkl": benign, "archive/code/m.py": b""}
        ),
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        _expect_refused_everywhere(path, marker, tmp_path)
    with pytest.raises(InvalidFile, match="escapes"):
        scan_pickle(tmp_path / "dotdot.pt")
    assert "posix.system" in scan_pickle(tmp_path / "second-member.pt").disallowed or os.name != "posix"
    with pytest.raises(Refused, match="TorchScript"):
        scan_pickle(tmp_path / "torchscript.pt")
    # a CRC error: the member is stored, so flip one payload byte in place
    content = bytearray(torch_zip(benign))
    at = bytes(content).index(benign) + 3
    content[at] ^= 0x01
    path = tmp_path / "crc.pt"
    path.write_bytes(bytes(content))
    with pytest.raises(InvalidFile):
        scan_pickle(path)
    _expect_refused_everywhere(path, marker, tmp_path)


@pytest.mark.parametrize(
    "body,finding",
    [
        (
            b"\x80\x02" + _op_global("torch", "_utils._rebuild_tensor_v2") + b")R.",
            "torch._utils._rebuild_tensor_v2",
        ),
        (b"\x80\x02\x82\x01)R.", "<extension registry code 1>"),  # EXT1
        (b"\x80\x05\x97.", "<out-of-band buffer>"),  # NEXT_BUFFER
        (b"\x80\x04" + _op_str("a") + b"K\x01\x93.", "<unresolved>"),  # STACK_GLOBAL on an int
        (b"(ios\nsystem\n.", "os.system"),  # INST
        # genops would show this operand as "torch._utils"; the unpickler reads it literally
        (b"\x80\x02ctorch\\x2e_utils\n_rebuild_tensor_v2\n)R.", "torch\\x2e_utils._rebuild_tensor_v2"),
        (b"\x80\x02" + _op_global("collections", "OrderedDict") + b")R)R.", "<call of a non-global value>"),
    ],
)
def test_other_opcode_routes(tmp_path, body, finding):
    path = tmp_path / "x.bin"
    path.write_bytes(body)
    scan = scan_pickle(path)
    assert finding in scan.disallowed and not scan.ok


def test_deep_nesting_is_invalid_not_a_crash(tmp_path):
    deep = b"\x80\x02" + b"(" * 100_000 + b"l" * 100_000 + b"."
    path = tmp_path / "deep.bin"
    path.write_bytes(MAGIC + deep + pickle.dumps({}, protocol=2) * 3)
    with pytest.raises(InvalidFile):
        scan_pickle(path)


def test_seven_zip_and_other_containers(tmp_path):
    for name, head in [
        ("a.pt", b"7z\xbc\xaf\x27\x1c\x00\x04"),
        ("b.bin", b"\x1f\x8b\x08\x00"),
        ("c.ckpt", b"BZh91AY"),
    ]:
        path = tmp_path / name
        path.write_bytes(head + b"\x00" * 64)
        assert looks_like_pickle(path)
        with pytest.raises(InvalidFile, match="unsupported container"):
            scan_pickle(path)


# --------------------------------------------------------------------------------------------------
# Benign: real torch checkpoints


@pytest.fixture(scope="module")
def tiny_state_dict():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    model = transformers.LlamaForCausalLM(config)
    sd = model.state_dict()
    assert sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()  # tied
    return sd


def _assert_same(loaded, original):
    import torch

    assert set(loaded) == set(original)
    for name, t in original.items():
        assert loaded[name].dtype == t.dtype and loaded[name].shape == t.shape, name
        assert torch.equal(loaded[name], t), name


ALLOWED_SEEN = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"}


@pytest.mark.parametrize("protocol", [4, 5])
def test_newer_pickle_protocols_scan_clean_but_torch_refuses_them(tmp_path, tiny_state_dict, protocol):
    """STACK_GLOBAL + MEMOIZE streams resolve to the same allowed globals; torch's weights-only loader
    does not read FRAME opcodes, so the load is a clean InvalidFile, not a crash or a fallback."""
    import torch

    path = tmp_path / "p.pt"
    torch.save(tiny_state_dict, path, pickle_protocol=protocol)
    scan = scan_pickle(path)
    assert scan.ok and set(scan.globals) == ALLOWED_SEEN, scan
    with pytest.raises(InvalidFile, match="weights-only loader"):
        load_state_dict_checked(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_torch_state_dict_converts_exactly(tmp_path, tiny_state_dict, fmt):
    import torch
    from safetensors.torch import load_file

    path = tmp_path / "pytorch_model.bin"
    torch.save(tiny_state_dict, path, _use_new_zipfile_serialization=fmt == "zip")
    assert looks_like_pickle(path)
    scan = scan_pickle(path)
    assert isinstance(scan, PickleScan) and scan.ok, scan
    assert scan.pickles and not scan.disallowed
    assert set(scan.globals) == ALLOWED_SEEN
    assert len(scan.pickles) == (1 if fmt == "zip" else 5)
    out = tmp_path / "model.safetensors"
    info = convert_pickle_to_safetensors(path, out)
    import hashlib

    assert info["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["tensors"] == len(tiny_state_dict)
    assert info["parameters"] == sum(t.numel() for t in tiny_state_dict.values())
    assert not (tmp_path / "model.safetensors.tmp").exists()
    reloaded = load_file(out)
    _assert_same(reloaded, tiny_state_dict)
    assert torch.equal(reloaded["lm_head.weight"], reloaded["model.embed_tokens.weight"])  # tied weights kept
    from safetensors import safe_open

    with safe_open(out, "pt") as f:
        assert f.metadata() == {"format": "pt"}


SHARED = Path(os.environ.get("OWL_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
STORIES = SHARED / "realmodels" / "stories260k" / "hf" / "model.safetensors"


@pytest.mark.realmodel
@pytest.mark.skipif(not STORIES.exists(), reason=f"needs {STORIES} (set OWL_SHARED to the shared folder)")
@pytest.mark.parametrize("legacy", [False, True])
def test_real_model_round_trip(tmp_path, legacy):
    """stories260k's real weights, saved the way HF pytorch_model.bin files were, convert back bit for bit."""
    import torch
    from safetensors.torch import load_file

    original = load_file(STORIES)
    path = tmp_path / "pytorch_model.bin"
    torch.save(original, path, _use_new_zipfile_serialization=not legacy)
    out = tmp_path / "model.safetensors"
    info = convert_pickle_to_safetensors(path, out)
    assert info["tensors"] == len(original) and info["notes"] == []
    _assert_same(load_file(out), original)


@pytest.mark.parametrize("legacy", [False, True])
def test_mixed_dtypes_views_and_parameters(tmp_path, legacy):
    import torch
    from safetensors.torch import load_file

    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    sd = {
        "bf16": torch.randn(3, 5).to(torch.bfloat16),
        "fp16_transposed": torch.randn(4, 2).to(torch.float16).t(),  # not contiguous
        "int8": torch.arange(-4, 4, dtype=torch.int8),
        "int64": torch.tensor([1, 2**40]),
        "bool": torch.tensor([True, False]),
        "f64": torch.randn(2, dtype=torch.float64),
        "param": torch.nn.Parameter(torch.randn(3)),
        "row_view": base[1],  # shares storage with "base", at an offset
        "base": base,
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "m.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    scan = scan_pickle(path)
    assert scan.ok, scan
    out = tmp_path / "m.safetensors"
    convert_pickle_to_safetensors(path, out)
    _assert_same(load_file(out), {k: v.detach() for k, v in sd.items()})


def test_checkpoint_wrappers_and_non_tensor_leaves(tmp_path, tiny_state_dict):
    import torch

    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": tiny_state_dict, "epoch": 3, "global_step": 120, "version": "2.1"}, path)
    notes: list[str] = []
    tensors = load_state_dict_checked(path, notes)
    _assert_same(tensors, tiny_state_dict)
    assert any("epoch" in n and "global_step" in n for n in notes)

    path = tmp_path / "nested.pt"
    torch.save(
        {"encoder": {"w": torch.ones(2)}, "head": {"b": torch.zeros(1)}, "step": 7, "dt": torch.float16}, path
    )
    notes = []
    tensors = load_state_dict_checked(path, notes)
    assert sorted(tensors) == ["encoder.w", "head.b"]
    assert any("'step'" in n for n in notes) and any("'dt'" in n for n in notes)

    path = tmp_path / "scalars.pt"
    torch.save({"epoch": 1}, path)
    with pytest.raises(InvalidFile, match="no tensors"):
        load_state_dict_checked(path)

    path = tmp_path / "plain.pkl"  # a plain pickle of tensors is not a torch checkpoint
    path.write_bytes(pickle.dumps({"x": 1, "y": [1.5, "s"]}, protocol=4))
    assert scan_pickle(path).ok
    with pytest.raises(InvalidFile, match="weights-only loader could not read it"):
        load_state_dict_checked(path)


def test_looks_like_pickle_content_first(tmp_path, tiny_state_dict):
    import torch
    from safetensors.torch import save_file

    cases = {}
    torch.save(tiny_state_dict, tmp_path / "w.data")  # torch zip under an odd name: content wins
    cases["w.data"] = True
    save_file({"a": torch.ones(1)}, tmp_path / "model.bin")  # safetensors named .bin: not a pickle
    cases["model.bin"] = False
    header = b'{"__metadata__":{"format":"pt"}}'.ljust(
        0x280
    )  # length 640 = b"\x80\x02...": PROTO 2 look-alike
    (tmp_path / "padded.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    cases["padded.safetensors"] = False
    (tmp_path / "gguf.pt").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\x00" * 16)
    cases["gguf.pt"] = False
    (tmp_path / "notes.txt").write_text("hello")
    cases["notes.txt"] = False
    (tmp_path / "odd.ckpt").write_text("hello")  # unknown content: the suffix decides
    cases["odd.ckpt"] = True
    (tmp_path / "legacy0").write_bytes(b"L119547037146038801333356L\n.")  # protocol-0 legacy magic
    cases["legacy0"] = True
    for name, expected in cases.items():
        assert looks_like_pickle(tmp_path / name) is expected, name
    assert looks_like_pickle(tmp_path / "missing.pth")  # unreadable: suffix
    assert set(PICKLE_SUFFIXES) >= {".bin", ".pt", ".pth", ".ckpt"}


def test_allowlist_is_small_and_exact():
    modules = {m for m, _ in ALLOWED_GLOBALS}
    assert modules == {"collections", "torch", "torch._utils"}
    assert ("builtins", "set") not in ALLOWED_GLOBALS
    assert ("torch._utils", "_rebuild_qtensor") not in ALLOWED_GLOBALS


def test_module_does_not_import_torch():
    code = "import sys, owlkit.formats.pickles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Truncated and garbage files: InvalidFile, never another exception


def _scan_or_invalid(path: Path) -> None:
    try:
        scan_pickle(path)
    except InvalidFile as e:
        assert "\n" not in str(e) and path.name in str(e)


def test_truncated_checkpoints(tmp_path, tiny_state_dict):
    import torch

    for legacy in (False, True):
        buf = io.BytesIO()
        torch.save(tiny_state_dict, buf, _use_new_zipfile_serialization=not legacy)
        full = buf.getvalue()
        for cut in sorted({0, 1, 2, 10, 15, 200, len(full) // 2, len(full) - 100, len(full) - 1}):
            path = tmp_path / f"cut-{int(legacy)}-{cut}.bin"
            path.write_bytes(full[:cut])
            with pytest.raises(InvalidFile):
                scan_pickle(path)
            with pytest.raises(InvalidFile):
                load_state_dict_checked(path)


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(
    prefix=st.sampled_from([b"", b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04", MAGIC, b"(", b"7z"]),
    body=st.binary(max_size=300),
)
def test_random_bytes_never_crash(tmp_path, prefix, body):
    path = tmp_path / "fuzz.bin"
    path.write_bytes(prefix + body)
    _scan_or_invalid(path)


@pytest.fixture(scope="module")
def legacy_bytes(tiny_state_dict):
    import torch

    buf = io.BytesIO()
    torch.save(
        {k: v for k, v in list(tiny_state_dict.items())[:3]}, buf, _use_new_zipfile_serialization=False
    )
    return buf.getvalue()


@_FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1, max_size=4))
def test_mutated_legacy_checkpoint_never_crashes(tmp_path, legacy_bytes, flips):
    data = bytearray(legacy_bytes)
    for at, x in flips:
        data[at % len(data)] ^= x
    path = tmp_path / "mut.bin"
    path.write_bytes(bytes(data))
    _scan_or_invalid(path)

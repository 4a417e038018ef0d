"""GGUF export checked against llama.cpp itself: its runtime (greedy continuations, tokenization, logits)
and its own quantizer (bit-equal blocks), on tiny random models and the shipped real ones."""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
import pytest

from owlkit.errors import FileSystemError, InvalidFile, Refused, UsageError
from owlkit.formats.gguf import read_gguf
from owlkit.quantize.gguf_export import export_gguf
from owltest import need

llama_cpp = pytest.importorskip("llama_cpp", reason="the gguf extra (llama-cpp-python) is not installed")

SHARED = Path(os.environ.get("OWL_SHARED", Path(__file__).resolve().parents[3] / "shared"))
STORIES_HF = SHARED / "realmodels/stories260k/hf"
SMOLLM_GGUF = SHARED / "realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
LLAMA_FTYPE = {"q8_0": 7, "q4_0": 2, "q4_1": 3}


def tensors(path: Path) -> dict[str, tuple[str, bytes]]:
    """GGUF tensor name -> (ggml type, raw bytes)."""
    g = read_gguf(path)
    with open(path, "rb") as f:
        return {t.name: (t.type_name, os.pread(f.fileno(), t.nbytes, t.offset)) for t in g.tensors}


def llama(path: Path, n_ctx: int = 256):
    return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=2, logits_all=True, verbose=False)


def llama_greedy(path: Path, ids: list[int], n: int) -> list[int]:
    llm = llama(path, len(ids) + n + 1)
    llm.eval(ids)
    out: list[int] = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


def hf_greedy(folder: Path, ids: list[int], n: int) -> list[int]:
    """Plain argmax decoding (generate() would stop at, or with min_new_tokens suppress, end tokens)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(ids) :]


def llama_quantize(src: Path, out: Path, qtype: str, *, pure: bool) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE[qtype]
    params.pure = pure
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params)) == 0


def tokenize_both(folder: Path, gguf: Path, text: str) -> tuple[list[int], list[int]]:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    llm = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    return hf, llm.tokenize(text.encode(), add_bos=False, special=False)


# --- tiny random models --------------------------------------------------------------------------------


@pytest.mark.parametrize("qtype", ["f32", "f16", "q8_0", "q4_0", "q4_1"])
def test_every_type_loads_in_llama_cpp_with_the_documented_type_map(
    tiny_llama: Path, tmp_path: Path, qtype
) -> None:
    out = tmp_path / f"tiny-{qtype}.gguf"
    report = export_gguf(
        tiny_llama, out, qtype, metadata={"general.name": "tiny", "general.license": "apache-2.0"}
    )
    g = read_gguf(out)
    md = g.metadata
    assert md["general.architecture"] == "llama" and md["general.license"] == "apache-2.0"
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "gpt-2"
    assert md["llama.block_count"] == 2 and md["llama.attention.head_count_kv"] == 2
    assert "tokenizer.chat_template" in md and md["tokenizer.ggml.eos_token_id"] == 1
    types = {t.name: t.type_name for t in g.tensors}
    assert all(types[n] == "F32" for n in types if "norm" in n)  # 1-D tensors stay F32
    want = qtype.upper()
    # hidden 32 and intermediate 64 rows hold whole 32-element blocks: every 2-D weight gets the type
    assert {types[n] for n in types if "norm" not in n} == {want}
    assert report.file_bytes == out.stat().st_size and report.parameters == g.parameters
    assert report.bits_per_weight == pytest.approx(8 * sum(t.nbytes for t in g.tensors) / g.parameters)
    logits = llama(out).eval  # llama.cpp accepts the file
    logits([5, 6, 7])


def test_rows_that_do_not_fill_blocks_fall_back_to_f16(tiny_llama: Path, tmp_path: Path) -> None:
    from owltest import build_tiny_llama

    odd = build_tiny_llama(tmp_path / "odd", hidden=48)  # 48 is not a multiple of 32
    report = export_gguf(odd, tmp_path / "odd.gguf", "q8_0")
    types = {t.name: t.type_name for t in read_gguf(tmp_path / "odd.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.ffn_down.weight"] == "Q8_0"  # 64-wide rows
    assert "blk.0.attn_q.weight" in report.fallbacks and "blk.0.ffn_down.weight" not in report.fallbacks
    llama(tmp_path / "odd.gguf").eval([1, 2])


def test_llama_cpp_logits_match_transformers(tiny_llama: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    export_gguf(tiny_llama, tmp_path / "t.gguf", "f32")
    ids = [3, 17, 42, 8, 64, 11, 90, 2]
    llm = llama(tmp_path / "t.gguf")
    llm.eval(ids)
    ours = np.array(llm.scores[: len(ids)])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(tiny_llama)(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(ours - ref).max() < 1e-4  # q/k permutation, norms and rope all as llama.cpp expects


def test_f16_round_trips_through_hf_bit_identically(tiny_llama: Path, tmp_path: Path) -> None:
    from owlkit.runtime.convert import gguf_to_hf

    for qtype, exact in (("f16", True), ("q8_0", True), ("q4_0", False)):
        first = tmp_path / f"a-{qtype}.gguf"
        export_gguf(tiny_llama, first, qtype)
        gguf_to_hf(first, tmp_path / f"hf-{qtype}")
        again = tmp_path / f"b-{qtype}.gguf"
        export_gguf(tmp_path / f"hf-{qtype}", again, qtype)
        a, b = tensors(first), tensors(again)
        assert a.keys() == b.keys()
        if exact:  # F16 -> float32 -> F16 is exact; Q8_0 blocks requantize to themselves
            assert a == b, qtype
        else:
            # Q4_0 -> float32 -> Q4_0 may move a block's scale by one fp16 step (its max element sets it and
            # the 4-bit grid is asymmetric): the dequantized weights agree within 1% of each tensor's range.
            from gguf import GGMLQuantizationType, dequantize

            for n, (t, raw) in a.items():
                x = dequantize(np.frombuffer(raw, np.uint8), GGMLQuantizationType[t]).astype(np.float64)
                y = dequantize(np.frombuffer(b[n][1], np.uint8), GGMLQuantizationType[t]).astype(np.float64)
                assert np.abs(x - y).max() <= 0.01 * (np.abs(x).max() + 1e-12), n


def test_export_is_deterministic(tiny_llama: Path, tmp_path: Path) -> None:
    export_gguf(tiny_llama, tmp_path / "a.gguf", "q4_1", metadata={"general.name": "tiny"})
    export_gguf(tiny_llama, tmp_path / "b.gguf", "q4_1", metadata={"general.name": "tiny"})
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


# --- bad input -----------------------------------------------------------------------------------------


def copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_source_is_a_one_line_error_and_leaves_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    bad = copy_model(tiny_llama, tmp_path / "bad")
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    out = tmp_path / "x.gguf"
    with pytest.raises(InvalidFile) as e:
        export_gguf(bad, out, "q8_0")
    assert "model.safetensors" in str(e.value) and "\n" not in str(e.value)
    assert list(tmp_path.glob("x.gguf*")) == []


def test_inconsistent_config_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    bad = copy_model(tiny_llama, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        InvalidFile, match=r"mlp\.down_proj\.weight has shape \[32, 64\], config.json implies"
    ):
        export_gguf(bad, tmp_path / "x.gguf", "f16")


def test_unsupported_architecture_names_the_supported_ones(tiny_llama: Path, tmp_path: Path) -> None:
    bad = copy_model(tiny_llama, tmp_path / "bad")
    config = json.loads((bad / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(Refused, match="LlamaForCausalLM, MistralForCausalLM"):
        export_gguf(bad, tmp_path / "x.gguf", "f16")
    with pytest.raises(UsageError, match="q4_k_m"):
        export_gguf(tiny_llama, tmp_path / "x.gguf", "q4_k_m")


def test_unknown_pre_tokenizer_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    bad = copy_model(tiny_llama, tmp_path / "bad")
    tok = json.loads((bad / "tokenizer.json").read_text())
    tok["pre_tokenizer"] = {"type": "Whitespace"}
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(Refused, match="pre-tokenizer"):
        export_gguf(bad, tmp_path / "x.gguf", "f16")
    assert not (tmp_path / "x.gguf.partial").exists()


def test_a_full_disk_is_a_file_system_error_and_leaves_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    """A real write failure: the process may not write files bigger than 64 KiB (RLIMIT_FSIZE)."""
    import subprocess
    import sys

    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))\n"
        "from owlkit.errors import FileSystemError\n"
        "from owlkit.quantize.gguf_export import export_gguf\n"
        "try:\n"
        f"    export_gguf(Path({str(tiny_llama)!r}), Path({str(tmp_path / 'x.gguf')!r}), 'f32')\n"
        "except FileSystemError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "x.gguf" in proc.stdout and "disk" in proc.stdout
    assert list(tmp_path.glob("x.gguf*")) == []
    assert FileSystemError  # the class the child raised


# --- real models ---------------------------------------------------------------------------------------


@pytest.mark.realmodel
def test_stories260k_f16_continues_like_transformers(tmp_path: Path) -> None:
    folder = need(STORIES_HF)
    out = tmp_path / "stories.gguf"
    report = export_gguf(folder, out, "f16")
    assert report.tokenizer == "llama"
    hf, ours = tokenize_both(folder, out, "Once upon a time, Lily and Tom found a big red ball in the park.")
    assert ours == hf  # merge-rank scores make llama.cpp's SentencePiece merges follow transformers'
    ids = hf[:8]
    assert llama_greedy(out, ids, 64) == hf_greedy(folder, ids, 64)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SmolLM2 converted from the shipped Q4_1 to an HF folder, and owlkit's F32 GGUF of it."""
    from owlkit.runtime.convert import gguf_to_hf

    tmp = tmp_path_factory.mktemp("smollm")
    gguf_to_hf(need(SMOLLM_GGUF), tmp / "hf")
    export_gguf(tmp / "hf", tmp / "f32.gguf", "f32")
    return tmp / "hf", tmp / "f32.gguf"


@pytest.mark.realmodel
def test_smollm2_f16_continues_like_transformers_and_keeps_the_vocabulary(smollm, tmp_path: Path) -> None:
    folder, _ = smollm
    out = tmp_path / "f16.gguf"
    export_gguf(folder, out, "f16")
    shipped, ours = read_gguf(SMOLLM_GGUF).metadata, read_gguf(out).metadata
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"):  # fmt: skip
        assert ours[key] == shipped[key], key
    hf, mine = tokenize_both(folder, out, "The capital of France is Paris. It has 2,100,000 people.")
    assert mine == hf
    ids = hf[:6]
    assert llama_greedy(out, ids, 64) == hf_greedy(folder, ids, 64)


@pytest.mark.realmodel
@pytest.mark.parametrize("qtype", ["q8_0", "q4_0"])
def test_smollm2_blocks_equal_llama_cpp_quantizer(smollm, tmp_path: Path, qtype: str) -> None:
    folder, f32 = smollm
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    export_gguf(folder, ours, qtype)
    llama_quantize(f32, theirs, qtype, pure=True)
    a, b = tensors(ours), tensors(theirs)
    assert a.keys() == b.keys()
    differing = [n for n in a if a[n] != b[n]]
    assert differing == []


@pytest.mark.realmodel
def test_smollm2_q8_0_agrees_with_llama_cpp_q8_0(smollm, tmp_path: Path) -> None:
    from owlkit.quantize.drift import LlamaCppScorer, default_eval_text, eval_chunks, measure_drift

    folder, f32 = smollm
    ours, theirs = tmp_path / "ours.gguf", tmp_path / "theirs.gguf"
    export_gguf(folder, ours, "q8_0")
    llama_quantize(f32, theirs, "q8_0", pure=False)  # llama-quantize's default Q8_0 recipe
    with LlamaCppScorer(f32, 512) as ref, LlamaCppScorer(ours, 512) as a, LlamaCppScorer(theirs, 512) as b:
        chunks = eval_chunks(ref.tokenize(default_eval_text()), 512, 1024)
        drift = measure_drift(ref, {"owlkit": a, "llama.cpp": b}, chunks)
    assert drift["owlkit"].kl_mean < 0.01
    assert abs(drift["owlkit"].top1 - drift["llama.cpp"].top1) <= 0.005


@pytest.mark.realmodel
def test_smollm2_gguf_chat_in_llama_cpp_stops_at_end_of_turn(smollm, tmp_path: Path) -> None:
    """The exported chat template and end-of-turn id make llama.cpp's chat stop by itself."""
    from owlkit.runtime.llamacpp import open_gguf, stream_llama

    folder, _ = smollm
    out = tmp_path / "q8.gguf"
    export_gguf(folder, out, "q8_0")
    llm = open_gguf(out, n_ctx=512)
    pieces = list(
        stream_llama(llm, "What is the capital of France? Answer in one sentence.", chat=True, max_tokens=200)
    )
    text = "".join(p for p, _ in pieces)
    assert pieces[-1][1] == "stop" and "Paris" in text and "<|im_end|>" not in text

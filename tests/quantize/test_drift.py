"""Quality drift: owlkit's perplexity is exp of transformers' own loss on the same windows, a model scored
against itself drifts by nothing, a perturbed copy drifts by something sane, unlike runtimes are refused,
and llama.cpp scores real GGUF files (the shipped SmolLM2 Q4_1 and a Q4_0 llama.cpp re-quantizes from it)."""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import pytest

from owlkit.errors import FileSystemError, InvalidFile, NotFound, Refused, UsageError
from owlkit.quantize.drift import (
    DEFAULT_EVAL_TOKENS,
    Drift,
    LlamaCppScorer,
    TorchScorer,
    default_eval_text,
    eval_chunks,
    measure_drift,
    read_eval_text,
)
from owltest import SMOLLM_GGUF, need, tiny_llama_model

VOCAB = 256


def tiny_llama(seed: int = 0):
    return tiny_llama_model(seed=seed, vocab_size=VOCAB, positions=256)


def perturbed(model, scale: float = 0.05, seed: int = 1):
    """A copy of ``model`` with Gaussian noise on every weight: a stand-in for a lossy quantization."""
    import copy

    import torch

    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp(min=1e-3))
    return other


def random_ids(n: int, seed: int = 0) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


class Renamed:
    """A scorer that claims another runtime: what llama.cpp against torch would look like."""

    def __init__(self, inner: TorchScorer, runtime: str) -> None:
        self.inner, self.runtime = inner, runtime

    def logits(self, ids: list[int]):
        return self.inner.logits(ids)


# -- windows --------------------------------------------------------------------------------------


def test_windows_are_consecutive_equal_and_capped() -> None:
    ids = list(range(1000))
    chunks = eval_chunks(ids, 128, 600)
    assert [len(c) for c in chunks] == [128] * 4  # 600 // 128 windows, the 88-token tail dropped
    assert [i for c in chunks for i in c] == ids[:512]
    assert eval_chunks(ids, 128, 10_000)[-1] == ids[768:896]
    assert eval_chunks(ids[:50], 128, 8192) == [ids[:50]]  # shorter than one window: one shorter window
    assert eval_chunks(ids, 128, 40) == [ids[:40]]


@pytest.mark.parametrize(
    ("ids", "chunk", "limit"), [([7], 128, 8192), ([], 128, 8192), ([1, 2, 3], 1, 8192), ([1, 2], 8, 1)]
)
def test_too_little_text_is_refused_in_one_line(ids: list[int], chunk: int, limit: int) -> None:
    with pytest.raises(UsageError) as e:
        eval_chunks(ids, chunk, limit)
    assert "\n" not in str(e.value)


def test_default_text_is_packaged_plain_and_long_enough() -> None:
    text = default_eval_text()
    assert text.startswith("Chapter I.\n\nIt is a truth universally acknowledged")
    assert "\r" not in text and "Gutenberg" not in text and "[Illustration" not in text
    # 12,807 SmolLM2 tokens (4.2 characters a token); a character-level vocabulary would need more text,
    # but every BPE vocabulary of a real model packs English tighter than 6.5 characters a token.
    assert len(text) > 6.5 * DEFAULT_EVAL_TOKENS


def test_eval_text_file_is_read_as_utf8_with_plain_newlines(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_bytes("a\r\nb\rc ’\n".encode())
    assert read_eval_text(f) == "a\nb\nc ’\n"
    f.write_bytes(b"\xff\xfe latin")
    with pytest.raises(InvalidFile, match=r"t\.txt: not UTF-8"):
        read_eval_text(f)
    with pytest.raises(NotFound, match="--eval-text"):
        read_eval_text(tmp_path / "absent.txt")
    with pytest.raises(FileSystemError):
        read_eval_text(tmp_path)


# -- torch ----------------------------------------------------------------------------------------


def test_perplexity_is_exp_of_transformers_loss_on_the_same_windows() -> None:
    import torch

    model = tiny_llama()
    chunks = eval_chunks(random_ids(400), 64, 400)  # six windows of 64
    other = perturbed(model)
    drift = measure_drift(TorchScorer(model), {"noisy": TorchScorer(other)}, chunks)["noisy"]
    with torch.no_grad():
        losses = [float(model(torch.tensor([c]), labels=torch.tensor([c])).loss) for c in chunks]
        other_losses = [float(other(torch.tensor([c]), labels=torch.tensor([c])).loss) for c in chunks]
    assert drift.ppl_source == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)
    assert drift.ppl == pytest.approx(math.exp(sum(other_losses) / len(other_losses)), rel=1e-4)
    assert (drift.tokens, drift.chunks, drift.chunk_size) == (6 * 63, 6, 64)


def test_a_model_against_itself_drifts_by_nothing() -> None:
    model = tiny_llama()
    scorer = TorchScorer(model)
    chunks = eval_chunks(random_ids(300), 100, 300)
    progress: list[tuple[int, int]] = []
    result = measure_drift(
        scorer,
        {"same": scorer, "copy": TorchScorer(tiny_llama())},
        chunks,
        lambda d, n: progress.append((d, n)),
    )
    assert progress == [(1, 3), (2, 3), (3, 3)]
    for drift in result.values():
        assert abs(drift.kl_mean) < 1e-9 and abs(drift.kl_max) < 1e-9
        assert drift.top1 == 1.0
        assert drift.ppl == drift.ppl_source and drift.ppl_ratio == 1.0
        assert drift.runtime.startswith("torch ")
    d = result["same"].to_dict()
    assert set(d) == {f.name for f in Drift.__dataclass_fields__.values()}
    assert d["ppl"] == result["same"].ppl


def test_a_perturbed_copy_drifts_by_a_sane_amount() -> None:
    model = tiny_llama()
    chunks = eval_chunks(random_ids(256), 128, 256)
    result = measure_drift(
        TorchScorer(model),
        {"light": TorchScorer(perturbed(model, 0.05)), "heavy": TorchScorer(perturbed(model, 0.5))},
        chunks,
    )
    light, heavy = result["light"], result["heavy"]
    for d in (light, heavy):
        assert 0 < d.kl_mean <= d.kl_p99 <= d.kl_max < 10
        assert 0 < d.top1 < 1
        assert 1 < d.ppl_source < 2 * VOCAB and 1 < d.ppl < 2 * VOCAB  # a random model: near uniform
        assert d.ppl_ratio == pytest.approx(d.ppl / d.ppl_source)
    assert light.kl_mean < heavy.kl_mean and light.top1 > heavy.top1


def test_unlike_runtimes_and_vocabularies_are_refused() -> None:
    scorer = TorchScorer(tiny_llama())
    chunks = eval_chunks(random_ids(64), 64, 64)
    llama = Renamed(scorer, "llama.cpp (llama-cpp-python 0.3.36)")
    with pytest.raises(Refused, match="only like is compared with like") as e:
        measure_drift(scorer, {"q4_0.gguf": llama}, chunks)
    assert "\n" not in str(e.value) and "q4_0.gguf" in str(e.value)

    from transformers import LlamaConfig, LlamaForCausalLM

    bigger = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB + 8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(Refused, match="vocabulary of 264 tokens"):
        measure_drift(scorer, {"other": TorchScorer(bigger)}, chunks)
    with pytest.raises(UsageError):
        measure_drift(scorer, {}, chunks)


# -- llama.cpp on real GGUF files -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm_q4_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second real quantization of the same model: llama.cpp's own re-quantization of Q4_1 to Q4_0."""
    llama_cpp = pytest.importorskip("llama_cpp")
    need(SMOLLM_GGUF)
    out = tmp_path_factory.mktemp("gguf") / "SmolLM2-135M-Instruct.Q4_0.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0
    params.allow_requantize = True
    params.nthread = 2
    assert (
        llama_cpp.llama_model_quantize(str(SMOLLM_GGUF).encode(), str(out).encode(), ctypes.byref(params))
        == 0
    )
    return out


@pytest.mark.realmodel
def test_llamacpp_scores_real_gguf_files(smollm_q4_0: Path) -> None:
    gguf = need(SMOLLM_GGUF)
    n = 64  # one window: a few seconds a model on two busy cores
    with LlamaCppScorer(gguf, n_ctx=n) as q4_1, LlamaCppScorer(smollm_q4_0, n_ctx=n) as q4_0:
        assert q4_1.runtime.startswith("llama.cpp (llama-cpp-python ")
        ids = q4_1.tokenize(default_eval_text())
        assert len(ids) > DEFAULT_EVAL_TOKENS  # 12,807 SmolLM2 tokens, the same ids its HF tokenizer gives
        chunks = eval_chunks(ids, n, n)
        # The same scorer as both sides: each window must start from a fresh context.
        result = measure_drift(q4_1, {"self": q4_1, "q4_0": q4_0}, chunks)
        with pytest.raises(UsageError, match="exceeds n_ctx=64"):
            q4_1.logits(list(range(n + 1)))
    same, other = result["self"], result["q4_0"]
    assert abs(same.kl_mean) < 1e-9 and same.top1 == 1.0 and same.ppl == same.ppl_source
    assert 2 < same.ppl_source < 100  # measured 17.8 on 256 tokens, 21.6 on 2,048
    assert 0 < other.kl_mean < 2 and 0.3 < other.top1 < 1 and other.ppl_ratio > 1


def test_llamacpp_scorer_names_a_missing_or_broken_file(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(NotFound, match=r"absent\.gguf"):
        LlamaCppScorer(tmp_path / "absent.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(InvalidFile, match=r"broken\.gguf: llama\.cpp cannot load it") as e:
        LlamaCppScorer(broken)
    assert "\n" not in str(e.value)

"""The normalised tokenizer digest: equal for equal tokenizers however stored, different otherwise."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from owlkit.errors import InvalidFile
from owlkit.formats.tokenizer import PROBE_TEXT, tokenizer_digest_gguf, tokenizer_digest_hf
from owltest import SMOLLM_GGUF, STORIES, need

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _byte_level_bpe(folder: Path, merges: list[list[str]] | None = None) -> Path:
    """A tiny byte-level BPE tokenizer written as a tokenizer.json, with the merges given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = ByteLevel.alphabet()
    merges = merges or [["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["o", "w"], ["Ġ", "ow"]]
    vocab = {"<s>": 0, "</s>": 1}
    for symbol in [*sorted(alphabet), "Ġt", "he", "Ġthe", "ow", "Ġo", "Ġow"]:  # the same for every merge list
        vocab.setdefault(symbol, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>"}))
    return folder


def test_probe_text_covers_what_it_claims() -> None:
    for sample in (
        "Hello",
        "1234567890",
        "  two",
        "\t",
        "\n\n\n",
        "é",
        "東京",
        "한국어",
        "🦉",
        "👩‍💻",
        "def ",
        "->",
    ):
        assert sample in PROBE_TEXT


@pytest.mark.realmodel
def test_real_tokenizers_differ() -> None:
    stories = tokenizer_digest_hf(need(STORIES))
    smollm = tokenizer_digest_gguf(need(SMOLLM_GGUF))
    assert DIGEST.match(stories) and DIGEST.match(smollm)
    assert stories != smollm
    assert tokenizer_digest_hf(STORIES) == stories  # stable across calls


@pytest.mark.realmodel
def test_stories_probe_round_trips() -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(need(STORIES) / "tokenizer.json"))
    assert tok.decode(tok.encode(PROBE_TEXT, add_special_tokens=False).ids) == PROBE_TEXT


def test_one_merge_changes_the_digest(tmp_path: Path) -> None:
    a = tokenizer_digest_hf(_byte_level_bpe(tmp_path / "a"))
    same = tokenizer_digest_hf(_byte_level_bpe(tmp_path / "same"))
    other = [
        ["Ġ", "t"],
        ["h", "e"],
        ["Ġt", "he"],
        ["Ġ", "o"],
        ["Ġo", "w"],
    ]  # same vocabulary, one merge differs
    b = tokenizer_digest_hf(_byte_level_bpe(tmp_path / "b", merges=other))
    assert a == same
    assert a != b


def test_merge_spelling_and_file_layout_do_not_matter(tmp_path: Path) -> None:
    folder = _byte_level_bpe(tmp_path / "pairs")
    digest = tokenizer_digest_hf(folder)
    raw = json.loads((folder / "tokenizer.json").read_text())
    assert isinstance(raw["model"]["merges"][0], list)  # tokenizers >= 0.20 writes [a, b] pairs
    raw["model"]["merges"] = [" ".join(m) for m in raw["model"]["merges"]]  # the older "a b" spelling
    strings = tmp_path / "strings"
    shutil.copytree(folder, strings)
    (strings / "tokenizer.json").write_text(json.dumps(raw, indent=4, sort_keys=True))
    assert tokenizer_digest_hf(strings) == digest


def test_bos_eos_count_and_pad_does_not(tmp_path: Path) -> None:
    folder = _byte_level_bpe(tmp_path / "t")
    digest = tokenizer_digest_hf(folder)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}))
    assert tokenizer_digest_hf(folder) == digest  # pad is left out on purpose
    config.write_text(json.dumps({"bos_token": {"content": "<s>", "special": True}, "eos_token": "</s>"}))
    assert tokenizer_digest_hf(folder) == digest  # AddedToken dicts resolve like strings
    config.write_text(json.dumps({"bos_token": "<s>", "eos_token": "<s>"}))
    assert tokenizer_digest_hf(folder) != digest
    # With no tokenizer config the ids come from config.json, then generation_config.json (a list: first).
    config.unlink()
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": [1, 0]}))
    assert tokenizer_digest_hf(folder) == digest


def test_no_tokenizer_gives_none(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert tokenizer_digest_hf(tmp_path) is None


def test_malformed_tokenizer_json_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InvalidFile, match=r"tokenizer\.json"):
        tokenizer_digest_hf(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "Nonsense"}}))
    with pytest.raises(InvalidFile, match=r"tokenizer\.json"):
        tokenizer_digest_hf(tmp_path)


@pytest.mark.realmodel
def test_gguf_digest_equals_its_transformers_tokenizer(tmp_path: Path) -> None:
    """The GGUF digest is the digest of the tokenizer transformers builds from it, saved as a folder."""
    from owlkit.formats.tokenizer import load_gguf_tokenizer

    gguf = need(SMOLLM_GGUF)
    tok = load_gguf_tokenizer(gguf)
    tok.save_pretrained(tmp_path)
    assert tokenizer_digest_gguf(gguf) == tokenizer_digest_hf(tmp_path)
    assert tok.bos_token_id == 1 and tok.eos_token_id == 2  # the GGUF metadata's ids

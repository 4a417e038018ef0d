"""An HF tokenizer as GGUF tokenizer metadata, the way llama.cpp reads it.

Two tokenizer families cover the Llama-shaped models owlkit exports:

- byte-level BPE (GPT-2 style: SmolLM, Llama 3, Qwen 2) -> ``tokenizer.ggml.model = "gpt2"`` with the
  merges, and ``tokenizer.ggml.pre`` naming the pre-tokenizer regex llama.cpp must apply. llama.cpp's own
  converter recognises the pre-tokenizer by hashing the tokenization of a probe text; here it is read from
  the structure of ``tokenizer.json``, and one we cannot name is refused rather than silently guessed
  (a wrong pre-tokenizer splits digits or contractions differently and changes every prompt's tokens);
- SentencePiece-style BPE saved as ``tokenizer.json`` (byte fallback, "▁" for spaces: Llama 2, Mistral,
  TinyStories) -> ``tokenizer.ggml.model = "llama"``. llama.cpp's converter gives every such token the
  score -1000; llama.cpp's SentencePiece tokenizer merges the highest-scoring pair first, so equal scores
  merge left to right and can split words differently from transformers. We score each token by the rank
  of the merge that makes it (earlier merges score higher), which is the order transformers merges in.

Only JSON is read: no tokenizer code runs. Special token ids, add-BOS/EOS flags, merges and the chat
template come from gguf-py's ``SpecialVocab``, the reader llama.cpp's converter uses.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, Refused

MAX_TOKENIZER_BYTES = 64 << 20
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")
NOT_MERGED_SCORE = -1e6  # a token no merge produces: chosen only when nothing else fits

# The pre-tokenizer regexes of Llama 3 and Qwen 2 (published in their tokenizer.json files).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
PRE_TOKENIZERS = ("gpt-2", "smollm", "llama-bpe", "qwen2")


def _steps(part: dict | None) -> list[dict]:
    """A tokenizer.json pre-tokenizer or normalizer as a list of steps (a Sequence flattened)."""
    if not part:
        return []
    if part.get("type") == "Sequence":
        return list(part.get("pretokenizers") or part.get("normalizers") or [])
    return [part]


def _split_regex(step: dict) -> str | None:
    pattern = step.get("pattern") or {}
    return pattern.get("Regex") if step.get("type") == "Split" else None


def pre_tokenizer_name(tokenizer: dict, name: str) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level BPE ``tokenizer.json``; Refused when unknown."""
    steps = _steps(tokenizer.get("pre_tokenizer"))
    kinds = [s.get("type") for s in steps]
    byte_level = steps[-1] if kinds and kinds[-1] == "ByteLevel" else None
    if byte_level and byte_level.get("use_regex", True):
        if kinds == ["ByteLevel"]:
            return "gpt-2"
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
            return "smollm"
    if byte_level and kinds == ["Split", "ByteLevel"]:
        regex = _split_regex(steps[0])
        if regex == _LLAMA3_SPLIT:
            return "llama-bpe"
        if regex == _QWEN2_SPLIT:
            return "qwen2"
    raise Refused(
        f"{name}: its pre-tokenizer ({' + '.join(map(str, kinds)) or 'none'}) is not one llama.cpp names; "
        f"GGUF export knows {', '.join(PRE_TOKENIZERS)}: convert it with llama.cpp's convert_hf_to_gguf.py"
    )


def read_tokenizer_json(hf_dir: Path) -> dict:
    path = hf_dir / "tokenizer.json"
    if not path.is_file():
        raise InvalidFile(
            f"{hf_dir.name}: tokenizer.json is missing; GGUF export needs the fast tokenizer file "
            "(save the tokenizer with transformers first)"
        )
    if path.stat().st_size > MAX_TOKENIZER_BYTES:
        raise InvalidFile(f"{path.name}: larger than {MAX_TOKENIZER_BYTES >> 20} MiB; not a tokenizer")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        model = data["model"]
        vocab = model["vocab"]
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            raise TypeError("vocab is not a token -> id map")
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidFile(f"{hf_dir.name}/tokenizer.json: not a valid tokenizer ({e}); re-save it") from None
    return data


def _merge_pairs(model: dict) -> list[str]:
    # tokenizers writes merges as "a b" strings (old) or [a, b] pairs (new); either way, the merged token
    # is the concatenation.
    return ["".join(m.split(" ", 1)) if isinstance(m, str) else "".join(m) for m in model.get("merges") or []]


def add_vocabulary(writer: Any, hf_dir: Path, vocab_size: int) -> tuple[str, list[str]]:
    """Write ``tokenizer.ggml.*`` keys and the chat template for ``hf_dir`` to a GGUFWriter; returns the
    tokenizer model name ("gpt2" or "llama") and notes on what was left out. ``vocab_size`` is the model's embedding rows: ids the
    tokenizer does not use become ``[PADn]`` tokens of type UNUSED, as llama.cpp's converter writes."""
    import gguf

    name = hf_dir.name
    data = read_tokenizer_json(hf_dir)
    model = data["model"]
    if model.get("type") != "BPE":
        raise Refused(
            f"{name}: its tokenizer is {model.get('type')!r}; GGUF export handles BPE tokenizers "
            "(byte-level or SentencePiece-style)"
        )
    text_of: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    if max(text_of, default=0) >= vocab_size or min(text_of, default=0) < 0:
        raise InvalidFile(
            f"{name}: tokenizer ids run to {max(text_of)} but the model has {vocab_size} embedding rows; "
            "the tokenizer belongs to another model"
        )
    added = {a["id"]: a for a in data.get("added_tokens") or [] if isinstance(a.get("id"), int)}
    # An added token past the embedding rows can never be fed to the model (transformers' GGUF reader
    # adds such an "<|endoftext|>" to byte-level tokenizers); llama.cpp cannot hold it, so it is left out.
    notes = [
        f"added token {a['content']!r} (id {i}) is past the model's {vocab_size} embedding rows; left out"
        for i, a in added.items()
        if i >= vocab_size or i < 0
    ]
    added = {i: a for i, a in added.items() if 0 <= i < vocab_size}
    text_of.update({i: a["content"] for i, a in added.items()})
    spm = bool(model.get("byte_fallback"))
    rank = {t: r for r, t in enumerate(_merge_pairs(model))} if spm else {}
    tokens: list[str] = []
    types: list[int] = []
    scores: list[float] = []
    for i in range(vocab_size):
        text = text_of.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(text)
            if i in added:
                types.append(
                    gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED
                )
            elif spm and BYTE_TOKEN.fullmatch(text):
                types.append(gguf.TokenType.BYTE)
            else:
                types.append(gguf.TokenType.NORMAL)
        if spm:
            merged = rank.get(text or "")
            scores.append(
                -float(merged) if merged is not None else (0.0 if len(text or "") <= 1 else NOT_MERGED_SCORE)
            )

    if spm:
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
        normalizers = _steps(data.get("normalizer"))
        writer.add_add_space_prefix(any(n.get("type") == "Prepend" for n in normalizers))
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer_name(data, name))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(hf_dir, load_merges=not spm, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)
    return ("llama" if spm else "gpt2"), notes

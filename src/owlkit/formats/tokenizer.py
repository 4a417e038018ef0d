"""The normalised tokenizer digest: one hash that says "these two models tokenize the same way".

It is part of a model's base identity (an adapter trained on one base must not be applied to a base
that splits text differently), so it must not depend on how the tokenizer is stored: a GGUF file and
the HF folder converted from it give the same digest. It hashes what decides tokenization, read back
from a real tokenizer rather than from file bytes (which differ in key order, merge spelling, spacing):

- ``tokens``: the vocabulary, added tokens included, as a list in id order;
- ``merges``: the BPE merges as ``"a b"`` strings (both spellings in tokenizer.json normalised);
- ``bos`` / ``eos``: the special token ids. Only these two: they change what a model sees and when it
  stops. pad and unk are left out because converters disagree about them with no effect on the text
  (transformers' GGUF loader sets pad to eos when the file has none; others leave it unset or pick unk);
- ``probe``: the ids of ``PROBE_TEXT`` encoded without special tokens, which captures the normaliser,
  the pre-tokenizer and the model together.

The digest is ``sha256:<hex>`` of the canonical JSON (sorted keys, compact separators) of those fields
plus a schema tag. Reading a tokenizer needs the ``tokenizers`` package (ml extra); a GGUF needs
transformers, whose GGUF tokenizer conversion is the one ``gguf_to_hf`` saves into the HF folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, missing_extra

SCHEMA = "owl-tokenizer-digest/1"

# Fixed forever (changing it changes every digest): ASCII words, digits, punctuation, runs of spaces,
# tabs and newlines, accents, CJK, Korean, Arabic, emoji (with a skin-tone modifier and a ZWJ
# sequence), and code. No special-token strings: whether "<s>" in text is split is a converter detail.
PROBE_TEXT = (
    "Hello, World! The quick brown fox jumps over 13 lazy dogs; 3.14159 + 2,718 = 5.85959?\n"
    "  two spaces,\tone tab,    four spaces.\n\n\nThree newlines above. 1234567890 1,000,000 $42.50 50% off!\n"
    "Naïve café, déjà vu, façade, Ångström, Straße, Ñandú, Žluťoučký kůň, ÉCOLE.\n"
    "東京は日本の首都です。中文分词测试，你好世界！한국어 텍스트입니다. مرحبا بالعالم\n"
    "Emoji: 🦉🚀👍🏽 👩‍💻 ❤️ ✓\n"
    'def owl(x: int) -> str:\n    return f"{x ** 2:>8}"  # comment\n'
    "if (a && b) || !c { arr[i] = {'k': \"v\"}; } // end\n"
    "email@example.com https://example.org/path?q=1&r=2 <b>bold</b> --flag=value ...!!! ??"
)


def _digest(
    tokens: list[str], merges: list[str], bos: int | None, eos: int | None, probe: list[int] | None
) -> str:
    record = {"schema": SCHEMA, "tokens": tokens, "merges": merges, "bos": bos, "eos": eos, "probe": probe}
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))  # ASCII-escaped: any token is safe
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _merges(model: dict[str, Any]) -> list[str]:
    """tokenizer.json merges, written either as "a b" strings or (tokenizers >= 0.20) as [a, b] pairs."""
    out = []
    for m in model.get("merges") or []:
        out.append(" ".join(m) if isinstance(m, list) else str(m))
    return out


def _vocab_in_id_order(tok: Any) -> list[str]:
    vocab: dict[str, int] = tok.get_vocab(with_added_tokens=True)
    return [token for token, _ in sorted(vocab.items(), key=lambda kv: (kv[1], kv[0]))]


def _probe_ids(tok: Any) -> list[int]:
    # A tokenizer.json may carry truncation or padding settings; neither belongs in the probe.
    tok.no_truncation()
    tok.no_padding()
    return list(tok.encode(PROBE_TEXT, add_special_tokens=False).ids)


def _digest_backend(tok: Any, raw: dict[str, Any], bos: int | None, eos: int | None) -> str:
    return _digest(_vocab_in_id_order(tok), _merges(raw.get("model") or {}), bos, eos, _probe_ids(tok))


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidFile(
            f"{path.name}: not valid JSON ({e}); re-download or re-save the tokenizer"
        ) from None
    return data if isinstance(data, dict) else {}


def _token_string(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _special_ids(folder: Path, tok: Any) -> tuple[int | None, int | None]:
    """bos and eos ids, from the first file that names them, in the order transformers trusts them:
    the tokenizer's own files (token strings resolved through the vocabulary), then the model config,
    then the generation config (whose eos may be a list: its first entry)."""
    tokenizer_files = [
        _load_json(folder / "tokenizer_config.json"),
        _load_json(folder / "special_tokens_map.json"),
    ]
    id_files = [_load_json(folder / "config.json"), _load_json(folder / "generation_config.json")]
    found: list[int | None] = []
    for key in ("bos", "eos"):
        value: int | None = None
        for data in tokenizer_files:
            text = _token_string(data.get(f"{key}_token"))
            if text is not None:
                value = tok.token_to_id(text)
                break
        else:
            for data in id_files:
                raw = data.get(f"{key}_token_id")
                if isinstance(raw, list):
                    raw = raw[0] if raw else None
                if isinstance(raw, int) and not isinstance(raw, bool):
                    value = raw
                    break
        found.append(value)
    return found[0], found[1]


def tokenizer_digest_hf(folder: Path) -> str | None:
    """The digest of an HF folder's tokenizer (its tokenizer.json), or None when it has none.

    Folders with only a slow-tokenizer vocabulary (tokenizer.model, vocab.txt) and no tokenizer.json
    also give None: their fast form is produced by transformers' converters, not stored.
    """
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise missing_extra("tokenizers", "ml", "reading tokenizer.json") from None
    raw = _load_json(path)
    try:
        tok = Tokenizer.from_str(json.dumps(raw))
    except Exception as e:  # the Rust side reports malformed files as plain Exceptions
        raise InvalidFile(
            f"{path.name}: not a tokenizer the tokenizers library reads ({e}); re-save it"
        ) from None
    bos, eos = _special_ids(folder, tok)
    return _digest_backend(tok, raw, bos, eos)


def load_gguf_tokenizer(path: Path) -> Any:
    """transformers' tokenizer for a GGUF file (the one gguf_to_hf saves into the HF folder).

    ``TokenizersBackend`` is built straight from the GGUF metadata; ``AutoTokenizer`` gives the same
    files but first parses the whole header again with gguf-py to pick a class (seconds on a 49k vocab).
    The file is validated with owlkit's own GGUF reader first: transformers' reader is not a validator.
    """
    from owlkit.formats.gguf import read_gguf

    path = Path(path)
    read_gguf(path)
    try:
        from transformers import TokenizersBackend
    except ImportError:
        raise missing_extra("transformers", "ml", "reading a GGUF tokenizer") from None
    try:
        return TokenizersBackend.from_pretrained(
            str(path.parent), gguf_file=path.name, local_files_only=True, trust_remote_code=False
        )
    except (ValueError, KeyError, NotImplementedError) as e:
        raise InvalidFile(f"{path.name}: transformers cannot build its tokenizer ({e})") from None


def tokenizer_digest_gguf(path: Path) -> str | None:
    """The digest of a GGUF file's tokenizer, or None when its metadata has no vocabulary.

    bos/eos come from the GGUF metadata; tokens, merges and probe ids from transformers' conversion of
    the file's tokenizer, so the digest equals that of the HF folder ``gguf_to_hf`` writes. A tokenizer
    type transformers cannot convert falls back to the metadata's tokens and merges with no probe (such
    a file has no HF counterpart to match).
    """
    from owlkit.formats.gguf import read_gguf

    path = Path(path)
    meta = read_gguf(path).metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        return None
    bos = meta.get("tokenizer.ggml.bos_token_id")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    bos = bos if isinstance(bos, int) and not isinstance(bos, bool) else None
    eos = eos if isinstance(eos, int) and not isinstance(eos, bool) else None
    try:
        backend = load_gguf_tokenizer(path).backend_tokenizer
    except InvalidFile:
        merges = [str(m) for m in meta.get("tokenizer.ggml.merges") or []]
        return _digest([str(t) for t in tokens], merges, bos, eos, None)
    return _digest_backend(backend, json.loads(backend.to_str()), bos, eos)

"""What a format reader reports about a path, before anything is stored."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO


@dataclass
class LicenseFinding:
    """A license and where it was found. ``id`` is an SPDX id, a ``LicenseRef-…`` id, or ``unknown``:
    an unidentified license stays ``unknown``, never guessed."""

    id: str = "unknown"
    source: str | None = None  # e.g. "README.md metadata 'license'", "GGUF general.license", "LICENSE title"
    name: str | None = None  # free-text name when the source gives one (license_name)
    link: str | None = None  # license_link when given


@dataclass
class Origin:
    """Where an artifact came from: always the source path; the upstream repo and revision when named."""

    source_path: str
    repo_id: str | None = None
    revision: str | None = None
    via: str | None = None  # what named the repo id: "config.json _name_or_path", "GGUF general.source…"


@dataclass
class Inspected:
    """A path a reader understood: what would be stored, and the facts read from it.

    ``facts`` are model facts (hashed into the artifact digest); ``side`` is anything else worth
    keeping (card metadata, warnings) and is not hashed.
    """

    kind: str  # model | adapter | dataset | pipeline
    format: str  # hf | safetensors | gguf | peft | dataset | diffusers
    root: Path  # the folder, or the single file
    files: list[str]  # paths relative to root (posix) to store; for a single file, its name
    facts: dict[str, Any] = field(default_factory=dict)
    license: LicenseFinding = field(default_factory=LicenseFinding)
    origin: Origin | None = None
    base_ref: str | None = None  # adapters: the base they name (base_model_name_or_path)
    flags: list[str] = field(default_factory=list)  # things a user must know: custom code, pickles
    warnings: list[str] = field(default_factory=list)
    side: dict[str, Any] = field(default_factory=dict)
    # (inode, size, mtime_ns) per file when inspected; the importer refuses a file that changes after
    stats: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def path_of(self, rel: str) -> Path:
        """The source file behind a stored relative path."""
        return self.root / rel if self.root.is_dir() else self.root


def open_untrusted(path: Path, what: str) -> BinaryIO:
    """Open a file a reader is about to validate; OS failures become one-line owlkit errors."""
    from owlkit.errors import InvalidFile, NotFound

    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InvalidFile(f"{path.name}: is a directory, not a {what} file; pass the file itself") from None
    except OSError as e:
        raise InvalidFile(f"{path.name}: cannot be read ({e.strerror}); check its permissions") from None


def digest_text(text: str) -> str:
    """``sha256:<hex>`` of a string's UTF-8 bytes (chat templates and other small texts)."""
    import hashlib

    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


# The model facts every reader fills where it can (keys absent or None when unknown). They are hashed into
# the artifact digest, so readers must produce them deterministically from file content alone.
MODEL_FACT_KEYS = (
    "architecture",  # family: "llama", "mistral"... (HF model_type, GGUF general.architecture)
    "architectures",  # HF class names, e.g. ["LlamaForCausalLM"] (HF folders only)
    "parameters",  # int: total elements of all weight tensors
    "dtype",  # the dtype holding most parameters: "float32", "bfloat16", "float16", or a GGUF type "Q4_1"
    "quantization",  # None, or "gguf:Q4_1" (GGUF file type), "bnb-nf4", "gptq"... (HF quantization_config)
    "vocab_size",  # int
    "context_length",  # int: max_position_embeddings / {arch}.context_length
    "shapes",  # {"layers", "hidden", "intermediate", "heads", "kv_heads"}: ints
    "tie_word_embeddings",  # bool, when known
    "chat_template_digest",  # digest_text(template) or None
    "tokenizer_digest",  # filled by owlkit.formats.tokenizer (normalised tokenizer hash) or None
)


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in large chunks (hashlib releases the GIL above 2 KiB)."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(8 * 1024 * 1024):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()

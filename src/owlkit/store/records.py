"""Typed readings of what an artifact's catalog row holds besides its files.

A manifest's ``facts`` (hashed into the digest) and its side record (not hashed: origin, license
detail, training log, drift, warnings …) are JSON in the catalog, written by many commands. Code reads
them through these views, so a key is spelt once and a missing or malformed one reads as empty, never
as a KeyError in some command far from where it was written. ``raw`` keeps everything for display.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def _dict(v: Any) -> dict[str, Any]:
    return dict(v) if isinstance(v, Mapping) else {}


def _strs(v: Any) -> list[str]:
    return [str(x) for x in v] if isinstance(v, list) else []


def _opt(v: Any, kind: type) -> Any:
    return v if isinstance(v, kind) and not isinstance(v, bool) else None  # bool is an int: not a count


@dataclass(frozen=True)
class Facts:
    """A manifest's facts: what readers found in the files (model shape, tokenizer, dataset format)."""

    raw: Mapping[str, Any] = field(default_factory=dict)

    def _get(self, key: str, kind: type) -> Any:
        return _opt(self.raw.get(key), kind)

    @property
    def architecture(self) -> str | None:
        return self._get("architecture", str)

    @property
    def parameters(self) -> int | None:
        return self._get("parameters", int)

    @property
    def dtype(self) -> str | None:
        return self._get("dtype", str)

    @property
    def quantization(self) -> str | None:
        """The GGUF or bitsandbytes type of a quantized model; None for full precision."""
        return self._get("quantization", str)

    @property
    def context_length(self) -> int | None:
        return self._get("context_length", int)

    @property
    def vocab_size(self) -> int | None:
        return self._get("vocab_size", int)

    @property
    def tokenizer_digest(self) -> str | None:
        return self._get("tokenizer_digest", str)

    @property
    def chat_template_digest(self) -> str | None:
        return self._get("chat_template_digest", str)

    @property
    def base_digest(self) -> str | None:
        return self._get("base_digest", str)

    @property
    def base_identity(self) -> str | None:
        return self._get("base_identity", str)

    @property
    def data_format(self) -> str | None:
        """alpaca, sharegpt, openai-messages or text, for datasets."""
        return self._get("data_format", str)

    @property
    def shapes(self) -> dict[str, Any]:
        return _dict(self.raw.get("shapes"))

    @property
    def peft_type(self) -> str | None:
        return self._get("peft_type", str)


@dataclass(frozen=True)
class Origin:
    """Where an artifact came from: the imported path, or the artifact and recipe it was derived from;
    the upstream repo (and revision) when something named it."""

    source_path: str | None = None
    derived_from: str | None = None
    recipe: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    via: str | None = None

    @classmethod
    def from_dict(cls, d: Any) -> Origin:
        d = _dict(d)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if isinstance(d.get(k), str)})

    @property
    def where(self) -> str | None:
        """One line for people: the source path or the digest it was derived from."""
        return self.source_path or self.derived_from


@dataclass(frozen=True)
class SideInfo:
    """An artifact's side record (not hashed), read by key through properties."""

    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> Origin:
        return Origin.from_dict(self.raw.get("origin"))

    @property
    def license(self) -> dict[str, Any]:
        """How the license was found: source, evidence, notes (the id itself is in the manifest)."""
        return _dict(self.raw.get("license"))

    @property
    def base_ref(self) -> str | None:
        """The base an imported adapter named (upstream repo id or path), resolved or not."""
        v = self.raw.get("base_ref")
        return v if isinstance(v, str) else None

    @property
    def warnings(self) -> list[str]:
        return _strs(self.raw.get("warnings"))

    @property
    def flags(self) -> list[str]:
        return _strs(self.raw.get("flags"))

    @property
    def training(self) -> dict[str, Any]:
        """A tune's log and summary (steps, losses, tokens/s, notes); empty for anything else."""
        return _dict(self.raw.get("training"))

    @property
    def quality(self) -> dict[str, Any]:
        """The drift `owl quantize` measured for a quantized variant; empty otherwise."""
        return _dict(self.raw.get("quality"))

    @property
    def quantize(self) -> dict[str, Any]:
        return _dict(self.raw.get("quantize"))

    @property
    def environment(self) -> dict[str, Any]:
        """Library versions, host and thread facts a recipe ran with (what rebuild compares)."""
        return _dict(self.raw.get("environment"))

    @property
    def libraries(self) -> dict[str, Any]:
        return _dict(self.environment.get("libraries"))

    @property
    def inputs(self) -> dict[str, Any]:
        """A recipe's inputs by role: digest, name and origin when it ran."""
        return _dict(self.raw.get("inputs"))

    @property
    def card(self) -> dict[str, Any]:
        """The model card's YAML metadata, as imported."""
        return _dict(self.raw.get("card"))

    @property
    def descends_from_quantized(self) -> Any:
        return self.raw.get("descends_from_quantized")

    @property
    def chat_template_names(self) -> list[str]:
        return _strs(self.raw.get("chat_template_names"))

    @property
    def policy_files(self) -> list[str]:
        return _strs(self.raw.get("policy_files"))

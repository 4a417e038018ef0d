"""Manifests: what an artifact is, as canonical JSON, and the digest that names it.

An artifact's digest is ``sha256:<hex>`` of its canonical manifest. The manifest holds EXACTLY:

- ``files``   : [{path, size, sha256}] sorted by path
- ``kind``    : model | adapter | dataset | pipeline
- ``format``  : hf | safetensors | gguf | peft | dataset | diffusers
- ``facts``   : model facts (architecture, parameters, dtype, vocab, shapes, template/tokenizer digests…)
- ``license`` : an SPDX id, a ``LicenseRef-…`` id, or ``unknown``
- ``parents`` : [{digest, relation}] sorted
- ``recipe``  : null, or {name, params, inputs (digests), seed, schema (recipe schema version)}
- ``schema``  : this manifest layout's version

Everything else is a side record (origin, where the license was found, timings, logs, library versions,
host facts, evaluations, attachments, warnings): kept beside the manifest, never hashed, so deriving the
same content twice gives the same digest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from owlkit.errors import UsageError

MANIFEST_SCHEMA = 1
RECIPE_SCHEMA = 1
KINDS = ("model", "adapter", "dataset", "pipeline")
RELATIONS = (
    "adapter_of",
    "finetune_of",
    "merged_from",
    "quantized_from",
    "converted_from",
    "trained_on",
    "generated_by",
    "evaluated_on",
)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def canonical_json(obj: Any) -> bytes:
    """The one canonical encoding: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise UsageError(f"invalid digest {digest[:80]!r}: expected sha256:<64 hex>")
    return digest


def check_rel_path(path: str) -> str:
    """A stored file path is relative, posix, and stays inside its artifact: it becomes a path on export."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
        or len(path) > 1024
    ):
        raise UsageError(f"unsafe file path in artifact: {path[:120]!r} (must be relative, without '..')")
    return path


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str  # hex, no prefix (the blob's address)

    def __post_init__(self) -> None:
        check_rel_path(self.path)


@dataclass(frozen=True)
class Parent:
    digest: str
    relation: str


@dataclass
class Recipe:
    """How a derived artifact was made: enough to make it again (``owl rebuild``)."""

    name: str
    params: dict[str, Any]
    inputs: dict[str, str]  # role -> artifact digest, e.g. {"source": "sha256:…"}
    seed: int | None = None
    schema: int = RECIPE_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "inputs": self.inputs,
            "seed": self.seed,
            "schema": self.schema,
        }


@dataclass
class Manifest:
    kind: str
    format: str
    files: list[FileEntry]
    facts: dict[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    parents: list[Parent] = field(default_factory=list)
    recipe: Recipe | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"unknown artifact kind {self.kind!r}: expected one of {', '.join(KINDS)}")
        for p in self.parents:
            check_digest(p.digest)
            if p.relation not in RELATIONS:
                raise UsageError(f"unknown relation {p.relation!r}: expected one of {', '.join(RELATIONS)}")
        paths = [f.path for f in self.files]
        if len(set(paths)) != len(paths):
            raise UsageError("a manifest lists the same file path twice")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": MANIFEST_SCHEMA,
            "kind": self.kind,
            "format": self.format,
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256}
                for f in sorted(self.files, key=lambda f: f.path)
            ],
            "facts": self.facts,
            "license": self.license,
            "parents": [
                {"digest": p.digest, "relation": p.relation}
                for p in sorted(self.parents, key=lambda p: (p.relation, p.digest))
            ],
            "recipe": self.recipe.to_json() if self.recipe else None,
        }

    def canonical(self) -> bytes:
        return canonical_json(self.to_json())

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical()).hexdigest()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        recipe = data.get("recipe")
        return cls(
            kind=data["kind"],
            format=data["format"],
            files=[FileEntry(f["path"], int(f["size"]), f["sha256"]) for f in data["files"]],
            facts=data.get("facts") or {},
            license=data.get("license") or "unknown",
            parents=[Parent(p["digest"], p["relation"]) for p in data.get("parents") or []],
            recipe=Recipe(
                name=recipe["name"],
                params=recipe.get("params") or {},
                inputs=recipe.get("inputs") or {},
                seed=recipe.get("seed"),
                schema=recipe.get("schema", RECIPE_SCHEMA),
            )
            if recipe
            else None,
        )

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

"""Lineage: walking edges, and the one definition of a model's **base identity**.

Base identity = the lineage root reached through ``converted_from`` and ``quantized_from`` edges (a
conversion or quantization is the same model in another file), plus the architecture, its shapes, the
vocabulary size, the normalised tokenizer digest and the chat template digest. A GGUF and the HF folder
converted from it share one identity; an adapter trained on either applies to both (with a warning
when the quantization differs), and is refused on anything else, naming what differs.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

from owlkit.errors import NotFound, Refused
from owlkit.store.manifest import canonical_json
from owlkit.store.store import Record, Store

SAME_MODEL_RELATIONS = ("converted_from", "quantized_from")


@dataclass(frozen=True)
class BaseIdentity:
    root: str  # digest of the lineage root
    architecture: str | None
    shapes: tuple[tuple[str, int], ...]
    vocab_size: int | None
    tokenizer_digest: str | None
    chat_template_digest: str | None

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["shapes"] = dict(self.shapes)
        return d


def lineage_root(store: Store, rec: Record) -> str:
    """Follow converted_from / quantized_from parents up to the first artifact that has none. Walks the
    hashed manifests, not the catalog's edges, so removing an ancestor cannot change a model's identity:
    a parent no longer stored is the root as far as anyone can tell."""
    seen = {rec.digest}
    while True:
        nxt = [p.digest for p in rec.manifest.parents if p.relation in SAME_MODEL_RELATIONS]
        if not nxt or nxt[0] in seen:
            return rec.digest
        seen.add(nxt[0])
        try:
            rec = store.get(nxt[0])
        except NotFound:
            return nxt[0]


def base_identity(store: Store, rec: Record) -> BaseIdentity:
    f = rec.manifest.facts
    shapes = f.get("shapes") or {}
    return BaseIdentity(
        root=lineage_root(store, rec),
        architecture=f.get("architecture"),
        shapes=tuple(sorted((k, int(v)) for k, v in shapes.items() if v is not None)),
        vocab_size=f.get("vocab_size"),
        tokenizer_digest=f.get("tokenizer_digest"),
        chat_template_digest=f.get("chat_template_digest"),
    )


def identity_differences(a: BaseIdentity, b: BaseIdentity) -> list[str]:
    """What differs between two identities, in words, e.g. ``vocab_size 512 != 49152``."""
    out = []
    for key, va in a.to_json().items():
        vb = b.to_json()[key]
        if va != vb:
            out.append(f"{key} {_short(va)} != {_short(vb)}")
    return out


def _short(v: Any) -> str:
    if isinstance(v, str) and v.startswith("sha256:"):
        return v[7:19]
    return str(v)


def adapter_base(store: Store, adapter: Record) -> Record | None:
    up, _ = store.edges_of(adapter.digest)
    for e in up:
        if e.relation == "adapter_of" and e.parent:
            return store.get(e.parent)
    return None


def check_adapter_applies(store: Store, adapter: Record, target: Record) -> list[str]:
    """Refuse an adapter on a model of another base identity; return warnings (quantization differs)."""
    base = adapter_base(store, adapter)
    if base is None:
        raise Refused(
            f"{adapter.name} names a base that is not in the store: "
            "import its base model first, then re-import the adapter"
        )
    diffs = identity_differences(base_identity(store, base), base_identity(store, target))
    if diffs:
        raise Refused(
            f"{adapter.name} was trained on {base.name}, not a model like {target.name}: " + "; ".join(diffs)
        )
    qa, qb = base.facts.quantization, target.facts.quantization
    if qa != qb:
        return [
            f"{adapter.name} was trained on {qa or 'unquantized'} weights; "
            f"{target.name} is {qb or 'unquantized'}"
        ]
    return []

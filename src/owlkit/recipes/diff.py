"""What differs between two stored artifacts: files, tensors, configs, card, facts, recipe and lineage.

The tensors are compared by the store-free ``owlkit.formats.tensor_diff`` straight from the stored blobs
(memory bounded by a chunk, equal bytes never decoded); this module picks which files to compare, reads
configs and cards key by key, and puts the sections together as :class:`ArtifactDiff`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.errors import Corrupt, InvalidFile

if TYPE_CHECKING:
    # numpy comes with the tensor comparison: imported when a diff runs, not with the API
    from owlkit.formats.tensor_diff import LayerSummary, Tensor, TensorDiff
    from owlkit.store.store import Record, Store

# Config and card files are small by nature; a bigger one is reported rather than read.
MAX_TEXT_BYTES = 16 << 20
CONFIG_FILES = ("config.json", "adapter_config.json", "generation_config.json")
CARD_FILE = "readme.md"


# ----- key-level differences ---------------------------------------------------------------------------


@dataclass
class KeyDiff:
    """Differences of two mappings over dotted keys: ``added`` holds B's values, ``removed`` A's,
    ``changed`` ``{key: {"a": A's value, "b": B's value}}``."""

    added: dict[str, Any] = field(default_factory=dict)
    removed: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (``rope_scaling.factor``); lists and scalars are leaf values."""
    if not isinstance(obj, dict) or (prefix and not obj):
        return {prefix: obj} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def key_diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> KeyDiff:
    fa, fb = flatten(a or {}), flatten(b or {})
    return KeyDiff(
        added={k: fb[k] for k in sorted(fb) if k not in fa},
        removed={k: fa[k] for k in sorted(fa) if k not in fb},
        changed={k: {"a": fa[k], "b": fb[k]} for k in sorted(fa) if k in fb and not _equal(fa[k], fb[k])},
    )


def _equal(x: Any, y: Any) -> bool:
    # 1 == 1.0 == True in Python, yet a config that turned an int into a float or bool did change
    return type(x) is type(y) and x == y


# ----- the sections ------------------------------------------------------------------------------------


@dataclass
class DiffSide:
    name: str
    digest: str
    kind: str
    format: str


@dataclass
class FileSize:
    path: str
    size: int


@dataclass
class FileChange:
    path: str
    size_a: int
    size_b: int
    sha256_a: str
    sha256_b: str


@dataclass
class FileSection:
    """Files by path and sha256: ``removed`` are only in A, ``added`` only in B."""

    added: list[FileSize] = field(default_factory=list)
    removed: list[FileSize] = field(default_factory=list)
    changed: list[FileChange] = field(default_factory=list)
    same: int = 0


@dataclass
class TensorPair:
    """Weight files of one format compared as one tensor namespace per side."""

    format: str
    a: list[str]
    b: list[str]


@dataclass
class TensorSection:
    pairs: list[TensorPair] = field(default_factory=list)
    compared: int = 0
    same: int = 0
    differing: list[TensorDiff] = field(default_factory=list)
    layers: list[LayerSummary] = field(default_factory=list)


@dataclass
class RecipeSection(KeyDiff):
    """The recipes' key differences; ``a`` / ``b``: whether each side has a recipe at all; ``labels``:
    a name for each artifact digest among the values (the inputs), for people reading them."""

    a: bool = False
    b: bool = False
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class ParentRef:
    relation: str
    digest: str | None
    name: str | None


@dataclass
class LineageSection:
    """Parent edges only A has, only B has, both have; ``direct`` says when one derives from the other."""

    only_a: list[ParentRef] = field(default_factory=list)
    only_b: list[ParentRef] = field(default_factory=list)
    same: list[ParentRef] = field(default_factory=list)
    direct: list[str] = field(default_factory=list)


@dataclass
class ArtifactDiff:
    """Everything that differs between artifacts A and B (see :func:`diff_artifacts`)."""

    a: DiffSide
    b: DiffSide
    identical: bool
    files: FileSection
    tensors: TensorSection
    configs: dict[str, KeyDiff]
    card: KeyDiff | None
    manifest: KeyDiff
    facts: KeyDiff
    recipe: RecipeSection
    lineage: LineageSection
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----- artifacts ---------------------------------------------------------------------------------------


def _side(rec: Record) -> DiffSide:
    m = rec.manifest
    return DiffSide(rec.name, rec.digest, m.kind, m.format)


def diff_artifacts(
    store: Store, ref_a: str, ref_b: str, *, advance: Callable[[float], None] | None = None
) -> ArtifactDiff:
    """Compare two stored artifacts (NAME[:TAG] or digest prefix each; NotFound for an unknown one).

    Files by sha256; tensors of the weight files both sides have in one format (paired by path, or
    all of a format's files merged into one tensor namespace when the paths differ, as for
    ``x-q8_0.gguf`` against ``x-q4_0.gguf``); config.json / adapter_config.json / generation_config.json
    and the README.md front matter key by key; manifest kind, format, license and facts; the recipe
    (name, params, inputs, seed); parent edges. ``advance(n)`` is called as tensors are compared.
    """
    ra, rb = store.find(ref_a), store.find(ref_b)
    ma, mb = ra.manifest, rb.manifest
    has_recipe = {"a": ma.recipe is not None, "b": mb.recipe is not None}
    if ra.digest == rb.digest:
        return ArtifactDiff(
            _side(ra),
            _side(rb),
            True,
            FileSection(same=len(ma.files)),
            TensorSection(),
            {},
            None,
            KeyDiff(),
            KeyDiff(),
            RecipeSection(**has_recipe),
            LineageSection(same=_parents(store, ra)),
        )
    notes: list[str] = []
    files_a = {f.path: f for f in ma.files}
    files_b = {f.path: f for f in mb.files}
    files = FileSection(
        added=[FileSize(p, files_b[p].size) for p in sorted(files_b) if p not in files_a],
        removed=[FileSize(p, files_a[p].size) for p in sorted(files_a) if p not in files_b],
        changed=[
            FileChange(p, files_a[p].size, files_b[p].size, files_a[p].sha256, files_b[p].sha256)
            for p in sorted(files_a)
            if p in files_b and files_a[p].sha256 != files_b[p].sha256
        ],
        same=sum(p in files_b and files_a[p].sha256 == files_b[p].sha256 for p in files_a),
    )
    keys = key_diff(ma.recipe.to_json() if ma.recipe else {}, mb.recipe.to_json() if mb.recipe else {})
    recipe = RecipeSection(keys.added, keys.removed, keys.changed, **has_recipe)
    recipe.labels = _digest_labels(store, recipe)
    return ArtifactDiff(
        _side(ra),
        _side(rb),
        False,
        files,
        _tensor_section(store, ra, rb, notes, advance),
        _config_section(store, ra, rb, notes),
        _card_section(store, ra, rb, notes),
        key_diff(
            {"kind": ma.kind, "format": ma.format, "license": ma.license},
            {"kind": mb.kind, "format": mb.format, "license": mb.license},
        ),
        key_diff(ma.facts, mb.facts),
        recipe,
        _lineage_section(store, ra, rb),
        notes,
    )


def _digest_labels(store: Store, kd: KeyDiff) -> dict[str, str]:
    """A name for each artifact digest among the recipe section's values (input digests)."""
    values = [*kd.added.values(), *kd.removed.values(), *(v for c in kd.changed.values() for v in c.values())]
    return {v: store.label(v) for v in values if _is_digest(v)}


def _is_digest(v: Any) -> bool:
    return isinstance(v, str) and v.startswith("sha256:") and len(v) == 71


def _blob(store: Store, rec: Record, rel: str) -> Path:
    f = next(f for f in rec.manifest.files if f.path == rel)
    path = store.blobs.path(f.sha256)
    if not path.is_file():
        raise Corrupt(f"{rec.name}: {rel} is missing from the store: run `owl verify {rec.name}`")
    return path


def _weights(store: Store, rec: Record, fmt: str) -> tuple[list[str], list[Tensor]]:
    """One format's weight files of an artifact, their tensors merged into one namespace (a name two
    shards both hold is qualified by its file, so neither hides the other)."""
    from owlkit.formats.tensor_diff import WEIGHT_FORMATS, read_tensors

    rels = sorted(f.path for f in rec.manifest.files if WEIGHT_FORMATS.get(Path(f.path).suffix) == fmt)
    per_file = []
    for rel in rels:
        found, tensors = read_tensors(_blob(store, rec, rel), f"{rec.name}: {rel}")
        if found != fmt:
            raise InvalidFile(f"{rec.name}: {rel} is not a {fmt} file despite its name; re-import it")
        per_file.append((rel, tensors))
    counts: dict[str, int] = {}
    for _, tensors in per_file:
        for t in tensors:
            counts[t.name] = counts.get(t.name, 0) + 1
    merged = [
        t if counts[t.name] == 1 else replace(t, name=f"{rel}:{t.name}")
        for rel, tensors in per_file
        for t in tensors
    ]
    return rels, merged


def _tensor_section(
    store: Store, ra: Record, rb: Record, notes: list[str], advance: Callable[[float], None] | None
) -> TensorSection:
    from owlkit.formats.tensor_diff import WEIGHT_FORMATS, compare_tensors, layer_summary

    pairs, diffs = [], []
    for fmt in sorted(set(WEIGHT_FORMATS.values())):
        rels_a, ta = _weights(store, ra, fmt) if _has(ra, fmt) else ([], [])
        rels_b, tb = _weights(store, rb, fmt) if _has(rb, fmt) else ([], [])
        if not rels_a or not rels_b:
            if rels_a or rels_b:
                side = "A" if rels_a else "B"
                notes.append(f"only {side} has {fmt} weights: no tensors of that format to compare")
            continue
        if not {t.name for t in ta} & {t.name for t in tb}:  # a model against an adapter, say
            notes.append(f"A's and B's {fmt} weights share no tensor name: not compared tensor by tensor")
            continue
        pairs.append(TensorPair(fmt, rels_a, rels_b))
        diffs += compare_tensors(ta, tb, advance)
    return TensorSection(
        pairs=pairs,
        compared=len(diffs),
        same=sum(not d.differs for d in diffs),
        differing=[d for d in diffs if d.differs],
        layers=layer_summary(diffs),
    )


def _has(rec: Record, fmt: str) -> bool:
    from owlkit.formats.tensor_diff import WEIGHT_FORMATS

    return any(WEIGHT_FORMATS.get(Path(f.path).suffix) == fmt for f in rec.manifest.files)


def _read_text(store: Store, rec: Record, rel: str) -> str | None:
    path = _blob(store, rec, rel)
    if path.stat().st_size > MAX_TEXT_BYTES:
        return None
    return path.read_bytes().decode("utf-8", errors="replace")


def _changed_pairs(ra: Record, rb: Record, wanted: Iterable[str]) -> list[str]:
    """Paths both artifacts hold, whose base name (lower case) is wanted, and whose content differs."""
    names = {w.lower() for w in wanted}
    sha_b = {f.path: f.sha256 for f in rb.manifest.files}
    return sorted(
        f.path
        for f in ra.manifest.files
        if f.path.rsplit("/", 1)[-1].lower() in names and f.path in sha_b and sha_b[f.path] != f.sha256
    )


def _config_section(store: Store, ra: Record, rb: Record, notes: list[str]) -> dict[str, KeyDiff]:
    out = {}
    for rel in _changed_pairs(ra, rb, CONFIG_FILES):
        values = []
        for rec, side in ((ra, "A"), (rb, "B")):
            text = _read_text(store, rec, rel)
            try:
                value = json.loads(text) if text is not None else None
            except ValueError:
                value = None
            if not isinstance(value, dict):
                notes.append(f"{rel} of {side} is not a JSON object of at most {MAX_TEXT_BYTES >> 20} MiB")
                break
            values.append(value)
        else:
            out[rel] = key_diff(values[0], values[1])
    return out


def _card_section(store: Store, ra: Record, rb: Record, notes: list[str]) -> KeyDiff | None:
    """The README.md front matter's key differences; None when the cards are the same or absent."""
    from owlkit.formats.card import parse_card_checked

    rels = [r for r in _changed_pairs(ra, rb, [CARD_FILE]) if "/" not in r]
    if not rels:
        return None
    metas = []
    for rec, side in ((ra, "A"), (rb, "B")):
        text = _read_text(store, rec, rels[0])
        meta, _body, problem = parse_card_checked(text or "")
        if problem:
            notes.append(f"{rels[0]} of {side}: {problem}")
        metas.append(meta)
    kd = key_diff(metas[0], metas[1])
    if kd.empty:
        notes.append(f"{rels[0]} differs in its text, not its metadata")
    return kd


def _parents(store: Store, rec: Record) -> list[ParentRef]:
    up, _ = store.edges_of(rec.digest)
    return [ParentRef(e.relation, e.parent, store.label(e.parent) if e.parent else e.parent_ref) for e in up]


def _lineage_section(store: Store, ra: Record, rb: Record) -> LineageSection:
    pa, pb = _parents(store, ra), _parents(store, rb)

    def key(p: ParentRef) -> tuple[str, str]:
        return p.relation, p.digest or f"unresolved:{p.name}"

    ka, kb = {key(p) for p in pa}, {key(p) for p in pb}
    direct = [f"B {p.relation} A" for p in pb if p.digest == ra.digest]
    direct += [f"A {p.relation} B" for p in pa if p.digest == rb.digest]
    return LineageSection(
        only_a=[p for p in pa if key(p) not in kb],
        only_b=[p for p in pb if key(p) not in ka],
        same=[p for p in pa if key(p) in kb],
        direct=direct,
    )

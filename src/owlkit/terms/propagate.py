"""An artifact's effective terms: its own license plus what it inherits through lineage, and a verdict
for a planned use with the chain of ancestor -> license -> clause that decided it.

Inheritance (the conservative reading, said in every explanation):

- weight derivatives (``adapter_of``, ``finetune_of``, ``merged_from``, ``quantized_from``,
  ``converted_from``) carry the parent's license and everything the parent inherits;
- ``trained_on`` carries the dataset's license: non-commercial data makes the model non-commercial
  (Creative Commons' own guidance on AI training reads NC this way; whether trained weights are
  "adapted material" is legally unsettled);
- ``generated_by`` carries the teacher's terms on its outputs (e.g. OpenAI's: no training of competing
  models).

Nothing here rewrites a stored manifest: terms are re-derived from the catalog on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from owlkit.errors import Corrupt
from owlkit.store.store import Record, Store

if TYPE_CHECKING:
    from owlkit.terms.kb import Clause, License

WEIGHT_EDGES = frozenset({"adapter_of", "finetune_of", "merged_from", "quantized_from", "converted_from"})
DATA_EDGES = frozenset({"trained_on"})
OUTPUT_EDGES = frozenset({"generated_by"})
USES = ("commercial", "research", "internal", "redistribute-weights", "serve-api", "train-other-model")
# Uses that put the weights (or a product on them) in others' hands: attribution, naming and pass-down
# duties apply to these.
DISTRIBUTING = frozenset({"commercial", "redistribute-weights", "serve-api"})

ALLOWED, OBLIGATIONS, FORBIDDEN, UNKNOWN = "allowed", "allowed with obligations", "forbidden", "unknown"
EXIT_CODES = {ALLOWED: 0, OBLIGATIONS: 10, FORBIDDEN: 11, UNKNOWN: 12}
_RANK = {ALLOWED: 0, OBLIGATIONS: 1, UNKNOWN: 2, FORBIDDEN: 3}  # the worst source decides


@dataclass
class Source:
    """One license that binds the artifact, and how it reaches it."""

    artifact: str  # name (or digest) of the artifact that declares it
    digest: str | None
    license: str  # the declared id or expression ("unknown" when none was found)
    via: str  # "self", "weights", "data" or "outputs"
    path: list[str] = field(default_factory=list)  # relations from the artifact up to the declarer

    @property
    def route(self) -> str:
        """How it reaches the artifact, e.g. "data (merged_from > trained_on)"."""
        return f"{self.via} ({' > '.join(self.path)})" if self.path else self.via


@dataclass
class Step:
    """One link of a verdict's chain: which ancestor, which license, which clause, what it says."""

    artifact: str
    via: str
    license: str
    clause: str | None
    value: str | None
    verified: bool
    status: str
    reason: str
    source: str | None = None  # "URL §section" of the clause


@dataclass
class UseVerdict:
    """The answer for one use: the status (the worst over every license that binds the artifact), the
    chain of steps behind it, the obligations when allowed, and declared-vs-inherited conflicts."""

    use: str
    status: str
    chain: list[Step]
    obligations: list[str]
    conflicts: list[str]

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {**asdict(self), "exit_code": self.exit_code}


def lineage_sources(store: Store, rec: Record) -> list[Source]:
    """Every license binding ``rec``: its own, then each ancestor's reached through inheriting edges.
    Corrupt for a cycle; an unresolved parent is a Source with license "unknown"."""
    inherited: list[Source] = []
    _walk(store, rec.digest, "weights", [], {rec.digest}, inherited)
    own = rec.manifest.license or "unknown"
    # An adapter or quantization that declares nothing simply carries its parents' terms; only an
    # artifact with nothing to inherit is "unknown" for want of its own license.
    if own == "unknown" and any(s.via == "weights" for s in inherited):
        return _dedupe(inherited)
    return _dedupe([Source(rec.name, rec.digest, own, "self"), *inherited])


def _walk(store: Store, digest: str, via: str, path: list[str], seen: set[str], out: list[Source]) -> None:
    up, _ = store.edges_of(digest)
    for edge in up:
        if edge.relation in WEIGHT_EDGES:
            reach = via  # a weight derivative of data-derived weights is still data-derived
        elif edge.relation in DATA_EDGES:
            reach = "data"
        elif edge.relation in OUTPUT_EDGES:
            reach = "outputs"
        else:
            continue
        hop = [*path, edge.relation]
        if edge.parent is None:  # dangling: named on import but never stored
            out.append(Source(edge.parent_ref or "an unresolved parent", None, "unknown", reach, hop))
            continue
        if edge.parent in seen:
            raise Corrupt(
                f"lineage of {store.label(edge.parent)} loops back on itself through {edge.relation}; "
                "the catalog is inconsistent: run `owl verify --all` and remove the looping artifact"
            )
        parent = store.get(edge.parent)
        out.append(Source(parent.name, parent.digest, parent.manifest.license or "unknown", reach, hop))
        _walk(store, parent.digest, reach, hop, seen | {parent.digest}, out)


def _dedupe(sources: list[Source]) -> list[Source]:
    """One source per (declarer, route): a diamond (a merge of a base and its adapter) reaches the base
    twice; the shortest path is kept."""
    best: dict[tuple[str | None, str, str], Source] = {}
    for s in sources:
        key = (s.digest or s.artifact, s.via, s.license)
        if key not in best or len(s.path) < len(best[key].path):
            best[key] = s
    return list(best.values())


def _alternatives(expression: str) -> list[list[str]] | None:
    """An SPDX expression as alternatives of licenses that all apply ("A OR (B AND C)" -> [[A], [B, C]]);
    None when it does not parse."""
    from license_expression import ExpressionError

    from owlkit.formats.license import spdx_licensing

    try:
        parsed = spdx_licensing().parse(expression, validate=False)
    except ExpressionError:
        return None
    if parsed is None:
        return None
    dnf = spdx_licensing().dnf(parsed)
    if getattr(dnf, "operator", None) == " OR ":
        return [[str(s) for s in alt.symbols] for alt in dnf.args]
    return [[str(s) for s in dnf.symbols]]


def _cite(clause: Clause | None) -> str | None:
    if clause is None or not clause.source_url:
        return None
    return f"{clause.source_url} {clause.source_section or ''}".strip()


def _step(
    src: Source, lic_id: str, clause_name: str | None, clause: Clause | None, status: str, reason: str
) -> Step:
    return Step(
        artifact=src.artifact,
        via=src.route,
        license=lic_id,
        clause=clause_name,
        value=str(clause.value) if clause is not None else None,
        verified=bool(clause is not None and clause.verified),
        status=status,
        reason=reason,
        source=_cite(clause),
    )


_VALUE_STATUS = {"yes": ALLOWED, "allowed": ALLOWED, "no": FORBIDDEN, "forbidden": FORBIDDEN,
                 "conditional": OBLIGATIONS, "unknown": UNKNOWN}  # fmt: skip
_USE_CLAUSE = {
    "commercial": "commercial_use",
    "internal": "commercial_use",
    "redistribute-weights": "redistribution",
    "serve-api": "hosted_service",
    "train-other-model": "outputs_training",
}


def _judge_license(src: Source, lic: License, use: str, monthly_users: int | None) -> tuple[Step, list[str]]:
    """One license's answer for ``use`` as it reaches the artifact through ``src``, and its duties."""
    duties: list[str] = []
    if src.via == "outputs":  # a teacher's terms bind what its outputs may train, nothing else
        c = lic.clauses["outputs_training"]
        status = _VALUE_STATUS.get(c.value, UNKNOWN)
        if use != "train-other-model" and status == FORBIDDEN:
            duties.append(
                f"{lic.id}: models trained on these outputs must not compete with its provider ({src.artifact})"
            )
            return _step(src, lic.id, "outputs_training", c, OBLIGATIONS, "trained on outputs whose terms restrict "
                         "competing models; the model itself may be used"), duties  # fmt: skip
        return _step(
            src, lic.id, "outputs_training", c, status, "the teacher's terms on training with its outputs"
        ), duties
    if use == "research":
        c = lic.clauses["commercial_use"]
        status = ALLOWED
        step = _step(
            src, lic.id, "commercial_use", c, status, "research use is granted by every license known here"
        )
    else:
        name = _USE_CLAUSE[use]
        c = lic.clauses[name]
        status = _VALUE_STATUS.get(c.value, UNKNOWN)
        reason = f"{name.replace('_', ' ')}: {c.value}"
        if use == "internal" and lic.family == "research-only":
            status, reason = FORBIDDEN, "research-only terms exclude in-company use"
        threshold = c.mau_threshold
        if use == "commercial" and status == OBLIGATIONS and threshold:
            if monthly_users is not None and monthly_users > threshold:
                status = FORBIDDEN
                reason = (f"above {threshold:,} monthly active users a separate license from the licensor is "
                          f"needed ({monthly_users:,} given)")  # fmt: skip
            else:
                duties.append(
                    f"{lic.id}: stay at or below {threshold:,} monthly active users, or request a license"
                )
                status = ALLOWED if monthly_users is not None else OBLIGATIONS
        elif status == OBLIGATIONS and c.note:
            duties.append(f"{lic.id}: {c.note}")
        if src.via == "data" and status == FORBIDDEN and use != "train-other-model":
            reason += (
                " (trained on this data: the conservative reading carries the data's terms to the model)"
            )
        step = _step(src, lic.id, name, c, status, reason)
    if status in (ALLOWED, OBLIGATIONS):
        duties += _duties(lic, use, src)
    return step, duties


def _duties(lic: License, use: str, src: Source) -> list[str]:
    """What a license asks of someone who uses (or, for distributing uses, passes on) what it covers."""
    out = []
    restrict = lic.clauses["use_restrictions"]
    if restrict.value == "yes":
        policy = restrict.policy_url
        out.append(f"{lic.id}: comply with its use restrictions" + (f" ({policy})" if policy else ""))
        if use in DISTRIBUTING and restrict.pass_down:
            out.append(
                f"{lic.id}: pass the use restrictions down as an enforceable provision to every recipient"
            )
    if use not in DISTRIBUTING:
        return out
    attr = lic.clauses["attribution"]
    if attr.value == "yes":
        text = attr.notice_text
        out.append(f"{lic.id}: attribution" + (f': include "{text}"' if text else " and license notices"))
        if attr.notice_file:
            out.append(f"{lic.id}: ship a copy of the license (and any NOTICE file) with the weights")
    naming = lic.clauses["naming"]
    if naming.value in ("prefix", "built-with") and src.via != "data":
        text = naming.text
        what = "begin derived model names with" if naming.value == "prefix" else "display"
        out.append(f'{lic.id}: {what} "{text}"' if text else f"{lic.id}: naming duty ({naming.value})")
        if naming.display_text:
            out.append(f'{lic.id}: products built with it display "{naming.display_text}"')
    share = lic.clauses["share_alike"]
    if share.value == "yes":
        out.append(f"{lic.id}: release derivatives under the same license")
    return out


def _judge_source(src: Source, use: str, monthly_users: int | None) -> tuple[list[Step], list[str]]:
    from owlkit.errors import NotFound
    from owlkit.terms.kb import find_license

    if src.license in ("unknown", "", None):
        return [_step(src, "unknown", None, None, UNKNOWN, "no license was found; an unknown license is never "
                      "assumed to allow anything")], []  # fmt: skip
    alternatives = _alternatives(src.license)
    if alternatives is None:
        return [
            _step(src, src.license, None, None, UNKNOWN, f"license expression {src.license!r} does not parse")
        ], []
    best: tuple[list[Step], list[str]] | None = None
    for ids in alternatives:  # OR: the user may pick the most permissive alternative
        steps, duties = [], []
        for lic_id in ids:  # AND: every license applies
            try:
                lic = find_license(lic_id)
            except NotFound:
                steps.append(_step(src, lic_id, None, None, UNKNOWN, f"{lic_id} is not in owlkit's license "
                                   "knowledge base (`owl licenses` lists it)"))  # fmt: skip
                continue
            step, more = _judge_license(src, lic, use, monthly_users)
            steps.append(step)
            duties += more
        if best is None or _worst(steps) < _worst(best[0]):
            best = (steps, duties)
    assert best is not None
    return best


def _worst(steps: list[Step]) -> int:
    return max((_RANK[s.status] for s in steps), default=0)


def verdict(
    store: Store,
    rec: Record,
    use: str,
    *,
    monthly_users: int | None = None,
    extra: list[Source] | None = None,
) -> UseVerdict:
    """Whether ``rec`` may be used for ``use``: the worst answer over every license that binds it.
    ``extra`` adds hypothetical sources (``owl terms --if-trained-on``)."""
    from owlkit.errors import UsageError

    if use not in USES:
        raise UsageError(f"--use {use!r} is not a use owlkit judges: choose one of {', '.join(USES)}")
    sources = _dedupe(lineage_sources(store, rec) + list(extra or []))
    chain: list[Step] = []
    duties: list[str] = []
    for src in sources:
        steps, more = _judge_source(src, use, monthly_users)
        chain += steps
        duties += [d for d in more if d not in duties]
    rank = _worst(chain)
    status = next(s for s, r in _RANK.items() if r == rank)
    if status == ALLOWED and duties:
        status = OBLIGATIONS
    if status in (FORBIDDEN, UNKNOWN):
        duties = []
    return UseVerdict(use, status, chain, duties, conflicts(sources))


def conflicts(sources: list[Source]) -> list[str]:
    """Declared licenses more permissive than inherited terms: the artifact allows commercial use while
    something it inherits forbids it."""
    own = [s for s in sources if s.via == "self"]
    if not own or own[0].license == "unknown":
        return []
    own_steps, _ = _judge_source(own[0], "commercial", None)
    if _worst(own_steps) >= _RANK[UNKNOWN]:
        return []
    out = []
    for s in sources:
        if s.via == "self":
            continue
        steps, _ = _judge_source(s, "commercial", None)
        if any(st.status == FORBIDDEN for st in steps):
            out.append(
                f"{own[0].artifact} declares {own[0].license}, which allows commercial use, but inherits "
                f"{s.license} from {s.artifact} via {' > '.join(s.path) or s.via}, which forbids it"
            )
    return out


def hypothetical_data(store: Store, data: Record) -> Source:
    """The source a model tuned on ``data`` would inherit (``owl terms --if-trained-on``)."""
    return Source(
        data.name, data.digest, data.manifest.license or "unknown", "data", ["trained_on (planned)"]
    )

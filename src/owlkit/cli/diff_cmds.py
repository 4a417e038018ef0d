"""`owl diff A B`: what differs between two stored artifacts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from owlkit.cli.render import console, human_size, print_json, progress_bars
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import DiffReport
    from owlkit.api.recipe_results import KeyDiff, LineageSection, RecipeSection, TensorSection

# Rows shown per table; --json has them all.
MAX_ROWS = 40


def register(app: typer.Typer) -> None:
    app.command("diff")(diff_cmd)


def diff_cmd(
    a: Annotated[str, typer.Argument(help="Artifact A: NAME[:TAG] or digest prefix.")],
    b: Annotated[str, typer.Argument(help="Artifact B: NAME[:TAG] or digest prefix.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")] = False,
) -> None:
    """Show what differs between artifacts A and B: files, tensors (shape, dtype, max and mean abs
    difference, per layer), config and card metadata, facts, license, recipe and lineage.

    A report, not a check: exits 0 whether or not they differ.

    Example: owl diff tiny-llama-q8-0 tiny-llama-q4-0
    """
    with progress_bars(enabled=not as_json) as progress:
        report = owl().diff(a, b, progress=progress)
    if as_json:
        print_json(report.to_dict())
        return
    _render(report)


def _value(v: Any, width: int = 72) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _shape(s: list[int] | None) -> str:
    return "-" if s is None else "[" + ", ".join(map(str, s)) + "]"


def _pair(x: str, y: str) -> str:
    return x if x == y else f"{x} / {y}"


def _print_rows(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    if title:
        console.print(f"\n[bold]{escape(title)}[/bold]")
    t = Table(box=None, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows[:MAX_ROWS]:
        t.add_row(*(escape(c) for c in r))
    console.print(t)
    if len(rows) > MAX_ROWS:
        console.print(f"… {len(rows) - MAX_ROWS} more (see --json)")


def _key_rows(kd: KeyDiff, label: Any = _value) -> list[list[str]]:
    rows = [[k, "changed", label(c["a"]), label(c["b"])] for k, c in kd.changed.items()]
    rows += [[k, "only in A", label(v), "-"] for k, v in kd.removed.items()]
    rows += [[k, "only in B", "-", label(v)] for k, v in kd.added.items()]
    return rows


def _render(r: DiffReport) -> None:
    from rich.markup import escape

    for side, s in (("A", r.a), ("B", r.b)):
        console.print(f"[bold]{side}[/bold]  {escape(s.name)}  {s.digest[7:19]}  {s.kind} ({s.format})")
    if r.identical:
        console.print(f"A and B are the same artifact ({r.a.digest[:19]}): nothing differs")
        return

    files = r.files
    console.print(
        f"\n[bold]files[/bold]: {len(files.changed)} changed, {len(files.added)} only in B, "
        f"{len(files.removed)} only in A, {files.same} same"
    )
    rows = [[f.path, "changed", human_size(f.size_a), human_size(f.size_b)] for f in files.changed]
    rows += [[f.path, "only in A", human_size(f.size), "-"] for f in files.removed]
    rows += [[f.path, "only in B", "-", human_size(f.size)] for f in files.added]
    if rows:
        _print_rows("", ["PATH", "STATUS", "SIZE A", "SIZE B"], rows)

    _render_tensors(r.tensors)
    for rel, kd in r.configs.items():
        _print_rows(rel, ["KEY", "STATUS", "A", "B"], _key_rows(kd))
    if r.card is not None and _key_rows(r.card):
        _print_rows("card metadata (README.md)", ["KEY", "STATUS", "A", "B"], _key_rows(r.card))
    meta_rows = _key_rows(r.manifest) + _key_rows(r.facts)
    if meta_rows:
        _print_rows("manifest and facts", ["KEY", "STATUS", "A", "B"], meta_rows)
    _render_recipe(r.recipe)
    _render_lineage(r.lineage)
    for note in r.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def _render_tensors(t: TensorSection) -> None:
    from rich.markup import escape

    for p in t.pairs:
        pair = f"{', '.join(p.a)} vs {', '.join(p.b)}"
        console.print(f"\n[bold]tensors[/bold] ({p.format}: {escape(pair)})")
    if not t.pairs:
        return
    console.print(f"{t.compared} compared, {t.same} same, {len(t.differing)} differ")
    if not t.differing:
        return
    rows = [
        [
            d.name,
            _pair(_shape(d.shape_a), _shape(d.shape_b)),
            _pair(d.dtype_a or "-", d.dtype_b or "-"),
            _num(d.max_abs),
            _num(d.mean_abs),
            d.note,
        ]
        for d in t.differing
    ]
    _print_rows("", ["TENSOR", "SHAPE (A / B)", "DTYPE (A / B)", "MAX ABS", "MEAN ABS", "NOTE"], rows)
    layers = [[str(x.layer), str(x.tensors), str(x.differing), _num(x.max_abs)] for x in t.layers]
    if layers:
        _print_rows("per layer", ["LAYER", "TENSORS", "DIFFER", "MAX ABS"], layers)


def _render_recipe(rec: RecipeSection) -> None:
    if not rec.a and not rec.b:
        return
    if not rec.a or not rec.b:
        side = "A" if not rec.a else "B"
        console.print(f"\n[bold]recipe[/bold]: {side} has none (imported, not derived)")
        return
    if rec.empty:
        console.print("\n[bold]recipe[/bold]: same")
        return

    def label(v: Any) -> str:  # input digests read better as names
        return rec.labels[v] if isinstance(v, str) and v in rec.labels else _value(v)

    _print_rows("recipe", ["KEY", "STATUS", "A", "B"], _key_rows(rec, label))


def _render_lineage(lin: LineageSection) -> None:
    from rich.markup import escape

    for line in lin.direct:
        console.print(f"\n[bold]lineage[/bold]: {line}")
    rows = [[p.relation, p.name or "?", "only A"] for p in lin.only_a]
    rows += [[p.relation, p.name or "?", "only B"] for p in lin.only_b]
    rows += [[p.relation, p.name or "?", "both"] for p in lin.same]
    if lin.only_a or lin.only_b:
        _print_rows("parents", ["RELATION", "PARENT", "OF"], rows)
    elif lin.same:
        same = ", ".join(f"{p.relation} {p.name or '?'}" for p in lin.same)
        console.print(f"\n[bold]parents[/bold]: same ({escape(same)})")

"""`owl licenses`: the license knowledge base, one line per license or every clause of one.
`owl terms`: what an artifact may be used for, through its lineage, with the chain and obligations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from owlkit.cli.render import console, err_console, print_columns, print_json

if TYPE_CHECKING:
    from owlkit.terms.kb import Clause, License


def register(app: typer.Typer) -> None:
    app.command("licenses")(licenses_cmd)
    app.command("terms")(terms_cmd)


def licenses_cmd(
    license_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[LICENSE]",
            help="A license id, alias or Hugging Face tag (llama3.1, Apache-2.0); omit to list all.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List the licenses owlkit knows, or show one with every clause and the text it comes from.

    Clauses nobody has checked against the license text are marked (unverified).

    Example: owl licenses llama3.1
    """
    from owlkit.terms.kb import find_license, load_kb

    if license_id is None:
        licenses = sorted(load_kb().values(), key=lambda lic: lic.id.lower())
        if as_json:
            print_json([_summary(lic) for lic in licenses])
            return
        rows = [
            [lic.id, lic.name, lic.family, _commercial(lic), f"{lic.verified_count}/{len(lic.clauses)}"]
            for lic in licenses
        ]
        print_columns(["ID", "NAME", "FAMILY", "COMMERCIAL USE", "VERIFIED"], rows)
        return
    lic = find_license(license_id)
    if as_json:
        print_json(lic.to_dict())
        return
    _print_license(lic)


def _summary(lic: License) -> dict:
    commercial = lic.clauses["commercial_use"]
    return {
        "id": lic.id,
        "name": lic.name,
        "family": lic.family,
        "osi_approved": lic.osi_approved,
        "commercial_use": commercial.value,
        "mau_threshold": commercial.mau_threshold,
        "verified_clauses": lic.verified_count,
        "clause_count": len(lic.clauses),
    }


def _millions(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def _commercial(lic: License) -> str:
    clause = lic.clauses["commercial_use"]
    text = clause.value
    if clause.mau_threshold:
        text += f" (>{_millions(clause.mau_threshold)} MAU)"
    return text if clause.verified else text + " (unverified)"


def _details(clause: Clause) -> list[str]:
    """The clause's extra fields as readable lines (only those set)."""
    out = []
    if clause.mau_threshold is not None:
        out.append(f"above {clause.mau_threshold:,} monthly active users a separate license is needed")
    if clause.notice_text:
        out.append(f'notice: "{clause.notice_text}"')
    if clause.notice_file:
        out.append("a NOTICE file or the license text must travel with copies")
    if clause.text:
        out.append(f'required text: "{clause.text}"')
    if clause.pass_down:
        out.append("the restrictions must be passed on to downstream users")
    if clause.policy_url:
        out.append(f"policy: {clause.policy_url}")
    return out


def _print_license(lic: License) -> None:
    from rich.markup import escape

    def line(text: str, style: str = "") -> None:
        console.print(f"[{style}]{escape(text)}[/{style}]" if style else escape(text), soft_wrap=True)

    line(f"{lic.id}  {lic.name}", "bold")
    line(f"url: {lic.url}")
    line(
        f"family: {lic.family}   OSI approved: {'yes' if lic.osi_approved else 'no'}"
        f"   version: {lic.version_date or '-'}"
    )
    if lic.aliases:
        line(f"aliases: {', '.join(lic.aliases)}")
    line(f"clauses ({lic.verified_count}/{len(lic.clauses)} verified):")
    width = max(len(name) for name in lic.clauses)
    for name, clause in lic.clauses.items():
        mark = "" if clause.verified else "  (unverified)"
        console.print(
            f"  {escape(name.ljust(width))}  [bold]{escape(clause.value)}[/bold]"
            + (f"[yellow]{escape(mark)}[/yellow]" if mark else ""),
            soft_wrap=True,
        )
        pad = " " * (width + 4)
        for detail in _details(clause):
            line(pad + detail)
        if clause.note:
            line(pad + " ".join(clause.note.split()))
        if clause.source_url or clause.source_section:
            where = " ".join(p for p in (clause.source_section, clause.source_url) if p)
            line(pad + f"source: {where}", "dim")


def terms_cmd(
    ref: Annotated[str, typer.Argument(help="Model, adapter or dataset: NAME[:TAG] or digest prefix.")],
    use: Annotated[
        str | None,
        typer.Option(
            "--use", help="commercial|research|internal|redistribute-weights|serve-api|train-other-model."
        ),
    ] = None,
    monthly_users: Annotated[
        int | None, typer.Option("--monthly-users", min=0, help="Monthly active users of the product.")
    ] = None,
    if_trained_on: Annotated[
        str | None,
        typer.Option("--if-trained-on", help="Answer for REF tuned on this dataset (not trained yet)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """May this artifact be used so? The verdict, the chain of licenses and clauses behind it, and the
    obligations. Exit 0 allowed, 10 allowed with obligations, 11 forbidden, 12 unknown.

    Example: owl terms demo-merged --use commercial
    """
    from owlkit.store import open_store
    from owlkit.terms.propagate import USES, hypothetical_data, lineage_sources, verdict

    store = open_store()
    rec = store.find(ref)
    extra = [hypothetical_data(store, store.find(if_trained_on))] if if_trained_on else []
    uses = [use] if use else list(USES)
    verdicts = [verdict(store, rec, u, monthly_users=monthly_users, extra=extra) for u in uses]
    if as_json:
        sources = lineage_sources(store, rec)
        print_json(
            {
                "artifact": rec.name,
                "digest": rec.digest,
                "if_trained_on": if_trained_on,
                "sources": [vars(s) for s in sources],
                "verdicts": [v.to_dict() for v in verdicts],
            }
        )
    else:
        if not use:  # the profile: every license that binds the artifact, then every use's verdict
            _render_sources(lineage_sources(store, rec) + extra)
        _render_verdicts(rec.name, verdicts, if_trained_on)
    if use:
        raise typer.Exit(verdicts[0].exit_code)


_COLOURS = {
    "allowed": "green",
    "allowed with obligations": "yellow",
    "forbidden": "red",
    "unknown": "magenta",
}


def _render_sources(sources: list[Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    from owlkit.errors import NotFound
    from owlkit.terms.kb import find_license

    table = Table(title="licenses that bind it", header_style="bold")
    for col in ("artifact", "via", "license", "family", "commercial use"):
        table.add_column(col)
    for s in sources:
        try:
            lic = find_license(s.license)
            family, commercial = lic.family, _commercial(lic)
        except NotFound:
            family, commercial = "-", "-"  # an expression or a license outside the knowledge base
        table.add_row(escape(s.artifact), escape(s.route), escape(s.license), family, commercial)
    console.print(table)


def _render_verdicts(name: str, verdicts: list[Any], if_trained_on: str | None) -> None:
    from rich.markup import escape
    from rich.table import Table

    what = f"{name}" + (f" if trained on {if_trained_on}" if if_trained_on else "")
    for v in verdicts:
        colour = _COLOURS[v.status]
        console.print(
            f"[bold]{escape(what)}[/bold] for [bold]{v.use}[/bold]: [{colour}]{v.status}[/{colour}]"
        )
        if len(verdicts) == 1:
            table = Table(header_style="bold", show_lines=False)
            for col in ("artifact", "via", "license", "clause", "value", "verified", "says"):
                table.add_column(col)
            for s in v.chain:
                table.add_row(
                    escape(s.artifact), escape(s.via), escape(s.license), s.clause or "-", s.value or "-",
                    "yes" if s.verified else "[magenta]no[/magenta]", escape(s.reason),
                )  # fmt: skip
            console.print(table)
        for o in v.obligations if len(verdicts) == 1 else []:
            console.print(f"  obligation: {escape(o)}")
    for c in verdicts[0].conflicts:
        err_console.print(f"[yellow]conflict:[/yellow] {escape(c)}")

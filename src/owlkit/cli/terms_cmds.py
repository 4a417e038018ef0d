"""`owl licenses`: the license knowledge base, one line per license or every clause of one.
`owl terms`: what an artifact may be used for, through its lineage, with the chain and obligations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.render import console, err_console, print_columns, print_json
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import LicenseDetail, LicenseSummary, Verdict
    from owlkit.api.terms_results import Clause, Source


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
    if license_id is None:
        licenses = owl().licenses()
        if as_json:
            print_json([lic.to_dict() for lic in licenses])
            return
        rows = [
            [lic.id, lic.name, lic.family, _commercial(lic), f"{lic.verified_clauses}/{lic.clause_count}"]
            for lic in licenses
        ]
        print_columns(["ID", "NAME", "FAMILY", "COMMERCIAL USE", "VERIFIED"], rows)
        return
    lic = owl().licenses(license_id)
    if as_json:
        print_json(lic.to_dict())
        return
    _print_license(lic)


def _millions(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n:,}"


def _commercial(lic: LicenseSummary) -> str:
    text = lic.commercial_use
    if lic.mau_threshold:
        text += f" (>{_millions(lic.mau_threshold)} MAU)"
    return text if lic.commercial_use_verified else text + " (unverified)"


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


def _print_license(lic: LicenseDetail) -> None:
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
    res = owl().terms(ref, use=use, monthly_users=monthly_users, if_trained_on=if_trained_on)
    if as_json:
        print_json(res.to_dict())
    else:
        if not use:  # the profile: every license that binds the artifact, then every use's verdict
            _render_sources(res.sources + ([res.planned] if res.planned else []), res.licenses)
        _render_verdicts(res)
    if use:
        raise typer.Exit(res.exit_code)


_COLOURS = {
    "allowed": "green",
    "allowed with obligations": "yellow",
    "forbidden": "red",
    "unknown": "magenta",
}


def _render_sources(sources: list[Source], licenses: dict[str, LicenseSummary]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="licenses that bind it", header_style="bold")
    for col in ("artifact", "via", "license", "family", "commercial use"):
        table.add_column(col)
    for s in sources:
        lic = licenses.get(s.license)  # none for an expression or a license outside the knowledge base
        family, commercial = (lic.family, _commercial(lic)) if lic else ("-", "-")
        table.add_row(escape(s.artifact), escape(s.route), escape(s.license), family, commercial)
    console.print(table)


def _render_verdicts(res: Verdict) -> None:
    from rich.markup import escape
    from rich.table import Table

    verdicts = res.verdicts
    what = res.artifact + (f" if trained on {res.if_trained_on}" if res.if_trained_on else "")
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
    for c in res.conflicts:
        err_console.print(f"[yellow]conflict:[/yellow] {escape(c)}")

"""Openness commands: openness (MOF class, OSAID verdict, four layers) and attach (components kept elsewhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.render import console, err_console, print_json
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import OpennessReport

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("openness")(openness_cmd)
    app.command("attach")(attach_cmd)


def openness_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:TAG] or digest prefix of a model or adapter.")],
    as_json: JsonOpt = False,
) -> None:
    """Rate a model's openness: the Model Openness Framework's 17 components and class, and OSAID 1.0.

    Each component is found by one rule (files, card sections, lineage, recorded recipe) or by an
    `owl attach` record; the table shows which matched and whether its license is open.

    Example: owl openness smollm2
    """
    report = owl().openness(ref)
    if as_json:
        print_json(report.to_dict())
        return
    _render(report)


def attach_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:TAG] or digest prefix.")],
    component: Annotated[
        str, typer.Option("--component", "-c", help='An MOF component, e.g. "Training code" (any case).')
    ],
    url: Annotated[str | None, typer.Option("--url", help="Where the component lives.")] = None,
    license_: Annotated[
        str | None, typer.Option("--license", help="Its license: an SPDX id such as Apache-2.0.")
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove this component's attachment.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Record a component that lives elsewhere (a paper, a code repository, a dataset) and its license.

    Kept beside the artifact: its digest does not change. Attaching again replaces the record.

    Example: owl attach smollm2 --component "Training code" --url https://github.com/org/repo --license MIT
    """
    from owlkit.errors import UsageError

    if remove:
        if url or license_:
            raise UsageError("--remove takes no --url or --license")
        gone = owl().detach(ref, component)
        if as_json:
            print_json(gone.to_dict())
        else:
            console.print(f"removed the {gone.component} attachment from {gone.name}")
        return
    if url is None:
        raise UsageError("give --url URL (where the component lives), or --remove")
    att = owl().attach(ref, component, url=url, license=license_)
    if as_json:
        print_json(att.to_dict())
        return
    for w in att.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    verb = "replaced" if att.replaced else "attached"
    console.print(f"{verb} {att.component} to {att.name} ({att.license}): {att.url}")


_STATUS_STYLE = {
    "included": "green",
    "covered": "green",
    "unlicensed": "yellow",
    "not-open": "red",
    "missing": "red",
    "optional": "dim",
}


def _render(report: OpennessReport) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("COMPONENT", "CLASS", "STATUS", "RULE MATCHED", "LICENSE", "OPEN"):
        table.add_column(col)
    unfit = False
    for f in report.findings:
        c = f.component
        style = _STATUS_STYLE[f.status]
        status = "present" if f.present else ("covered" if f.status == "covered" else "missing")
        if f.match is not None:
            rule = f"{f.match.source}: {f.match.evidence}"
            ok = "yes" if f.license_open else ("unlicensed" if f.status == "unlicensed" else "no")
            if f.license_open and not f.license_fits:
                ok, unfit = "yes*", True
        else:
            rule = f"by {f.covered_by}" if f.covered_by else "-"
            ok = "-"
        name = c.name + ("" if c.required else " (optional)")
        table.add_row(
            escape(name),
            c.mof_class,
            f"[{style}]{status}[/{style}]",
            escape(rule),
            escape(f.license or "-"),
            ok,
        )
    console.print(table)
    for f in report.findings:
        if f.note:
            console.print(f"[yellow]note:[/yellow] {escape(f.component.name)}: {escape(f.note)}")
    if unfit:
        console.print(
            "[dim]* open, but not among MOF's recommended licenses for its content type "
            "(a warning, not a failure)[/dim]"
        )
    console.print(f"\n[bold]MOF class:[/bold] {report.mof_class} ({report.mof_label})")
    for check in report.classes:
        problems = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("missing", check.missing),
                ("unlicensed", check.unlicensed),
                ("not open", check.not_open),
            )
            if names
        ]
        state = "met" if check.met else "not met"
        console.print(
            f"  class {check.mof_class:<3} {state}" + (f": {escape('; '.join(problems))}" if problems else "")
        )
    osaid = report.osaid
    colour = "green" if osaid.meets else "red"
    console.print(f"\n[bold]OSAID 1.0:[/bold] [{colour}]{osaid.verdict}[/{colour}]")
    for reason in osaid.reasons:
        console.print(f"  - {escape(reason)}")
    console.print("\n[bold]layers:[/bold]")
    for layer in report.layers:
        line = f"  {layer.layer:<11} {layer.status:<8} {len(layer.present)}/{layer.total} present"
        extra = []
        if layer.missing:
            extra.append("missing " + ", ".join(layer.missing))
        if layer.problems:
            extra.append(", ".join(layer.problems))
        extra += layer.notes
        console.print(line + (f"; {escape('; '.join(extra))}" if extra else ""))

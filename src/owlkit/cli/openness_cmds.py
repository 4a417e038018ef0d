"""Openness commands: openness (MOF class, OSAID verdict, four layers) and attach (components kept elsewhere)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from owlkit.cli.render import console, err_console, print_json
from owlkit.store import open_store

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
    from owlkit.terms.openness import assess

    store = open_store()
    report = assess(store, store.find(ref))
    if as_json:
        print_json(report.to_json())
        return
    _render(report.to_json())


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
    from owlkit.terms.openness import attach, check_url, detach, find_component

    comp = find_component(component)  # a bad name fails before the store is opened for writing
    if remove:
        if url or license_:
            raise UsageError("--remove takes no --url or --license")
    elif url is None:
        raise UsageError("give --url URL (where the component lives), or --remove")
    else:
        check_url(url)
    store = open_store(write=True)
    rec = store.find(ref)
    if remove:
        gone = detach(store, rec, comp.name)
        if as_json:
            print_json({"digest": rec.digest, "component": comp.name, "removed": gone.to_json()})
        else:
            console.print(f"removed the {comp.name} attachment from {rec.name}")
        return
    att, replaced, warnings = attach(store, rec, comp.name, url or "", license_)
    if as_json:
        print_json(
            {
                "digest": rec.digest,
                "component": comp.name,
                "replaced": replaced,
                "warnings": warnings,
                **att.to_json(),
            }
        )
        return
    for w in warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    verb = "replaced" if replaced else "attached"
    console.print(f"{verb} {comp.name} to {rec.name} ({att.license}): {att.url}")


_STATUS_STYLE = {
    "included": "green",
    "covered": "green",
    "unlicensed": "yellow",
    "not-open": "red",
    "missing": "red",
    "optional": "dim",
}


def _render(info: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for col in ("COMPONENT", "CLASS", "STATUS", "RULE MATCHED", "LICENSE", "OPEN"):
        table.add_column(col)
    unfit = False
    for c in info["components"]:
        style = _STATUS_STYLE[c["status"]]
        status = "present" if c["present"] else ("covered" if c["status"] == "covered" else "missing")
        if c["present"]:
            rule = f"{c['matched']}: {c['evidence']}"
            ok = "yes" if c["license_open"] else ("unlicensed" if c["status"] == "unlicensed" else "no")
            if c["license_open"] and not c["license_fits"]:
                ok, unfit = "yes*", True
        else:
            rule = f"by {c['covered_by']}" if c["covered_by"] else "-"
            ok = "-"
        name = c["name"] + ("" if c["required"] else " (optional)")
        table.add_row(
            escape(name),
            c["class"],
            f"[{style}]{status}[/{style}]",
            escape(rule),
            escape(c["license"] or "-"),
            ok,
        )
    console.print(table)
    for c in info["components"]:
        if c["note"]:
            console.print(f"[yellow]note:[/yellow] {escape(c['name'])}: {escape(c['note'])}")
    if unfit:
        console.print(
            "[dim]* open, but not among MOF's recommended licenses for its content type "
            "(a warning, not a failure)[/dim]"
        )
    mof = info["mof"]
    console.print(f"\n[bold]MOF class:[/bold] {mof['class']} ({mof['label']})")
    for c in mof["classes"]:
        problems = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("missing", c["missing"]),
                ("unlicensed", c["unlicensed"]),
                ("not open", c["not_open"]),
            )
            if names
        ]
        state = "met" if c["met"] else "not met"
        console.print(
            f"  class {c['class']:<3} {state}" + (f": {escape('; '.join(problems))}" if problems else "")
        )
    osaid = info["osaid"]
    colour = "green" if osaid["meets"] else "red"
    console.print(f"\n[bold]OSAID 1.0:[/bold] [{colour}]{osaid['verdict']}[/{colour}]")
    for reason in osaid["reasons"]:
        console.print(f"  - {escape(reason)}")
    console.print("\n[bold]layers:[/bold]")
    for layer in info["layers"]:
        line = f"  {layer['layer']:<11} {layer['status']:<8} {len(layer['present'])}/{layer['total']} present"
        extra = []
        if layer["missing"]:
            extra.append("missing " + ", ".join(layer["missing"]))
        if layer["problems"]:
            extra.append(", ".join(layer["problems"]))
        extra += layer["notes"]
        console.print(line + (f"; {escape('; '.join(extra))}" if extra else ""))

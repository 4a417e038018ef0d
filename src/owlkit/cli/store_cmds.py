"""Store commands: import, ls, show, verify, tag, rm, gc, export, upgrade."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from owlkit.cli.render import (
    console,
    err_console,
    human_count,
    human_size,
    print_columns,
    print_json,
    progress_bars,
)
from owlkit.cli.state import owl

if TYPE_CHECKING:
    from owlkit.api import ArtifactDetail

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer) -> None:
    app.command("import")(import_cmd)
    app.command("ls")(ls_cmd)
    app.command("show")(show_cmd)
    app.command("verify")(verify_cmd)
    app.command("tag")(tag_cmd)
    app.command("rm")(rm_cmd)
    app.command("gc")(gc_cmd)
    app.command("export")(export_cmd)
    app.command("upgrade")(upgrade_cmd)


def import_cmd(
    path: Annotated[
        Path, typer.Argument(help="A model folder, .gguf, .safetensors, PEFT adapter or dataset.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="NAME[:TAG] (default: from the path).")
    ] = None,
    convert_pickle: Annotated[
        bool,
        typer.Option(
            "--convert-pickle", help="Scan a pickle checkpoint, load it weights-only and store safetensors."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a file or folder into the store, validating every file.

    Example: owl import ./SmolLM2-135M-Instruct.Q4_1.gguf --name smollm2
    """
    started = time.perf_counter()
    with progress_bars(enabled=not as_json) as progress:
        res = owl().import_(path, name=name, convert_pickle=convert_pickle, progress=progress)
    if as_json:
        print_json(res.to_dict())
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    for f in res.flags:
        err_console.print(f"[yellow]flag:[/yellow] {f}")
    a = res.artifact
    console.print(
        f"imported [bold]{res.name}[/bold] {a.kind}/{a.format} "
        f"{human_size(a.size)} {a.digest[:19]} in {time.perf_counter() - started:.1f}s"
    )


def ls_cmd(
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="model, adapter, dataset or pipeline.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List stored artifacts, newest last.

    Example: owl ls --kind adapter
    """
    artifacts = owl().ls(kind)
    if as_json:
        print_json([a.to_dict() for a in artifacts])
        return
    if not artifacts:
        console.print("the store is empty: add something with `owl import PATH`")
        return
    rows = [
        [
            ", ".join(a.names) or "<none>",
            a.short,
            a.kind,
            a.format,
            a.architecture or "-",
            human_count(a.parameters),
            a.dtype or "-",
            a.license,
            human_size(a.size),
        ]
        for a in artifacts
    ]
    print_columns(["NAME", "DIGEST", "KIND", "FORMAT", "ARCH", "PARAMS", "DTYPE", "LICENSE", "SIZE"], rows)


def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:TAG] or digest prefix.")],
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Write the training loss curve to this SVG file.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one artifact: facts, license, origin, files, lineage, recipe and training curve.

    Example: owl show smollm2
    """
    info = owl().show(ref)
    if plot:
        _write_plot(info, plot)
    if as_json:
        print_json(info.to_dict())
        return
    _render_show(info)
    _render_training(info)
    _render_quality(info)


def _loss_series(info: ArtifactDetail) -> dict[str, list[tuple[int, float]]]:
    log = (info.training or {}).get("log") or []
    series: dict[str, list[tuple[int, float]]] = {}
    for key in ("loss", "eval_loss"):
        points = [(int(e["step"]), float(e[key])) for e in log if e.get(key) is not None]
        if points:
            series[key] = points
    return series


def _render_training(info: ArtifactDetail) -> None:
    from owlkit.cli.plot import sparkline

    for key, points in _loss_series(info).items():
        values = [v for _, v in points]
        console.print(
            f"{key:<10} {values[0]:.3f} {sparkline(values)} {values[-1]:.3f}  ({len(values)} points)"
        )


def _render_quality(info: ArtifactDetail) -> None:
    """The drift `owl quantize` measured, when this artifact is a quantized variant."""
    if info.quality:
        from owlkit.cli.quantize_cmds import drift_table

        console.print(drift_table([(info.name, (info.quantize or {}).get("export") or {}, info.quality)]))


def _write_plot(info: ArtifactDetail, path: Path) -> None:
    from owlkit.cli.plot import loss_svg
    from owlkit.errors import UsageError

    series = _loss_series(info)
    if not series:
        raise UsageError(f"{info.name} has no training log to plot: --plot is for artifacts made by owl tune")
    loss_svg(series, f"{info.name}: training loss", path)
    err_console.print(f"wrote {path}")


def _render_show(info: ArtifactDetail) -> None:
    from rich.table import Table

    facts = info.facts
    lic = info.license_detail
    origin = info.origin
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows = [
        ("name", ", ".join(info.names) or "<none>"),
        ("digest", info.digest),
        ("kind", f"{info.kind} ({info.format})"),
    ]
    if info.kind in ("model", "adapter"):
        rows += [
            ("architecture", facts.get("architecture") or "-"),
            ("parameters", f"{facts['parameters']:,}" if facts.get("parameters") else "-"),
            ("dtype", facts.get("dtype") or "-"),
            ("quantization", facts.get("quantization") or "none"),
        ]
    rows += [
        ("license", info.license + (f"  (from {lic['source']})" if lic.get("source") else "")),
        ("origin", origin.get("source_path") or origin.get("derived_from") or "-"),
    ]
    if origin.get("repo_id"):
        rows.append(
            ("upstream", origin["repo_id"] + (f"@{origin['revision']}" if origin.get("revision") else ""))
        )
    for key in ("vocab_size", "context_length", "data_format", "rows", "peft_type", "r", "lora_alpha"):
        if facts.get(key) is not None:
            rows.append((key.replace("_", " "), str(facts[key])))
    if facts.get("shapes"):
        rows.append(("shapes", ", ".join(f"{k}={v}" for k, v in sorted(facts["shapes"].items()))))
    if info.base_identity:
        rows.append(("base identity", info.base_identity[:19]))
    rows.append(("size", human_size(info.size)))
    for k, v in rows:
        head.add_row(k, str(v))
    console.print(head)
    for flag in info.flags:
        console.print(f"[yellow]flag:[/yellow] {flag}")
    files = Table(title="files", box=None, header_style="bold", title_justify="left")
    for col in ("PATH", "SIZE", "SHA256"):
        files.add_column(col)
    for f in info.files:
        files.add_row(f.path, human_size(f.size), f.sha256)
    console.print(files)
    if info.parents or info.children:
        lineage = Table(title="lineage", box=None, header_style="bold", title_justify="left")
        for col in ("EDGE", "RELATION", "ARTIFACT"):
            lineage.add_column(col)
        for edge, edges in (("parent", info.parents), ("child", info.children)):
            for e in edges:
                target = e.name or e.unresolved or "?"
                suffix = "  (unresolved: not in the store)" if e.unresolved else ""
                lineage.add_row(edge, e.relation, f"{target}{suffix}")
        console.print(lineage)
    if info.recipe:
        r = info.recipe
        recipe = Table(title=f"recipe: {r['name']}", box=None, header_style="bold", title_justify="left")
        recipe.add_column("PARAMETER")
        recipe.add_column("VALUE")
        for key, value in sorted(r["params"].items()):
            recipe.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
        for role, digest in sorted(r["inputs"].items()):
            recipe.add_row(f"input {role}", digest[:19])
        recipe.add_row("seed", "-" if r["seed"] is None else str(r["seed"]))
        console.print(recipe)


def verify_cmd(
    ref: Annotated[str | None, typer.Argument(help="NAME[:TAG] or digest prefix.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify every artifact.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Re-hash stored files; name every corrupt or missing one and exit non-zero.

    Example: owl verify --all
    """
    from owlkit.errors import Corrupt, UsageError

    if bool(ref) == all_:
        raise UsageError("give one REF or --all")
    with progress_bars(enabled=not as_json) as progress:
        report = owl().verify(None if all_ else ref, progress=progress)
    if as_json:
        print_json(report.to_dict())
    if report.problems:
        if not as_json:
            for p in report.problems:
                err_console.print(f"[red]corrupt:[/red] {p}")
        raise Corrupt(f"{len(report.problems)} file(s) corrupt or missing; re-import the affected artifacts")
    if not as_json:
        console.print(f"ok: {report.verified} artifact(s), {human_size(report.bytes)} verified")


def tag_cmd(
    ref: Annotated[str, typer.Argument(help="Existing NAME[:TAG] or digest prefix.")],
    new: Annotated[str, typer.Argument(help="New NAME[:TAG] to point at it.")],
) -> None:
    """Give an artifact another name (no files move).

    Example: owl tag smollm2 smollm2:q4
    """
    a = owl().tag(ref, new)
    console.print(f"{new} -> {a.digest[:19]}")


def rm_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:TAG] or digest prefix.")],
    force: Annotated[
        bool, typer.Option("--force", help="Remove even if other artifacts derive from it.")
    ] = False,
    untag: Annotated[bool, typer.Option("--untag", help="Only remove this name, keep the artifact.")] = False,
) -> None:
    """Remove an artifact (its files are freed by `owl gc`). Refuses when others depend on it.

    A name that is one of several only removes that name. Example: owl rm old-model
    """
    if untag:
        owl().untag(ref)
        console.print(f"untagged {ref}")
        return
    res = owl().rm(ref, force=force)
    a = res.artifact
    if not res.removed:
        others = ", ".join(res.remaining_names)
        console.print(f"untagged {ref}; the artifact remains as {others} (remove those, or rm {a.short})")
        return
    console.print(f"removed {a.name} ({a.short}); run `owl gc` to free {human_size(a.size)}")


def gc_cmd(as_json: JsonOpt = False) -> None:
    """Delete blobs no artifact references and temp files left by interrupted writers.

    Safe while another import runs. Example: owl gc
    """
    report = owl().gc()
    if as_json:
        print_json(report.to_dict())
        return
    console.print(
        f"removed {report.blobs_removed} blob(s) ({human_size(report.bytes_freed)}), "
        f"{report.temp_removed} temp dir(s), {report.checkouts_removed} checkout(s)"
    )
    if not report.swept:
        err_console.print(
            "[yellow]note:[/yellow] another owl command is writing; unreferenced blobs left for a later gc"
        )


def export_cmd(
    ref: Annotated[str, typer.Argument(help="NAME[:TAG] or digest prefix.")],
    dest: Annotated[Path, typer.Argument(help="A new (or empty) folder.")],
    link: Annotated[
        bool,
        typer.Option(
            "--link", help="Hardlink instead of copying (fast; replace files, never edit them in place)."
        ),
    ] = False,
) -> None:
    """Write an artifact as a folder that transformers / peft / llama.cpp load directly.

    Example: owl export smollm2-hf ./smollm2
    """
    api = owl()
    info = api.show(ref)
    api.export(info, dest, link=link)
    console.print(f"exported {info.name} to {dest} ({len(info.files)} files)")


def upgrade_cmd() -> None:
    """Migrate the catalog to this owlkit's schema.

    Example: owl upgrade
    """
    api = owl()
    console.print(f"catalog at schema {api.upgrade()} ({api.home})")

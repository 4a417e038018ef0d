"""Store commands: import, ls, show, verify, tag, rm, gc, export, upgrade."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from owlkit.cli.render import (
    byte_progress,
    console,
    err_console,
    human_count,
    human_size,
    print_columns,
    print_json,
)
from owlkit.store import open_store
from owlkit.store.store import Record, Store

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
    from owlkit.importer import import_path, plan, total_bytes
    from owlkit.store.names import parse_name

    if name:
        parse_name(name)  # a bad name fails before any work
    started = time.perf_counter()
    ins = plan(path)
    store = open_store(write=True)
    with byte_progress(f"importing {path.name}", total_bytes(ins), enabled=not as_json) as advance:
        res = import_path(
            store, path, name=name, convert_pickle=convert_pickle, progress=advance, inspected=ins
        )
    rec = store.get(res.digest)
    if as_json:
        print_json(
            {"digest": res.digest, "name": res.name, "converted_from": res.converted_from, **_summary(rec)}
        )
        return
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}")
    for f in ins.flags:
        err_console.print(f"[yellow]flag:[/yellow] {f}")
    console.print(
        f"imported [bold]{res.name}[/bold] {rec.manifest.kind}/{rec.manifest.format} "
        f"{human_size(rec.manifest.size)} {res.digest[:19]} in {time.perf_counter() - started:.1f}s"
    )


def _summary(rec: Record) -> dict[str, Any]:
    m = rec.manifest
    return {
        "digest": rec.digest,
        "names": rec.tags,
        "kind": m.kind,
        "format": m.format,
        "architecture": m.facts.get("architecture"),
        "parameters": m.facts.get("parameters"),
        "dtype": m.facts.get("dtype"),
        "quantization": m.facts.get("quantization"),
        "license": m.license,
        "size": m.size,
        "created_at": rec.created_at,
    }


def ls_cmd(
    kind: Annotated[
        str | None, typer.Option("--kind", "-k", help="model, adapter, dataset or pipeline.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List stored artifacts, newest last.

    Example: owl ls --kind adapter
    """
    from owlkit.store.manifest import KINDS

    if kind and kind not in KINDS:
        from owlkit.errors import UsageError

        raise UsageError(f"unknown --kind {kind!r}: choose one of {', '.join(KINDS)}")
    records = open_store().list(kind)
    if as_json:
        print_json([_summary(r) for r in records])
        return
    if not records:
        console.print("the store is empty: add something with `owl import PATH`")
        return
    rows = []
    for r in records:
        f = r.manifest.facts
        rows.append(
            [
                ", ".join(r.tags) or "<none>",
                r.short,
                r.manifest.kind,
                r.manifest.format,
                f.get("architecture") or "-",
                human_count(f.get("parameters")),
                f.get("dtype") or "-",
                r.manifest.license,
                human_size(r.manifest.size),
            ]
        )
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
    store = open_store()
    rec = store.find(ref)
    info = show_info(store, rec)
    if plot:
        _write_plot(rec, plot)
    if as_json:
        print_json(info)
        return
    _render_show(info)
    _render_training(rec)
    _render_quality(rec)


def _loss_series(rec: Record) -> dict[str, list[tuple[int, float]]]:
    log = (rec.side.get("training") or {}).get("log") or []
    series: dict[str, list[tuple[int, float]]] = {}
    for key in ("loss", "eval_loss"):
        points = [(int(e["step"]), float(e[key])) for e in log if e.get(key) is not None]
        if points:
            series[key] = points
    return series


def _render_training(rec: Record) -> None:
    from owlkit.cli.plot import sparkline

    for key, points in _loss_series(rec).items():
        values = [v for _, v in points]
        console.print(
            f"{key:<10} {values[0]:.3f} {sparkline(values)} {values[-1]:.3f}  ({len(values)} points)"
        )


def _render_quality(rec: Record) -> None:
    """The drift `owl quantize` measured, when this artifact is a quantized variant."""
    quality = rec.side.get("quality")
    if quality:
        from owlkit.cli.quantize_cmds import drift_table

        console.print(
            drift_table([(rec.name, (rec.side.get("quantize") or {}).get("export") or {}, quality)])
        )


def _write_plot(rec: Record, path: Path) -> None:
    from owlkit.cli.plot import loss_svg
    from owlkit.errors import UsageError

    series = _loss_series(rec)
    if not series:
        raise UsageError(f"{rec.name} has no training log to plot: --plot is for artifacts made by owl tune")
    loss_svg(series, f"{rec.name}: training loss", path)
    err_console.print(f"wrote {path}")


def show_info(store: Store, rec: Record) -> dict[str, Any]:
    from owlkit.store.lineage import base_identity

    up, down = store.edges_of(rec.digest)
    m = rec.manifest
    info: dict[str, Any] = {
        **_summary(rec),
        "facts": m.facts,
        "license_detail": rec.side.get("license", {}),
        "origin": rec.side.get("origin", {}),
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in m.files],
        "parents": [
            {
                "relation": e.relation,
                "digest": e.parent,
                "name": store.label(e.parent) if e.parent else None,
                "unresolved": e.parent_ref if not e.parent else None,
            }
            for e in up
        ],
        "children": [{"relation": e.relation, "digest": e.child, "name": store.label(e.child)} for e in down],
        "recipe": m.recipe.to_json() if m.recipe else None,
        "flags": rec.side.get("flags", []),
        "warnings": rec.side.get("warnings", []),
    }
    for key in ("quality", "descends_from_quantized"):
        if rec.side.get(key):
            info[key] = rec.side[key]
    if m.kind == "model":
        info["base_identity"] = base_identity(store, rec).digest
    return info


def _render_show(info: dict[str, Any]) -> None:
    from rich.table import Table

    facts = info["facts"]
    lic = info["license_detail"]
    origin = info["origin"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    rows = [
        ("name", ", ".join(info["names"]) or "<none>"),
        ("digest", info["digest"]),
        ("kind", f"{info['kind']} ({info['format']})"),
    ]
    if info["kind"] in ("model", "adapter"):
        rows += [
            ("architecture", facts.get("architecture") or "-"),
            ("parameters", f"{facts['parameters']:,}" if facts.get("parameters") else "-"),
            ("dtype", facts.get("dtype") or "-"),
            ("quantization", facts.get("quantization") or "none"),
        ]
    rows += [
        ("license", info["license"] + (f"  (from {lic['source']})" if lic.get("source") else "")),
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
    if info.get("base_identity"):
        rows.append(("base identity", info["base_identity"][:19]))
    rows.append(("size", human_size(info["size"])))
    for k, v in rows:
        head.add_row(k, str(v))
    console.print(head)
    for flag in info["flags"]:
        console.print(f"[yellow]flag:[/yellow] {flag}")
    files = Table(title="files", box=None, header_style="bold", title_justify="left")
    for col in ("PATH", "SIZE", "SHA256"):
        files.add_column(col)
    for f in info["files"]:
        files.add_row(f["path"], human_size(f["size"]), f["sha256"])
    console.print(files)
    if info["parents"] or info["children"]:
        lineage = Table(title="lineage", box=None, header_style="bold", title_justify="left")
        for col in ("EDGE", "RELATION", "ARTIFACT"):
            lineage.add_column(col)
        for edge, edges in (("parent", info["parents"]), ("child", info["children"])):
            for e in edges:
                target = e.get("name") or e.get("unresolved") or "?"
                suffix = "  (unresolved: not in the store)" if e.get("unresolved") else ""
                lineage.add_row(edge, e["relation"], f"{target}{suffix}")
        console.print(lineage)
    if info["recipe"]:
        r = info["recipe"]
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
    store = open_store()
    records = store.list() if all_ else [store.find(ref or "")]
    blobs = {f.sha256: f.size for r in records for f in r.manifest.files}
    total = sum(r.manifest.size for r in records)
    problems: list[str] = []
    seen: dict[str, str | None] = {}
    with byte_progress("verifying", sum(blobs.values()), enabled=not as_json) as advance:
        for r in records:
            problems += store.verify(r.digest, seen, advance)
    digests = [r.digest for r in records]
    if as_json:
        print_json({"verified": len(digests), "bytes": total, "problems": problems})
    if problems:
        if not as_json:
            for p in problems:
                err_console.print(f"[red]corrupt:[/red] {p}")
        raise Corrupt(f"{len(problems)} file(s) corrupt or missing; re-import the affected artifacts")
    if not as_json:
        console.print(f"ok: {len(digests)} artifact(s), {human_size(total)} verified")


def tag_cmd(
    ref: Annotated[str, typer.Argument(help="Existing NAME[:TAG] or digest prefix.")],
    new: Annotated[str, typer.Argument(help="New NAME[:TAG] to point at it.")],
) -> None:
    """Give an artifact another name (no files move).

    Example: owl tag smollm2 smollm2:q4
    """
    digest = open_store(write=True).tag(ref, new)
    console.print(f"{new} -> {digest[:19]}")


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
    store = open_store(write=True)
    if untag:
        store.untag(ref)
        console.print(f"untagged {ref}")
        return
    rec, removed = store.remove(ref, force=force)
    if not removed:
        others = ", ".join(t for t in rec.tags if t != store_name(ref))
        console.print(f"untagged {ref}; the artifact remains as {others} (remove those, or rm {rec.short})")
        return
    console.print(f"removed {rec.name} ({rec.short}); run `owl gc` to free {human_size(rec.manifest.size)}")


def store_name(ref: str) -> str:
    from owlkit.store.names import format_name, parse_name

    return format_name(*parse_name(ref))


def gc_cmd(as_json: JsonOpt = False) -> None:
    """Delete blobs no artifact references and temp files left by interrupted writers.

    Safe while another import runs. Example: owl gc
    """
    report = open_store(write=True).gc()
    if as_json:
        print_json(vars(report))
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
    store = open_store()
    rec = store.find(ref)
    store.export(rec.digest, dest, link=link)
    console.print(f"exported {rec.name} to {dest} ({len(rec.manifest.files)} files)")


def upgrade_cmd() -> None:
    """Migrate the catalog to this owlkit's schema.

    Example: owl upgrade
    """
    from owlkit.store import catalog

    store = open_store(write=True)  # opening for write applies migrations
    console.print(f"catalog at schema {catalog.SCHEMA_HEAD} ({store.home})")

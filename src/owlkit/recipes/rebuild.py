"""`owl rebuild`: re-derive an artifact from its recorded recipe and prove the result bit-identical.

Every derived artifact's manifest holds its recipe (name, params, input digests, seed); its side record
holds what bit-identity depends on besides (library versions, Python, CPU model and SIMD flags, thread
count, deterministic-algorithm setting, and for a tune the logged step count). A rebuild:

1. refuses an artifact without a recipe (imported, not derived), a recipe from a newer owlkit (its
   schema), and a recipe it does not know; names inputs missing from the store with where they came
   from; re-hashes the inputs' files (a changed input is named, file by file) and the artifact's own;
2. runs the recipe again (``recipes/registry.py``) in a fresh child process
   (``python -m owlkit.recipes.rebuild``) pinned to the recorded thread count, in a fresh work
   directory, with the output captured instead of stored (``capture`` of
   :func:`owlkit.recipes.store_output`);
3. compares the rebuilt files with the stored ones by sha256 and, for the first weights file that
   differs, names the first differing tensor and its max abs difference; compares the step count;
4. lists the environment facts that differ from the recorded run. When some do, a difference is
   reported as explained by the environment rather than blamed on the recipe.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.errors import Corrupt, NotFound, OwlError, Refused
from owlkit.recipes import read_captured, store_captured
from owlkit.store.manifest import RECIPE_SCHEMA, Manifest, Recipe
from owlkit.store.names import default_name

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store

IDENTICAL, DIFFERENT_ENV, DIFFERENT = "identical", "different (environment differs)", "different"
EXIT_CODES = {IDENTICAL: 0, DIFFERENT_ENV: 10, DIFFERENT: 11}


@dataclass
class FirstDifference:
    """The first file that did not reproduce (``status``: differs, missing or extra) and, for a weights
    file, its first differing tensor with the max abs difference (None otherwise)."""

    file: str
    status: str
    tensor: str | None = None
    max_abs: float | None = None
    note: str | None = None


@dataclass
class RebuildReport:
    """What a rebuild found. ``files``: path -> same | differs | missing | extra; ``stored_problems``:
    the artifact's own files failing their hash; ``environment``: recorded vs now, one line per fact
    that differs; ``steps``: a tune's recorded and rebuilt step counts; ``kept``: the digest of the
    rebuilt artifact when ``--keep`` stored it."""

    ref: str
    digest: str
    recipe: str
    verdict: str = IDENTICAL
    files: dict[str, str] = field(default_factory=dict)
    first_difference: FirstDifference | None = None
    stored_problems: list[str] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    steps: dict[str, int | None] | None = None
    rebuilt_digest: str | None = None
    kept: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def identical(self) -> bool:
        return self.verdict == IDENTICAL

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def check_rebuildable(store: Store, rec: Record, hashed: dict[str, str | None] | None = None) -> Recipe:
    """The artifact's recipe, or a one-line refusal saying why it cannot be rebuilt. ``hashed`` carries
    blob hash results across calls (Store.verify's ``seen``), so a blob shared by inputs is read once."""
    recipe = rec.manifest.recipe
    if recipe is None:
        origin = rec.info.origin
        where = origin.source_path or origin.repo_id or "outside owlkit"
        raise Refused(
            f"{rec.name} was imported ({where}), not derived by a recipe: there is nothing to rebuild"
        )
    if recipe.schema > RECIPE_SCHEMA:
        made_by = rec.info.libraries.get("owlkit", "a newer version")
        raise Refused(
            f"{rec.name}'s recipe has schema {recipe.schema}, written by owlkit {made_by}; this owlkit reads "
            f"schema {RECIPE_SCHEMA} and older: upgrade owlkit to rebuild it"
        )
    from owlkit.recipes.registry import RECIPES

    if recipe.name not in RECIPES:
        raise Refused(
            f"{rec.name} was made by recipe {recipe.name!r}, which owl rebuild cannot re-run "
            f"(it re-runs {', '.join(RECIPES)})"
        )
    known = rec.info.inputs
    for role, digest in recipe.inputs.items():
        try:
            store.get(digest)
        except NotFound:
            info = known.get(role) or {}
            name = f" ({info['name']})" if info.get("name") else ""
            origin = info.get("origin") or {}
            came = origin.get("path") or origin.get("repo_id") or origin.get("recipe")
            where = f", which came from {came}" if came else ""
            raise NotFound(
                f"{rec.name}: its input {role} {digest[:19]}{name}{where} is not in the store: "
                "import it again, then rebuild"
            ) from None
        problems = store.verify(digest, hashed)
        if problems:
            raise Corrupt(f"{rec.name}: its input {role} changed since the recipe ran: {problems[0]}")
    return recipe


def recorded_threads(rec: Record) -> int | None:
    training = rec.info.training
    env = rec.info.environment
    value = training.get("threads") or env.get("threads")
    return int(value) if isinstance(value, int) and value > 0 else None


def rebuild(store: Store, ref: str, *, keep: bool = False, threads: int | None = None) -> RebuildReport:
    """Re-derive ``ref`` in a child process and compare; see the module docstring."""
    rec = store.find(ref)
    hashed: dict[str, str | None] = {}  # sha256 -> None, or why the stored blob fails its hash
    recipe = check_rebuildable(store, rec, hashed)
    report = RebuildReport(rec.name, rec.digest, recipe.name)
    report.stored_problems = store.verify(rec.digest, hashed)
    corrupt = {f.path for f in rec.manifest.files if hashed.get(f.sha256)}
    pinned = threads or recorded_threads(rec)
    work = Path(tempfile.mkdtemp(prefix="owl-rebuild-"))
    try:
        _run_child(store, rec, work, pinned)
        manifest, side = read_captured(work)
        _compare(store, rec, work, manifest, corrupt, report)
        report.environment = environment_differences(rec.side, side, override=threads)
        recorded_steps = rec.info.training.get("steps")
        if recorded_steps is not None:
            now = (side.get("training") or {}).get("steps")
            report.steps = {"recorded": recorded_steps, "rebuilt": now}
            if now != recorded_steps:
                report.environment.append(f"steps: recorded {recorded_steps}, rebuilt {now}")
        report.rebuilt_digest = manifest.digest()
        same = all(v == "same" for v in report.files.values()) and not report.stored_problems
        if not same:
            report.verdict = DIFFERENT_ENV if report.environment else DIFFERENT
        if keep and report.rebuilt_digest != rec.digest:
            name = default_name(f"{rec.name.split(':')[0]}-rebuild")
            report.kept = store_captured(store, work, name=name, side={"rebuild_of": rec.digest})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _run_child(store: Store, rec: Record, work: Path, threads: int | None) -> None:
    cmd = [sys.executable, "-m", "owlkit.recipes.rebuild", rec.digest, str(work), "--home", str(store.home)]
    env = dict(os.environ)  # the child's own copy: this process's environment stays as it is
    if threads:
        cmd += ["--threads", str(threads)]
        env["OMP_NUM_THREADS"] = str(threads)  # before torch starts its thread pool
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
    if proc.returncode != 0 or not (work / "manifest.json").is_file():
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit code {proc.returncode}"
        raise OwlError(f"rebuilding {rec.name}: the recipe {rec.manifest.recipe.name} failed: {last}")


def _compare(
    store: Store, rec: Record, work: Path, manifest: Manifest, bad: set[str], report: RebuildReport
) -> None:
    """Fill ``report.files`` and ``first_difference``; ``bad`` are stored files failing their hash."""
    stored = {f.path: f.sha256 for f in rec.manifest.files}
    rebuilt = {f.path: f.sha256 for f in manifest.files}
    for path in [*stored, *[p for p in rebuilt if p not in stored]]:
        if path not in rebuilt:
            report.files[path] = "missing"
        elif path not in stored:
            report.files[path] = "extra"
        else:
            report.files[path] = "same" if stored[path] == rebuilt[path] and path not in bad else "differs"
    first = next((p for p, v in report.files.items() if v != "same"), None)
    if first is None:
        return
    from owlkit.formats.tensor_diff import WEIGHT_FORMATS, first_tensor_difference

    report.first_difference = found = FirstDifference(first, report.files[first])
    if found.status == "differs" and Path(first).suffix in WEIGHT_FORMATS:
        stored_file = store.blobs.path(stored[first])
        diff = first_tensor_difference(stored_file, work / "files" / first)
        if diff is not None:
            found.tensor, found.max_abs, found.note = diff.name, diff.max_abs, diff.note


def environment_differences(
    recorded: dict[str, Any], now: dict[str, Any], *, override: int | None
) -> list[str]:
    """The facts bit-identity depends on that differ between the recorded run and the rebuild."""
    if not recorded.get("environment"):  # made before owlkit recorded it (a convert-pickle import, say)
        return ["environment: not recorded when it was made"]
    a, b = recorded["environment"], now.get("environment") or {}
    out = []
    libs_a, libs_b = a.get("libraries") or {}, b.get("libraries") or {}
    for lib in sorted(set(libs_a) | set(libs_b)):
        if lib != "owlkit" and libs_a.get(lib) != libs_b.get(lib):
            out.append(f"{lib}: recorded {libs_a.get(lib) or 'absent'}, now {libs_b.get(lib) or 'absent'}")
    for key in ("python", "machine", "cpu_model", "cpu_flags", "deterministic_algorithms"):
        if key in a and a.get(key) != b.get(key):
            out.append(f"{key}: recorded {a.get(key)}, now {b.get(key)}")
    t_a = (recorded.get("training") or {}).get("threads") or a.get("threads")
    t_b = (now.get("training") or {}).get("threads") or b.get("threads")
    if t_a is not None and t_a != t_b:
        why = f" (--threads {override})" if override else ""
        out.append(f"threads: recorded {t_a}, now {t_b}{why}")
    return out


def _child(argv: list[str] | None = None) -> None:
    """The fresh process: re-run the recipe of DIGEST with its output captured under WORK."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m owlkit.recipes.rebuild")
    ap.add_argument("digest")
    ap.add_argument("work", type=Path)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from owlkit.recipes.registry import rerun
    from owlkit.store.store import Store

    store = Store(args.home, write=True)
    try:
        rerun(store, store.get(args.digest).manifest.recipe, capture=args.work)
    except OwlError as e:
        sys.exit(f"error: {e}")
    finally:
        store.close()


if __name__ == "__main__":
    _child()

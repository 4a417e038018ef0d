"""GGUF Q8_0 export: seconds and peak RSS of owlkit against llama.cpp's ``convert_hf_to_gguf.py``, in one run.

    .venv/bin/python benchmarks/bench_quantize.py [--repeats 2] [--llama-cpp-src DIR] [--no-cli]

The model is SmolLM2-135M-Instruct: the shared Q4_1 GGUF (``$OWL_SHARED`` or ../shared) converted once to
an fp32 HF folder in a temp dir by ``owlkit.runtime.convert.gguf_to_hf`` (setup, not timed). Its fp32 size
is the sum of its ``*.safetensors``. Every measured side then runs in a fresh child process, as a user
runs it, imports and interpreter start included. A small launcher process starts each one, reaps it with
``os.wait4``, which returns that child's own ``ru_maxrss`` (its peak RSS), and takes the wall time around
it (the launcher keeps the benchmark's own memory out of the child's ``ru_maxrss``, see LAUNCHER):

- anchor: ``python convert_hf_to_gguf.py FOLDER --outtype q8_0 --outfile X.gguf``, llama.cpp's converter as
  vendored in the llama-cpp-python source distribution (``vendor/llama.cpp/``), run by this same Python
  with its own ``gguf-py`` (the script puts it on ``sys.path`` itself; NO_LOCAL_GGUF is removed from its
  environment). It imports torch and maps the safetensors lazily.
- owl (the headline): ``owlkit.quantize.gguf_export.export_gguf(FOLDER, X.gguf, "q8_0")`` in
  ``python -c``: the export alone.
- owl CLI (information, ``--no-cli`` skips it): ``owl quantize smol --to gguf-q8_0 --no-eval`` against a
  fresh temp ``OWL_HOME`` where the folder was imported first with ``owl import FOLDER --name smol`` (the
  import is setup, not timed). On top of the export it hashes the output into the store and writes the
  catalog.

The sides run ``--repeats`` times, interleaved, the order alternating between repeats; the table shows the
best time and the highest peak RSS seen. Both outputs are then read with ``owlkit.formats.gguf.read_gguf``
and compared tensor by tensor: names, ggml types and the data bytes (the Q8_0 blocks should be identical:
llama.cpp's converter quantizes with gguf-py's numpy code, as owlkit does).

Where the anchor comes from: ``--llama-cpp-src DIR`` (or env LLAMA_CPP_SRC), a folder holding
``convert_hf_to_gguf.py``, ``conversion/`` and ``gguf-py/``; otherwise a cache folder (``--cache-dir``,
default ~/.cache/owlkit-bench) where the benchmark downloads the sdist of the installed llama-cpp-python
version once with ``pip download --no-binary :all: --no-deps`` and extracts those three entries only.

Tokenizer: the converter identifies the BPE pre-tokenizer by hashing what the folder's tokenizer makes of a
fixed text. The folder's tokenizer.json (transformers' conversion of the GGUF vocabulary) hashes to the
one llama.cpp lists as "smollm", so the converter accepts the folder as is and no workaround is needed
(its tensor work would not depend on it anyway). Should a later converter reject it ("BPE pre-tokenizer
was not recognized"), the benchmark stops and says so rather than patching the folder.

Prints the table, ``ratio owl/anchor`` against the target <= 1.5 and owl's peak RSS against the model's
fp32 size. Exits 0 whatever the verdicts; 1 when a child failed or the outputs differ.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("OWL_SHARED", REPO.parent / "shared"))
GGUF = SHARED / "realmodels/smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTER = "convert_hf_to_gguf.py"
CONVERTER_DIRS = ("conversion", "gguf-py")  # what the converter imports beside itself
TIME_TARGET = 1.5
MIB = 2**20

OWL_EXPORT = (
    "import sys\n"
    "from owlkit.quantize.gguf_export import export_gguf\n"
    "export_gguf(sys.argv[1], sys.argv[2], 'q8_0')\n"
)


# ---------------------------------------------------------------- the anchor's sources


def has_converter(folder: Path) -> bool:
    return (folder / CONVERTER).is_file() and all((folder / d).is_dir() for d in CONVERTER_DIRS)


def extract_converter(sdist: Path, dest: Path) -> None:
    """Extract ``vendor/llama.cpp/{convert_hf_to_gguf.py,conversion/,gguf-py/}`` of the sdist into ``dest``.
    Regular files only, written by hand (no links, devices or modes from the archive); an archive with an
    absolute or ``..`` member path is refused whole."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.name.startswith(("/", "\\")) or ".." in parts:
                shutil.rmtree(partial, ignore_errors=True)
                sys.exit(f"{sdist.name}: member {member.name!r} leaves the archive's folder; not extracting")
            # <name>-<version>/vendor/llama.cpp/<rel>
            if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or not member.isfile():
                continue
            rel = parts[3:]
            if rel != (CONVERTER,) and rel[0] not in CONVERTER_DIRS:
                continue
            target = partial.joinpath(*rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # a regular file
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    if not has_converter(partial):
        shutil.rmtree(partial, ignore_errors=True)
        sys.exit(f"{sdist.name}: no vendor/llama.cpp/{CONVERTER} with conversion/ and gguf-py/ in it")
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)


def locate_anchor(src: Path | None, cache: Path) -> Path:
    """The folder holding llama.cpp's converter: ``src`` if given, else the cache, filled on first use."""
    if src is not None:
        src = src.expanduser()
        if not has_converter(src):
            sys.exit(f"{src}: no {CONVERTER} with conversion/ and gguf-py/ beside it; pass vendor/llama.cpp")
        return src
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("llama-cpp-python is not installed; pass --llama-cpp-src DIR (its sdist's vendor/llama.cpp)")
    dest = cache.expanduser() / f"llama.cpp-from-llama-cpp-python-{version}"
    if has_converter(dest):
        return dest
    downloads = cache.expanduser() / "downloads"
    found = sorted(downloads.glob(f"llama[-_]cpp[-_]python-{version}.tar.gz"))
    if not found:
        print(f"downloading the llama-cpp-python {version} sdist into {downloads} (once) …", flush=True)
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}"]
        cmd += ["--no-binary", ":all:", "--no-deps", "--quiet", "-d", str(downloads)]
        if subprocess.run(cmd).returncode:
            sys.exit("pip download failed; pass --llama-cpp-src DIR (the sdist's vendor/llama.cpp) instead")
        found = sorted(downloads.glob(f"llama[-_]cpp[-_]python-{version}.tar.gz"))
        if not found:
            sys.exit(f"pip left no llama-cpp-python {version} .tar.gz in {downloads}")
    extract_converter(found[0], dest)
    return dest


# ---------------------------------------------------------------- one measured child


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    maxrss_kib: int
    returncode: int
    timed_out: bool = False


# Runs one command and writes its figures as JSON. The measured command is started from this small process,
# not from the benchmark: on Linux a child's ru_maxrss also counts the RSS high-water mark of the process it
# was forked from (exec keeps it), and the benchmark itself has held the whole fp32 model during setup.
LAUNCHER = """
import json, os, signal, subprocess, sys, threading, time
result, stdout, stderr, timeout, *cmd = sys.argv[1:]
killed = threading.Event()
with open(stdout, "wb") as out, open(stderr if stderr != stdout else os.devnull, "wb") as err:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err if stderr != stdout else subprocess.STDOUT)
    def kill():
        killed.set()
        os.kill(proc.pid, signal.SIGKILL)  # not proc.kill(): Popen polls, and could reap it first
    timer = threading.Timer(float(timeout), kill)
    timer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    timer.cancel()
proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4; Popen must not wait again
figures = {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
           "maxrss_kib": usage.ru_maxrss, "returncode": proc.returncode, "timed_out": killed.is_set()}
with open(result, "w") as f:
    json.dump(figures, f)
"""


def measure(cmd: list[str], stdout: Path, stderr: Path, env: dict[str, str], timeout: float) -> Run:
    """Run ``cmd`` (through LAUNCHER); its wall time, user+sys CPU time and peak RSS (``ru_maxrss`` of that
    child alone, from ``os.wait4``). Output goes to files, so no pipe can stall it."""
    result = stdout.with_name(stdout.name + ".figures.json")
    launcher = [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), str(stdout), str(stderr)]
    done = subprocess.run([*launcher, str(timeout), *cmd], env=env)
    if done.returncode or not result.is_file():
        return Run(0.0, 0.0, 0, done.returncode or -1)
    return Run(**json.loads(result.read_text()))


@dataclass
class Side:
    label: str
    runs: list[Run] = field(default_factory=list)
    output_bytes: int = 0
    failure: str = ""

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def peak_kib(self) -> int:
        return max(r.maxrss_kib for r in self.runs)


def check_run(side: Side, run: Run, stderr: Path) -> bool:
    """Record ``run`` on ``side``; False (with the reason and the log's tail printed) when it failed."""
    if run.returncode == 0:
        side.runs.append(run)
        return True
    why = "killed after the time limit" if run.timed_out else f"exit status {run.returncode}"
    side.failure = why
    tail = stderr.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
    print(f"{side.label}: FAILED ({why}); last lines of {stderr.name}:", file=sys.stderr)
    for line in tail:
        print(f"  {line[:200]}", file=sys.stderr)
    if any("pre-tokenizer was not recognized" in line for line in tail):
        print(
            "  the converter does not know this folder's tokenizer hash: see the module docstring",
            file=sys.stderr,
        )
    return False


# ---------------------------------------------------------------- comparing the outputs


def compare(anchor: Path, owl: Path) -> tuple[bool, str]:
    """Same tensor names and types, and byte-identical tensor data? Returns (all same, one line)."""
    from owlkit.formats.gguf import read_gguf

    a, o = read_gguf(anchor), read_gguf(owl)
    ta, to = {t.name: t for t in a.tensors}, {t.name: t for t in o.tensors}
    if set(ta) != set(to):
        only_a, only_o = sorted(set(ta) - set(to)), sorted(set(to) - set(ta))
        return False, f"tensor names differ: only in anchor {only_a[:4]}, only in owl {only_o[:4]}"
    mistyped = [n for n in ta if (ta[n].type_name, ta[n].shape) != (to[n].type_name, to[n].shape)]
    if mistyped:
        n = mistyped[0]
        return False, (
            f"{len(mistyped)} tensors differ in type or shape, e.g. {n}: anchor {ta[n].type_name} "
            f"{ta[n].shape}, owl {to[n].type_name} {to[n].shape}"
        )
    differ: dict[str, int] = {}
    by_type: dict[str, int] = {}
    with open(anchor, "rb") as fa, open(owl, "rb") as fo:
        for name, t in ta.items():
            by_type[t.type_name] = by_type.get(t.type_name, 0) + 1
            fa.seek(t.offset)
            fo.seek(to[name].offset)
            if fa.read(t.nbytes) != fo.read(to[name].nbytes):
                differ[t.type_name] = differ.get(t.type_name, 0) + 1
    types = ", ".join(f"{k} {v}" for k, v in sorted(by_type.items()))
    if differ:
        what = ", ".join(f"{k} {v}/{by_type[k]}" for k, v in sorted(differ.items()))
        return False, f"{len(ta)} tensors, same names and types ({types}); data DIFFERS: {what}"
    return True, f"{len(ta)} tensors, same names and types ({types}); data byte-identical"


def stored_gguf(home: Path) -> Path | None:
    """The one GGUF blob in a store holding the imported folder and its Q8_0 variant."""
    for path in sorted((home / "blobs").rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                if f.read(4) == b"GGUF":
                    return path
    return None


# ---------------------------------------------------------------- the run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs of each side, interleaved; best time kept")
    ap.add_argument(
        "--llama-cpp-src",
        type=Path,
        default=os.environ.get("LLAMA_CPP_SRC") or None,
        help="folder with convert_hf_to_gguf.py, conversion/ and gguf-py/ (default: env LLAMA_CPP_SRC, "
        "else downloaded into --cache-dir)",
    )
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "owlkit-bench",
        help="where the llama-cpp-python sdist is downloaded and its converter extracted (once)",
    )
    ap.add_argument("--no-cli", action="store_true", help="skip the `owl import` + `owl quantize` side")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per child before it is killed")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if not GGUF.is_file():
        sys.exit(f"{GGUF}: missing; this benchmark needs ../shared beside the repository (or OWL_SHARED)")
    owl_cli = Path(sys.executable).parent / "owl"
    if not args.no_cli and not owl_cli.is_file():
        sys.exit(f"{owl_cli}: no `owl` script beside this Python; install owlkit here, or pass --no-cli")
    anchor_dir = locate_anchor(Path(args.llama_cpp_src) if args.llama_cpp_src else None, args.cache_dir)

    from owlkit.runtime.convert import gguf_to_hf

    env = {k: v for k, v in os.environ.items() if k not in ("NO_LOCAL_GGUF", "OWL_HOME", "OWL_DB")}
    work = Path(tempfile.mkdtemp(prefix="owl-bench-quantize-", dir=args.dir))
    failed = False
    try:
        folder = work / "smollm2"
        t = time.perf_counter()
        gguf_to_hf(GGUF, folder)
        fp32_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        print(
            f"model: {GGUF.name} -> fp32 HF folder, safetensors {fp32_bytes / MIB:.0f} MiB "
            f"({fp32_bytes / 1e6:.0f} MB), converted in {time.perf_counter() - t:.1f} s (setup)"
        )
        print(f"anchor: {anchor_dir / CONVERTER}")
        print(
            f"each side: a fresh `{Path(sys.executable).name}` child, {args.repeats} run(s), interleaved; "
            f"cpu cores {os.cpu_count()}, each child uses the threads it wants"
        )

        outs = work / "out"
        outs.mkdir()
        anchor_out, owl_out = outs / "anchor-q8_0.gguf", outs / "owl-q8_0.gguf"
        anchor = Side("anchor llama.cpp convert_hf_to_gguf.py")
        owl = Side("owl    export_gguf (library)")
        cli = Side("owl    owl quantize --no-eval (CLI)")
        anchor_cmd = [sys.executable, str(anchor_dir / CONVERTER), str(folder)]
        anchor_cmd += ["--outtype", "q8_0", "--outfile", str(anchor_out)]
        owl_cmd = [sys.executable, "-c", OWL_EXPORT, str(folder), str(owl_out)]
        cli_note = ""

        def run_anchor(r: int) -> bool:
            anchor_out.unlink(missing_ok=True)
            log = work / f"anchor-{r}.log"
            if not check_run(anchor, measure(anchor_cmd, log, log, env, args.timeout), log):
                return False
            anchor.output_bytes = anchor_out.stat().st_size
            return True

        def run_owl(r: int) -> bool:
            owl_out.unlink(missing_ok=True)
            log = work / f"owl-{r}.log"
            if not check_run(owl, measure(owl_cmd, log, log, env, args.timeout), log):
                return False
            owl.output_bytes = owl_out.stat().st_size
            return True

        def run_cli(r: int) -> bool:
            nonlocal cli_note
            home = work / f"home-{r}"
            cli_env = {**env, "OWL_HOME": str(home)}
            log = work / f"cli-{r}.log"
            imported = subprocess.run(
                [str(owl_cli), "import", str(folder), "--name", "smol"],
                env=cli_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if imported.returncode:
                cli.failure = f"owl import failed: {imported.stderr.strip()[-300:]}"
                print(f"{cli.label}: FAILED ({cli.failure})", file=sys.stderr)
                return False
            cmd = [str(owl_cli), "quantize", "smol", "--to", "gguf-q8_0", "--no-eval", "--json"]
            stdout = work / f"cli-{r}.json"
            ok = check_run(cli, measure(cmd, stdout, log, cli_env, args.timeout), log)
            if ok:
                cli.output_bytes = json.loads(stdout.read_text())[0]["export"]["file_bytes"]
                blob = stored_gguf(home)
                if r == 0 and blob is not None and owl_out.is_file():
                    cli_note = compare(owl_out, blob)[1]
            shutil.rmtree(home, ignore_errors=True)
            return ok

        steps = [run_anchor, run_owl] + ([] if args.no_cli else [run_cli])
        for r in range(args.repeats):
            order = steps if r % 2 == 0 else steps[::-1]
            for step in order:
                print(f"  repeat {r + 1}/{args.repeats}: {step.__name__[4:]} …", flush=True)
                if not step(r):
                    failed = True
            if failed:
                break

        print()
        print(f"{'side':<38} {'best s':>7} {'cpu s':>6} {'peak RSS MiB':>12} {'output MB':>9}")
        for side in (anchor, owl) + (() if args.no_cli else (cli,)):
            if side.failure or not side.runs:
                print(f"{side.label:<38} FAILED: {side.failure or 'not run'}")
                continue
            b = side.best
            print(
                f"{side.label:<38} {b.seconds:>7.2f} {b.cpu_seconds:>6.2f} "
                f"{side.peak_kib * 1024 / MIB:>12.0f} {side.output_bytes / 1e6:>9.1f}"
            )
        print(
            "best s: fastest wall time (interpreter start and imports included); cpu s: user+sys of that "
            "run; peak RSS: highest ru_maxrss of the child over the runs"
        )
        if anchor_out.is_file() and owl_out.is_file():
            same, line = compare(anchor_out, owl_out)
            print(f"outputs anchor vs owl: {line}")
            failed = failed or not same
        if cli_note:
            print(f"outputs owl library vs CLI (stored blob): {cli_note}")
        first_log = work / "anchor-0.log"
        anchor_log = first_log.read_text(encoding="utf-8", errors="replace") if first_log.is_file() else ""
        warnings = sorted({ln for ln in anchor_log.splitlines() if ln.startswith("WARNING")})
        for ln in warnings[:5]:
            print(f"anchor said: {ln}")

        fp32_mib = fp32_bytes / MIB
        if anchor.runs and owl.runs:
            ratio = owl.best.seconds / anchor.best.seconds
            print(
                f"ratio owl/anchor: {ratio:.2f}x (target <= {TIME_TARGET}: "
                f"{'PASS' if ratio <= TIME_TARGET else 'FAIL'})"
            )
        if owl.runs:
            peak = owl.peak_kib * 1024 / MIB
            print(
                f"peak RSS owl: {peak:.0f} MiB vs fp32 model {fp32_mib:.0f} MiB "
                f"(target below: {'PASS' if peak < fp32_mib else 'FAIL'})"
            )
        if anchor.runs and cli.runs:
            ratio = cli.best.seconds / anchor.best.seconds
            peak = cli.peak_kib * 1024 / MIB
            print(
                f"information, CLI (export + store hashing + catalog): ratio {ratio:.2f}x the anchor's time, "
                f"peak RSS {peak:.0f} MiB ({'below' if peak < fp32_mib else 'NOT below'} the fp32 size)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()

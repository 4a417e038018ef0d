"""The ``quantize`` recipe: a stored model -> GGUF or bitsandbytes variants, each with its drift measured.

One call makes one artifact per ``--to`` target, each with a ``quantized_from`` edge and a recipe that
names only the target (the eval settings describe a measurement, not the weights), and scores the source
once for all of them. Drift is measured in the runtime the artifact will run in: GGUF files in llama.cpp
when the gguf extra is installed, against an F32 GGUF of the source (llama.cpp's ``--kl-divergence``
set-up), otherwise in torch on the GGUF's dequantized weights against the source; bitsandbytes folders in
torch. Numbers from different runtimes are never compared (quantize/drift.py refuses).

An input that is itself quantized is refused unless ``--from-dequantized`` (then a GGUF is dequantized to
float32 first, and the record says what it came from). A source that descends from a quantized file
(like the demo's model, converted from a Q4_1 GGUF) is recorded as such on every output.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import Refused, UsageError, with_article
from owlkit.quantize.drift import DEFAULT_CHUNK, DEFAULT_EVAL_TOKENS
from owlkit.recipes import derived_origin, inherited_license, make_recipe, store_output
from owlkit.runtime.llamacpp import has_llama_cpp, import_llama_cpp
from owlkit.store.manifest import Parent
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Record, Store

NAME = "quantize"
NUMPY_GGUF = ("gguf-f32", "gguf-f16", "gguf-q8_0", "gguf-q4_0", "gguf-q4_1")
# llama.cpp's own quantizer writes the K-quant mixes (gguf-py cannot): llama_ftype values from llama.h.
LLAMA_CPP_GGUF = {"gguf-q4_k_m": 15, "gguf-q5_k_m": 17, "gguf-q6_k": 18}
BNB = ("bnb-nf4", "bnb-int8")
ADAPTER_TARGETS = ("gguf-lora",)
TARGETS = (*NUMPY_GGUF, *LLAMA_CPP_GGUF, *BNB, *ADAPTER_TARGETS)

# bar(description, total, unit) -> a context yielding advance(n) or None; unit is "bytes" or "windows".
Bar = Callable[[str, int, str], AbstractContextManager[Callable[[int], None] | None]]


@dataclass
class QuantizeParams:
    to: str
    """Target: gguf-f32|gguf-f16|gguf-q8_0|gguf-q4_0|gguf-q4_1|gguf-q4_k_m|gguf-q5_k_m|gguf-q6_k|bnb-nf4|bnb-int8|gguf-lora."""
    from_dequantized: bool = False
    """The source was quantized and is dequantized to float32 first."""

    def __post_init__(self) -> None:
        if self.to not in TARGETS:
            raise UsageError(
                f"--to {self.to!r} is not a quantization target: choose one of {', '.join(TARGETS)}"
            )


@dataclass
class EvalSettings:
    tokens: int = DEFAULT_EVAL_TOKENS
    text: Path | None = None  # None: the public-domain text shipped with owlkit
    enabled: bool = True
    max_ppl_increase: float | None = None  # a fraction: 0.05 fails when perplexity rises more than 5%


@dataclass
class Output:
    target: str
    path: Path  # the GGUF file or the bnb folder
    name: str
    export: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    digest: str = ""


Params = QuantizeParams


def run(
    store: Store,
    inputs: dict[str, str],
    params: QuantizeParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """One target of :func:`quantize` from the inputs a manifest records (``{"source": digest}``),
    without the drift measurement: that is a report on the artifact, not part of it."""
    outputs = quantize(
        store,
        inputs["source"],
        [params.to],
        from_dequantized=params.from_dequantized,
        evaluation=EvalSettings(enabled=False),
        names={params.to: name} if name else None,
        capture=capture,
    )
    return outputs[0].digest


def _no_bar(_description: str, _total: int, _unit: str) -> AbstractContextManager[None]:
    from contextlib import nullcontext

    return nullcontext()


def quantize(
    store: Store,
    ref: str,
    targets: list[str],
    *,
    from_dequantized: bool = False,
    evaluation: EvalSettings | None = None,
    names: dict[str, str] | None = None,
    bar: Bar | None = None,
    say: Callable[[str], None] | None = None,
    capture: Path | None = None,
) -> list[Output]:
    """Quantize ``ref`` to every target in ``targets`` and store the results (see the module).
    ``capture`` (one target only): see :func:`owlkit.recipes.store_output`."""
    from owlkit.recipes.tune import resolve_input

    evaluation = evaluation or EvalSettings()
    bar = bar or _no_bar
    say = say or (lambda _m: None)
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise UsageError("no target given: add --to, e.g. --to gguf-q8_0")
    for t in targets:
        QuantizeParams(t)  # validates
    if "gguf-lora" in targets and len(targets) > 1:
        raise UsageError("--to gguf-lora converts an adapter; give it alone")
    if evaluation.tokens < 2:
        raise UsageError("--eval-tokens must be at least 2")
    src = resolve_input(store, ref, "adapter" if targets == ["gguf-lora"] else "model")
    stem = src.name.split(":")[0]
    names = names or {}
    out_names = {
        t: names.get(t) or default_name(f"{stem}-{t.removeprefix('gguf-').replace('_', '-')}")
        for t in targets
    }
    for n in out_names.values():
        parse_name(n)  # before minutes of work, not after
    if capture is not None and len(targets) > 1:
        raise UsageError("a captured quantize makes one target: give one --to")
    if targets == ["gguf-lora"]:
        return [_adapter_to_gguf(store, src, out_names["gguf-lora"], say, capture)]

    for t in targets:
        if t in LLAMA_CPP_GGUF:
            import_llama_cpp(f"quantizing to {t}")  # before minutes of work, not after
    started = time.time()
    quantized = src.facts.quantization
    if quantized and not from_dequantized:
        raise Refused(
            f"{src.name} is already quantized ({quantized}); quantizing it again compounds the error: "
            "quantize its full-precision model, or pass --from-dequantized to dequantize it first"
        )
    if src.manifest.format not in ("hf", "gguf"):
        raise Refused(
            f"{src.name} is {src.manifest.format}; owl quantize reads Hugging Face folders and GGUF files"
        )
    text = _eval_text(evaluation) if evaluation.enabled else ""  # a bad --eval-text fails before the work
    with store.session() as scratch, ExitStack() as stack:
        folder = _source_folder(store, src, scratch.dir, say)
        outputs = [Output(t, scratch.dir / "out" / t, out_names[t]) for t in targets]
        (scratch.dir / "out").mkdir()
        f32_gguf: Path | None = None
        for o in outputs:
            say(f"writing {o.name} ({o.target})")
            if o.target in BNB:
                from owlkit.quantize.bnb import export_bnb

                o.export = {"quantization_config": export_bnb(folder, o.path, o.target.removeprefix("bnb-"))}
            else:
                o.path = o.path.with_suffix(".gguf")
                f32_gguf = _write_gguf(folder, o, src, bar, f32_gguf, scratch.dir)
        if evaluation.enabled:
            _measure(folder, outputs, evaluation, text, f32_gguf, scratch.dir, stack, say, bar)
        _guard(outputs, evaluation)
        for o in outputs:
            o.digest = _store(store, src, o, from_dequantized, started, capture)
    return outputs


def _source_folder(store: Store, src: Record, scratch: Path, say: Callable[[str], None]) -> Path:
    """An HF folder of the source's full-precision weights (a GGUF source is dequantized to float32)."""
    folder = store.checkout(src.digest)
    if src.manifest.format != "gguf":
        return folder
    from owlkit.runtime.convert import gguf_to_hf

    say(f"dequantizing {src.name} to float32")
    out = scratch / "dequantized"
    gguf_to_hf(folder / src.manifest.files[0].path, out)
    return out


def _gguf_metadata(src: Record) -> dict[str, Any]:
    """General keys for the GGUF: name, license and where it came from (llama.cpp's key names)."""
    from owlkit.recipes.tune import card_license

    meta: dict[str, Any] = {"general.name": src.name.split(":")[0]}
    lic = card_license(src.manifest.license).get("license")
    if lic:
        meta["general.license"] = lic
    repo_id = src.info.origin.repo_id
    meta["general.base_model.count"] = 1
    meta["general.base_model.0.name"] = src.name.split(":")[0]
    if repo_id:
        meta["general.base_model.0.repo_url"] = f"https://huggingface.co/{repo_id}"
    meta["owlkit.source_digest"] = src.digest
    return meta


def _write_gguf(
    folder: Path, o: Output, src: Record, bar: Bar, f32: Path | None, scratch: Path
) -> Path | None:
    """Write one GGUF target; returns the F32 GGUF of the source when one exists (reused for scoring)."""
    from owlkit.quantize.gguf_export import export_gguf

    meta = _gguf_metadata(src)
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    if o.target in NUMPY_GGUF:
        with bar(f"{o.target}", total, "bytes") as advance:
            report = export_gguf(
                folder, o.path, o.target.removeprefix("gguf-"), metadata=meta, advance=advance
            )
        o.export = report.to_dict()
        return o.path if o.target == "gguf-f32" else f32
    llama_cpp = import_llama_cpp(f"quantizing to {o.target}")
    if f32 is None:
        f32 = scratch / "source-f32.gguf"
        with bar("gguf-f32 (for llama.cpp's quantizer)", total, "bytes") as advance:
            export_gguf(folder, f32, "f32", metadata=meta, advance=advance)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_CPP_GGUF[o.target]
    params.nthread = 0  # llama.cpp picks the core count
    if llama_cpp.llama_model_quantize(str(f32).encode(), str(o.path).encode(), ctypes.byref(params)) != 0:
        o.path.unlink(missing_ok=True)
        raise Refused(f"llama.cpp could not quantize {src.name} to {o.target}; see its log above")
    from owlkit.formats.gguf import gguf_type_histogram, read_gguf

    g = read_gguf(o.path)
    tensor_bytes = sum(t.nbytes for t in g.tensors)
    o.export = {
        "qtype": o.target.removeprefix("gguf-"),
        "parameters": g.parameters,
        "tensor_bytes": tensor_bytes,
        "file_bytes": o.path.stat().st_size,
        "bits_per_weight": round(8 * tensor_bytes / g.parameters, 4),
        "types": gguf_type_histogram(g),
        "quantizer": "llama.cpp llama_model_quantize",
    }
    return f32


def _measure(
    folder: Path,
    outputs: list[Output],
    evaluation: EvalSettings,
    text: str,
    f32: Path | None,
    scratch: Path,
    stack: ExitStack,
    say: Callable[[str], None],
    bar: Bar,
) -> None:
    """Score every output against the source, one group per runtime, the source scored once per group."""
    from owlkit.quantize.drift import (
        LlamaCppScorer,
        TorchScorer,
        eval_chunks,
        measure_drift,
        runtime_family,
        tokenize_eval_text,
    )

    tokenizer = _tokenizer(folder)
    chunks = eval_chunks(tokenize_eval_text(tokenizer, text), DEFAULT_CHUNK, evaluation.tokens)
    text_name = evaluation.text.name if evaluation.text else "owlkit default (public domain)"
    gguf_outs = [o for o in outputs if o.path.suffix == ".gguf"]
    torch_outs = [o for o in outputs if o not in gguf_outs]
    groups: list[tuple[Any, list[tuple[Output, Any]]]] = []
    if gguf_outs and has_llama_cpp():
        if f32 is None:
            from owlkit.quantize.gguf_export import export_gguf

            f32 = scratch / "source-f32.gguf"
            say("writing an F32 GGUF of the source (llama.cpp scores it as the reference)")
            export_gguf(folder, f32, "f32")
        n_ctx = max(len(c) for c in chunks)
        source = stack.enter_context(LlamaCppScorer(f32, n_ctx))
        groups.append((source, [(o, stack.enter_context(LlamaCppScorer(o.path, n_ctx))) for o in gguf_outs]))
    else:
        torch_outs = outputs
    if torch_outs:
        source = TorchScorer(_load_torch(folder))
        targets = []
        for o in torch_outs:
            path = o.path
            if path.suffix == ".gguf":  # no llama.cpp: torch on the GGUF's dequantized weights
                from owlkit.runtime.convert import gguf_to_hf

                path = scratch / f"dequantized-{o.target}"
                gguf_to_hf(o.path, path)
            targets.append((o, TorchScorer(_load_torch(path))))
        groups.append((source, targets))
    for source, targets in groups:
        say(
            f"scoring {len(targets)} variant(s) against the source on {sum(map(len, chunks))} tokens ({source.runtime})"
        )
        with bar(f"scoring ({runtime_family(source.runtime)})", len(chunks), "windows") as advance:
            progress = (lambda done, _total: advance(1)) if advance else None
            drift = measure_drift(source, {o.target: s for o, s in targets}, chunks, progress)
        for o, _ in targets:
            o.quality = {
                **drift[o.target].to_dict(),
                "eval_text": text_name,
                "size_bytes": _size(o.path),
                "bits_per_weight": o.export.get("bits_per_weight"),
            }


def _eval_text(evaluation: EvalSettings) -> str:
    from owlkit.quantize.drift import default_eval_text, read_eval_text

    return read_eval_text(evaluation.text) if evaluation.text else default_eval_text()


def _size(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def _load_torch(folder: Path) -> Any:
    from owlkit.runtime.load import load_causal_lm

    return load_causal_lm(folder)[0]


def _guard(outputs: list[Output], evaluation: EvalSettings) -> None:
    limit = evaluation.max_ppl_increase
    if limit is None:
        return
    for o in outputs:
        if o.quality is None:
            raise UsageError("--max-ppl-increase needs the drift measured: drop --no-eval")
        rise = o.quality["ppl"] / o.quality["ppl_source"] - 1
        if rise > limit:
            raise Refused(
                f"{o.name}: perplexity rose {rise:.1%} ({o.quality['ppl_source']:.3f} -> {o.quality['ppl']:.3f}), "
                f"over --max-ppl-increase {limit:.1%}; nothing was stored: choose a wider type"
            )


def quantized_ancestor(store: Store, rec: Record) -> str | None:
    """ "NAME (QUANTIZATION)" of the nearest quantized artifact ``rec`` is or descends from, else None:
    the demo's merged model descends from a Q4_1 GGUF, and a record of its variants should say so."""
    from owlkit.errors import NotFound

    seen: set[str] = {rec.digest}
    frontier = [rec]
    while frontier:
        parents = []
        for r in frontier:
            if r.facts.quantization:
                return f"{r.name} ({r.facts.quantization})"
            for p in r.manifest.parents:
                if p.digest and p.digest not in seen:
                    seen.add(p.digest)
                    try:
                        parents.append(store.get(p.digest))
                    except NotFound:  # an unresolved or removed parent: lineage stops there
                        continue
        frontier = parents
    return None


def _store(
    store: Store, src: Record, o: Output, from_dequantized: bool, started: float, capture: Path | None
) -> str:
    from owlkit.formats.detect import inspect_gguf
    from owlkit.formats.hf_folder import inspect_hf_folder

    ins = inspect_gguf(o.path) if o.path.suffix == ".gguf" else inspect_hf_folder(o.path)
    params = QuantizeParams(o.target, from_dequantized)
    side = {
        "origin": derived_origin(src, "quantize"),
        "license": inherited_license(src, "quantized_from"),
        "descends_from_quantized": quantized_ancestor(store, src),
        "quantize": {"export": o.export, "notes": o.notes},
        "quality": o.quality,
    }
    return store_output(
        store,
        ins,
        recipe=make_recipe(NAME, params, {"source": src.digest}),
        parents=[Parent(src.digest, "quantized_from")],
        license=src.manifest.license,
        side=side,
        name=o.name,
        started=started,
        capture=capture,
    )


def _adapter_to_gguf(
    store: Store, adapter: Record, name: str, say: Callable[[str], None], capture: Path | None
) -> Output:
    """A PEFT LoRA adapter as a GGUF LoRA for llama.cpp, with an ``quantized_from`` edge to the adapter."""
    import json

    from owlkit.quantize.gguf_lora import export_gguf_lora

    started = time.time()
    if adapter.manifest.format != "peft":
        raise Refused(
            f"{adapter.name} is {with_article(adapter.manifest.format)} adapter; --to gguf-lora converts PEFT LoRA adapters"
        )
    bases = [p.digest for p in adapter.manifest.parents if p.relation == "adapter_of"]
    if not bases:
        raise Refused(
            f"{adapter.name} names no stored base (no adapter_of edge); import its base and tune or link it"
        )
    base = store.get(bases[0])
    base_folder = store.checkout(base.digest)
    if base.manifest.format == "gguf":
        raise Refused(f"{adapter.name}: its base {base.name} is a GGUF; the adapter needs its HF config.json")
    config = json.loads((base_folder / "config.json").read_text(encoding="utf-8"))
    o = Output("gguf-lora", Path(), name)
    with store.session() as scratch:
        o.path = scratch.dir / "adapter.gguf"
        say(f"writing {name} (GGUF LoRA for {base.name})")
        o.notes = export_gguf_lora(store.checkout(adapter.digest), o.path, config)
        o.export = {"base": base.digest, "file_bytes": o.path.stat().st_size}
        o.digest = _store(store, adapter, o, False, started, capture)
    return o


def iter_targets(values: list[str]) -> Iterator[str]:
    """``--to a --to b`` and ``--to a,b`` alike."""
    for v in values:
        yield from (x.strip() for x in v.split(",") if x.strip())

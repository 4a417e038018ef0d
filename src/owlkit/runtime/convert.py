"""GGUF -> HF folder: dequantize once into plain safetensors that every tool loads without ``gguf_file=``.

transformers reads the GGUF (its weight names, q/k permutation and tokenizer conversion are the ones
the ecosystem trusts), then marks the model as quantized (``quant_method: gguf``), which makes
``Trainer`` refuse it and ``save_pretrained`` record a quantization config that no longer applies. We
drop those marks before saving (shared/docs/adapt-quantize-serve.md), and save the tokenizer (with its
chat template) and the generation config beside the weights.

Llama-shaped files (most GGUFs: Llama, Mistral, SmolLM) skip transformers' slow GGUF loader:
runtime/gguf_llama.py reads and dequantizes them directly and writes the same files, byte for byte.

The output is deterministic: converting the same GGUF twice gives byte-identical files (the config
records the model's GGUF ``general.name``, never a path), which is what lets the store give the
converted artifact the same digest every time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from owlkit.errors import InvalidFile, UsageError, missing_extra
from owlkit.runtime.load import (
    NO_HUB_KERNELS,
    check_dtype,
    check_gguf_architecture,
    gguf_architectures,
    gguf_load_bytes,
    refuse_if_too_big,
)

CONVERT_DTYPES = ("float32", "bfloat16")


def gguf_to_hf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: str = "float32",
    progress: Callable[[str], None] | None = None,
    direct: bool = True,
) -> None:
    """Dequantize ``gguf_path`` into an HF folder ``out_dir`` (created; must be absent or empty).

    ``dtype`` is "float32" (default) or "bfloat16". Raises UsageError for another dtype, InvalidFile for
    a malformed file or an architecture transformers cannot load, Refused when the dequantized model
    would not fit in memory. On failure nothing is left in ``out_dir``.

    Llama-shaped files take owlkit's direct reader (runtime/gguf_llama.py, seconds instead of tens of
    seconds), which writes the files transformers' loader would; ``direct=False`` forces that loader,
    the reference the direct reader is tested against.
    """
    from owlkit.formats.gguf import read_gguf
    from owlkit.formats.tokenizer import load_gguf_tokenizer
    from owlkit.runtime.gguf_llama import llama_fast_path, write_llama_hf

    say = progress or (lambda _message: None)
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    name = gguf_path.name
    if dtype not in CONVERT_DTYPES:
        raise UsageError(
            f"dtype {dtype!r} cannot be used for conversion; use one of: {', '.join(CONVERT_DTYPES)}"
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    try:
        import transformers  # noqa: F401 - fail early, naming the extra to install
    except ImportError:
        raise missing_extra("transformers", "ml", "converting a GGUF file") from None
    torch_dtype = check_dtype(dtype, CONVERT_DTYPES)

    say(f"reading {name}")
    gguf = read_gguf(gguf_path)  # validates the header before transformers' own reader sees it
    direct = direct and llama_fast_path(gguf, dtype)
    if not direct:  # (importing transformers' GGUF tables to check costs half a second)
        check_gguf_architecture(name, gguf.metadata.get("general.architecture"))
    what = f"{gguf.parameters:,} parameters to {dtype}"
    refuse_if_too_big(name, gguf_load_bytes(gguf, dtype), f"dequantizing {what}")

    created = not out_dir.exists()
    try:
        if direct:
            say(f"dequantizing {what}")
            write_llama_hf(gguf, out_dir, dtype, say)
        else:
            _convert(gguf_path, out_dir, torch_dtype, say, what)
        say("writing the tokenizer and chat template")
        load_gguf_tokenizer(gguf_path).save_pretrained(str(out_dir))
        _scrub(out_dir)
    except BaseException:
        discard_output(out_dir, created)
        raise


def discard_output(out_dir: Path, created: bool) -> None:
    """Never leave half a model behind: remove a folder we created, or empty one we were given."""
    if created:
        shutil.rmtree(out_dir, ignore_errors=True)
    elif out_dir.is_dir():
        for child in out_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()


def _convert(
    gguf_path: Path, out_dir: Path, torch_dtype: object, say: Callable[[str], None], what: str
) -> None:
    from transformers import AutoModelForCausalLM

    name = gguf_path.name
    say(f"dequantizing {what}")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent),
            gguf_file=name,
            dtype=torch_dtype,
            local_files_only=True,
            trust_remote_code=False,
            **NO_HUB_KERNELS,
        )
    except (ValueError, KeyError, NotImplementedError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not supported" in first:
            raise InvalidFile(
                f"{name}: transformers cannot convert it ({first}); it loads GGUF files of "
                f"{', '.join(gguf_architectures())}"
            ) from None
        raise InvalidFile(f"{name}: transformers cannot convert it ({first})") from None

    # The weights are plain tensors now; forget that they came from a quantized file.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False

    say(f"writing safetensors to {out_dir.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))  # transformers 5 writes safetensors only


# Loading options that transformers copies into tokenizer_config.json; they describe how that one load
# was called, not the tokenizer.
_LOAD_KEYS = ("is_local", "local_files_only", "trust_remote_code", "name_or_path", "_commit_hash")


# What each saved JSON file may carry that describes the call or the library rather than the model.
# transformers_version would make the converted artifact's digest depend on the library version (a side
# record, kept in the recipe's environment instead); the load keys describe one particular load.
_SCRUB = {
    "tokenizer_config.json": _LOAD_KEYS,
    "config.json": ("transformers_version",),
    "generation_config.json": ("transformers_version",),
}


def _scrub(out_dir: Path) -> None:
    """Remove per-call and per-version details from the saved JSON so conversions write the same bytes."""
    for name, keys in _SCRUB.items():
        path = out_dir / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if any(k in data for k in keys):
            for key in keys:
                data.pop(key, None)
            path.write_text(
                json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
            )

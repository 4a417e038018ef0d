"""bitsandbytes variants of an HF folder: 4-bit NF4 or 8-bit LLM.int8, saved pre-quantized.

The output is what ``save_pretrained`` writes for a model loaded with a ``BitsAndBytesConfig``: packed
weights and their quantization states in ``model.safetensors`` and a ``quantization_config`` in
``config.json``, so ``AutoModelForCausalLM.from_pretrained(out_dir)`` reloads it quantized with no
extra arguments. bitsandbytes >= 0.46 quantizes, saves, reloads and runs both kinds on CPU (checked
with 0.50: NF4 with double quantization and int8 alike).

Everything but the output head and the embeddings is quantized (transformers' choice of modules);
those stay in the model's own dtype, which is also the compute dtype recorded for NF4 (float32 for a
float32 model: CPUs have no fast half-precision matmul).

The output is deterministic (the store hashes it): quantization is pure arithmetic on the same values,
and the saved JSON loses ``transformers_version`` as in ``owl convert``. The tokenizer, chat template,
generation config and license files are copied from the source folder byte for byte.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from owlkit.errors import InvalidFile, NotFound, OwlError, Refused, UsageError, missing_extra

BNB_MODES = ("nf4", "int8")
# Files beside the weights that describe how to use them; copied as they are. The generation config
# replaces the one save_pretrained derives from it, so user fields transformers does not know survive.
COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
)
# A quantized model is a derivative: its license and notices go with it.
LICENSE_PREFIXES = ("LICENSE", "LICENCE", "NOTICE", "USE_POLICY")
_FLOAT_DTYPES = ("float32", "bfloat16", "float16")


def export_bnb(
    hf_dir: Path,
    out_dir: Path,
    mode: Literal["nf4", "int8"],
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantize the HF folder ``hf_dir`` with bitsandbytes into ``out_dir`` (created; must be absent or
    empty) and return the ``quantization_config`` written to its config.json.

    ``mode`` "nf4": 4-bit NF4 with double quantization; "int8": LLM.int8 weights. Raises UsageError for
    another mode or a non-empty ``out_dir``, NotFound for a missing folder, InvalidFile for a folder
    transformers cannot load, Refused for pickle-only weights, custom code or a model already quantized,
    MissingDependency without bitsandbytes. On failure nothing is left in ``out_dir``.
    """
    from owlkit.formats.hf_folder import read_json
    from owlkit.runtime.convert import _scrub, discard_output

    say = progress or (lambda _message: None)
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if mode not in BNB_MODES:
        raise UsageError(f"bitsandbytes mode {mode!r} is not supported; use one of: {', '.join(BNB_MODES)}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    try:
        import bitsandbytes  # noqa: F401 - fail early, naming the extra to install
        import transformers  # noqa: F401
    except ImportError as e:
        raise missing_extra(e.name or "bitsandbytes", "ml", "quantizing with bitsandbytes") from None
    dtype = _check_source(hf_dir)

    created = not out_dir.exists()
    try:
        say(f"quantizing {hf_dir.name} to {mode} ({dtype} for the rest)")
        model = _load_quantized(hf_dir, mode, dtype)
        say(f"writing safetensors to {out_dir.name}")
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(out_dir))  # transformers 5 writes safetensors only
        del model
        say("copying the tokenizer, chat template and license files")
        for source in _companions(hf_dir):
            shutil.copyfile(source, out_dir / source.name)
        _scrub(out_dir)
        return read_json(out_dir, "config.json")["quantization_config"]
    except BaseException:
        discard_output(out_dir, created)
        raise


def _check_source(hf_dir: Path) -> str:
    """The folder's weight dtype (the dtype the unquantized layers keep), after the checks that give
    clearer errors than transformers would: a folder with a config, safetensors weights, unquantized."""
    from owlkit.formats.hf_folder import read_json
    from owlkit.formats.safetensors import read_safetensors_header

    name = hf_dir.name
    if not hf_dir.is_dir():
        raise NotFound(f"{hf_dir}: no such model folder; give the folder of an HF model")
    if not (hf_dir / "config.json").is_file():
        raise InvalidFile(f"{name}: no config.json, so not an HF model folder; give the model's folder")
    config = read_json(hf_dir, "config.json")
    if "auto_map" in config:
        raise Refused(f"{name}: needs the model's own Python code (auto_map); owlkit never runs it")
    if config.get("quantization_config") is not None:
        raise Refused(
            f"{name}: its config.json has a quantization_config already; quantize the original model"
        )
    if not any(hf_dir.glob("*.safetensors")):
        raise Refused(
            f"{name}: no .safetensors weights; owlkit never loads pickle checkpoints, convert them first"
        )
    for weights in sorted(hf_dir.glob("*.safetensors")):
        read_safetensors_header(weights)  # InvalidFile, naming the file, before transformers reads it
    dtype = config.get("dtype", config.get("torch_dtype"))
    return dtype if dtype in _FLOAT_DTYPES else "float32"


def _load_quantized(hf_dir: Path, mode: str, dtype: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from owlkit.runtime.load import NO_HUB_KERNELS, _from_pretrained

    torch_dtype = getattr(torch, dtype)
    if mode == "nf4":
        # QLoRA's loader quantizes one tensor at a time (at most one full-precision tensor in memory) and
        # builds the model transformers' own 4-bit load builds, bit for bit; it hands folders it cannot
        # stream to transformers itself. Its errors are owlkit's already.
        from owlkit.adapt.nf4 import load_nf4_causal_lm

        try:
            return load_nf4_causal_lm(hf_dir, compute_dtype=torch_dtype)
        except OwlError:
            raise
        except (ValueError, OSError, KeyError) as e:  # from transformers, on the fallback path
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InvalidFile(f"{hf_dir.name}: transformers cannot load it ({first})") from None
    return _from_pretrained(
        AutoModelForCausalLM,
        hf_dir.name,
        hf_dir,
        quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        dtype=torch_dtype,
        device_map="cpu",
        use_safetensors=True,
        local_files_only=True,
        trust_remote_code=False,
        **NO_HUB_KERNELS,
    )


def _companions(hf_dir: Path) -> list[Path]:
    """The tokenizer, template, generation config and license files of the folder, in a fixed order."""
    found = [hf_dir / n for n in COPIED if (hf_dir / n).is_file()]
    found += sorted(
        p for p in hf_dir.iterdir() if p.is_file() and p.name.upper().startswith(LICENSE_PREFIXES)
    )
    return found

"""The ``convert`` recipe: a GGUF dequantized into a trainable Hugging Face safetensors folder.

transformers refuses to train a model loaded with ``gguf_file=`` (it is marked quantized), so this is
how a GGUF becomes something ``owl tune`` can adapt. The result has a ``converted_from`` edge, keeps the
source's base identity (same lineage root, tokenizer and template digests), and records that it
descends from quantized weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from owlkit.errors import Refused, UsageError
from owlkit.recipes import derived_origin, inherited_license, make_recipe, store_output
from owlkit.store.manifest import Parent
from owlkit.store.names import default_name, parse_name
from owlkit.store.store import Store

NAME = "convert"
TARGETS = ("hf",)
DTYPES = ("float32", "bfloat16")


@dataclass
class ConvertParams:
    to: str = "hf"
    """Target format: ``hf`` (a Hugging Face safetensors folder)."""
    dtype: str = "float32"
    """Weights dtype of the output: float32 (default, exact dequantization) or bfloat16 (half the size)."""

    def __post_init__(self) -> None:
        if self.to not in TARGETS:
            raise UsageError(f"--to {self.to!r} is not supported: choose one of {', '.join(TARGETS)}")
        if self.dtype not in DTYPES:
            raise UsageError(f"--dtype {self.dtype!r} is not supported: choose one of {', '.join(DTYPES)}")


Params = ConvertParams


def run(
    store: Store,
    inputs: dict[str, str],
    params: ConvertParams,
    *,
    name: str | None = None,
    capture: Path | None = None,
) -> str:
    """:func:`convert` from the inputs a manifest records (``{"source": digest}``)."""
    return convert(store, inputs["source"], params, name=name, capture=capture)


def convert(
    store: Store, ref: str, params: ConvertParams, *, name: str | None = None, capture: Path | None = None
) -> str:
    """Dequantize the GGUF ``ref`` into an HF folder and store it; its digest (``capture``: see
    :func:`owlkit.recipes.store_output`)."""
    from owlkit.formats.hf_folder import inspect_hf_folder
    from owlkit.formats.tokenizer import tokenizer_digest_hf
    from owlkit.runtime.convert import gguf_to_hf

    started = time.time()
    src = store.find(ref)
    if src.manifest.format != "gguf":
        raise Refused(
            f"{src.name} is {src.manifest.format}, not GGUF: `owl convert --to hf` dequantizes GGUF files"
        )
    out_name = name or default_name(f"{src.name.split(':')[0]}-hf")
    parse_name(out_name)  # before minutes of work, not after
    gguf_file = src.manifest.files[0]
    folder = store.checkout(src.digest)
    with store.session() as scratch:  # a live session: gc leaves its temp files alone
        out = scratch.dir / "out"
        gguf_to_hf(folder / gguf_file.path, out, dtype=params.dtype)
        ins = inspect_hf_folder(out)
        ins.facts["tokenizer_digest"] = tokenizer_digest_hf(out)
        side = {
            "origin": derived_origin(src, "convert"),
            "license": inherited_license(src, "converted_from"),
            "descends_from_quantized": src.facts.quantization,
        }
        return store_output(
            store,
            ins,
            recipe=make_recipe(NAME, params, {"source": src.digest}),
            parents=[Parent(src.digest, "converted_from")],
            license=src.manifest.license,
            side=side,
            name=out_name,
            started=started,
            capture=capture,
        )

"""Merge a PEFT adapter (LoRA or DoRA) into its base model's weights: paths in, an HF folder out.

The base is loaded in float32 whatever the output dtype, so the low-rank update is added at full
precision and rounded once, at the end, to the requested dtype. The output is deterministic: merging
the same inputs twice writes the same bytes (saved configs lose ``transformers_version``, as in
``owl convert``), which is what gives the stored result the same digest every time.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from owlkit.errors import InvalidFile, UsageError, missing_extra

MERGE_DTYPES = ("float32", "bfloat16")


def merge_adapter(base_dir: Path, adapter_dir: Path, out_dir: Path, *, dtype: str = "float32") -> None:
    """Write ``base_dir`` with the adapter in ``adapter_dir`` merged in, as an HF folder ``out_dir``
    (created; must be absent or empty) holding safetensors weights at ``dtype`` and the base's tokenizer.

    Raises UsageError for another dtype or a non-empty ``out_dir``, InvalidFile when peft cannot apply
    the adapter, Refused when the base would not fit in memory. On failure nothing is left in ``out_dir``.
    """
    from owlkit.runtime.convert import _scrub
    from owlkit.runtime.load import check_dtype, load_causal_lm

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    if dtype not in MERGE_DTYPES:
        raise UsageError(
            f"--dtype {dtype!r} cannot be used for merging; use one of: {', '.join(MERGE_DTYPES)}"
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"{out_dir}: exists and is not an empty folder; choose a new output folder")
    try:
        from peft import PeftModel
    except ImportError:
        raise missing_extra("peft", "ml", "merging an adapter") from None
    torch_dtype = check_dtype(dtype, MERGE_DTYPES)

    model, tokenizer = load_causal_lm(base_dir, dtype="float32")
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InvalidFile(f"{adapter_dir.name}: peft cannot apply it to {base_dir.name} ({first})") from None
    merged = peft_model.merge_and_unload(safe_merge=True)  # safe_merge: refuse NaNs instead of saving them
    merged = merged.to(torch_dtype)

    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        merged.save_pretrained(str(out_dir))  # transformers 5 writes safetensors only
        tokenizer.save_pretrained(str(out_dir))
        _scrub(out_dir)
    except BaseException:
        if created:  # never leave half a model behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise

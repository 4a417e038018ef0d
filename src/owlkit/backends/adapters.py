"""Getting a stored adapter onto a backend: whether it applies to the backend's base (checked once per
adapter, here), and the files the backend loads, in the form it declares (`Backend.adapter_format`).

A backend never converts adapters: the torch backend loads a PEFT folder, the gguf backend a GGUF LoRA
file. A PEFT adapter bound for a gguf backend is converted here (quantize/gguf_lora) into a temporary
file that lives only while the backend loads it (llama.cpp copies the tensors into its own buffers), so
`owl run`, `owl chat` and `owl serve` add nothing to the store; `owl quantize ADAPTER --to gguf-lora`
stores one to keep, and a stored GGUF LoRA is loaded as it is.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.backends.base import AdapterFiles, Backend, adapter_chat_template
from owlkit.errors import InvalidFile, Refused, with_article
from owlkit.recipes.loading import peft_adapter
from owlkit.store.lineage import check_adapter_applies

if TYPE_CHECKING:
    from owlkit.store.store import Record, Store


def gguf_path(store: Store, rec: Record) -> Path:
    """The .gguf file of a stored GGUF artifact (a model or a GGUF LoRA)."""
    files = [f.path for f in rec.manifest.files if f.path.endswith(".gguf")]
    if not files:
        raise InvalidFile(f"{rec.name}: holds no .gguf file; re-import it")
    return store.checkout(rec.digest) / files[0]


def applies(store: Store, rec: Record, base: Record) -> list[str]:
    """Refuse ``rec`` unless it is an adapter of ``base``'s base identity; the warnings (quantization
    differs). A stored GGUF LoRA is judged by the PEFT adapter it was exported from."""
    return check_adapter_applies(store, peft_adapter(store, rec), base)


@contextmanager
def adapter_files(backend: Backend, rec: Record) -> Iterator[AdapterFiles]:
    """``rec`` in the form ``backend`` loads (converted when needed), for as long as the block runs."""
    store, fmt, wanted = backend.store, rec.manifest.format, backend.adapter_format
    if fmt == "peft":
        folder = store.checkout(rec.digest)
        template = adapter_chat_template(folder)
        if wanted == "peft":
            yield AdapterFiles(rec, folder, template)
            return
        if wanted == "gguf-lora":
            from owlkit.quantize.gguf_lora import export_gguf_lora

            with tempfile.TemporaryDirectory(prefix="owl-gguf-lora-") as tmp:
                out = Path(tmp) / f"{rec.short}.gguf"
                export_gguf_lora(folder, out, gguf_lora_config(store, backend.base))
                yield AdapterFiles(rec, out, template)
            return
    elif fmt == "gguf" and wanted == "gguf-lora":
        yield AdapterFiles(rec, gguf_path(store, rec), None)
        return
    raise Refused(
        f"{rec.name} is {with_article(fmt)} adapter; the {backend.name} backend applies "
        f"{'PEFT' if wanted == 'peft' else 'PEFT LoRA and GGUF LoRA'} adapters"
    )


def gguf_lora_config(store: Store, base: Record) -> dict[str, Any]:
    """The Llama config of a GGUF base (what its q/k rows are permuted with), to export a LoRA for it."""
    from owlkit.formats.gguf import read_gguf
    from owlkit.runtime.gguf_llama import llama_config_dict

    gguf = read_gguf(gguf_path(store, base))
    arch = gguf.metadata.get("general.architecture")
    if arch != "llama":
        raise Refused(
            f"{base.name} is a {arch!r} GGUF; PEFT adapters convert to GGUF LoRA for Llama "
            "models only: serve it with --backend torch"
        )
    return {**llama_config_dict(gguf), "architectures": ["LlamaForCausalLM"]}


def attach(backend: Backend, name: str, rec: Record, *, checked: list[str] | None = None) -> list[str]:
    """Load the stored adapter ``rec`` onto ``backend`` as ``name``; returns the warnings of the check
    that it applies to the backend's base (also added to ``backend.warnings``). ``checked``: that
    check's warnings when the caller already ran it (`applies`), so it runs once per adapter."""
    warnings = applies(backend.store, rec, backend.base) if checked is None else checked
    with adapter_files(backend, rec) as files:
        backend.add_adapter(name, files)
    backend.warnings += warnings
    return warnings

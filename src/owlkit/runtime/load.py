"""Loading a causal LM for inference: an HF folder (safetensors only) or a GGUF file, on CPU.

transformers does the loading, always with ``trust_remote_code=False``, ``local_files_only=True`` and
``use_kernels=False`` (a folder's custom code is never run; nothing is fetched, Hub kernels included), and
never from pickle checkpoints. Before loading, the memory the model will take is estimated and compared
with what the machine has, so an oversized model is refused with numbers instead of ending in the kernel's
OOM killer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, Refused, UsageError, missing_extra

BYTES_PER_ELEMENT = {"float32": 4, "bfloat16": 2, "float16": 2}
# What a loaded model costs beyond its weights: the Python libraries, allocator slack, activations of a
# short prompt. Measured here: about 350 MB above the fp32 weights while SmolLM2-135M loads from GGUF.
_OVERHEAD = 384 << 20


# For every transformers model load: no Hub kernels. transformers >= 5.20 "kernelizes" a loaded model with
# kernels from the Hub by default; owlkit runs only the code that is installed.
NO_HUB_KERNELS = {"use_kernels": False}


def keep_4bit_on_float_path(model: Any) -> Any:
    """Keep every bitsandbytes 4-bit layer of ``model`` on its dequantize-and-matmul path in the compute dtype;
    returns ``model``.

    bitsandbytes >= 0.49, on a CPU with AVX512-BF16, repacks a 4-bit layer's weights the first time it runs
    in eval mode without gradients, and from then on computes it in bfloat16, whatever the compute dtype,
    with a kernel that has no backward. That path (checked with 0.50.2) fails on layers whose input size is
    not a multiple of the quantization block (64) or whose output size is not a multiple of 32 (the tiny
    test models, stories260k's 172-wide MLP), and a QLoRA run that evaluated once trains on through it with
    no gradient reaching its LoRA weights. The switch is ``support_avx512bf16_for_cpu``, set per layer when
    it is built, so it is turned off per layer here: the same numbers on every CPU, evaluation equal to
    training, every shape, at about half the bfloat16 path's CPU speed (measured on SmolLM2-135M shapes)."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return model
    for module in model.modules():
        if isinstance(module, Linear4bit):
            module.support_avx512bf16_for_cpu = False
    return model


def gguf_architectures() -> list[str]:
    """The GGUF ``general.architecture`` values transformers can load (sorted)."""
    from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) | set(GGUF_CONFIG_ARCHS)
    return sorted(names - {"general", "tokenizer"})


def _squash(name: str) -> str:
    # transformers spells some architectures differently from llama.cpp: "qwen2moe" / "qwen2_moe".
    return name.lower().replace("_", "").replace("-", "")


def check_gguf_architecture(name: str, arch: object) -> None:
    """InvalidFile naming the architectures transformers loads, when ``arch`` is not one of them."""
    supported = gguf_architectures()
    known = {_squash(a) for a in supported}
    if not isinstance(arch, str) or not any(_squash(arch).startswith(k) for k in known):
        raise InvalidFile(
            f"{name}: architecture {arch!r} cannot be converted: transformers loads GGUF files of "
            f"{', '.join(supported)} only"
        )


def available_memory() -> int:
    """Bytes this process can still allocate: MemAvailable, capped by a cgroup v2 memory limit."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = 0
    try:  # containers: the cgroup limit binds before the host's free memory does
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        if limit != "max":
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def check_dtype(dtype: str, allowed: tuple[str, ...] = ("float32", "bfloat16", "float16")) -> Any:
    """The torch dtype for a name, or UsageError naming the allowed values."""
    if dtype not in allowed:
        raise UsageError(f"dtype {dtype!r} is not supported here; use one of: {', '.join(allowed)}")
    import torch

    return getattr(torch, dtype)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def gguf_load_bytes(gguf: Any, dtype: str) -> int:
    """Memory to load a GGUF dequantized: every parameter at ``dtype``, the largest tensor twice more in
    float32 (dequantization buffers), the file's pages (memory-mapped while loading), and the overhead."""
    largest = max((t.numel for t in gguf.tensors), default=0)
    file_size = gguf.path.stat().st_size
    return gguf.parameters * BYTES_PER_ELEMENT[dtype] + 2 * 4 * largest + file_size + _OVERHEAD


def refuse_if_too_big(name: str, needed: int, what: str) -> None:
    available = available_memory()
    if needed > available:
        raise Refused(
            f"{name}: {what} needs about {_gib(needed)} of memory and {_gib(available)} is available; "
            "free memory, pick a smaller dtype, or use a machine with more memory"
        )


def _hf_parameters(files: list[Path]) -> int:
    """Total elements in safetensors files, from their (validated) headers only."""
    from owlkit.formats.safetensors import read_safetensors_header

    return sum(read_safetensors_header(f).parameters for f in files)


def load_causal_lm(folder: Path, *, gguf_file: str | None = None, dtype: str = "float32") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode from an HF folder, or from ``folder/gguf_file``
    (dequantized to ``dtype``). Refuses (Refused) when the model would not fit in memory."""
    folder = Path(folder)
    torch_dtype = check_dtype(dtype)
    try:
        from transformers import AutoModelForCausalLM
    except ImportError:
        raise missing_extra("transformers", "ml", "running a model") from None
    common = {"local_files_only": True, "trust_remote_code": False}
    model_options = {**common, **NO_HUB_KERNELS}
    if gguf_file is not None:
        from owlkit.formats.gguf import read_gguf
        from owlkit.formats.tokenizer import load_gguf_tokenizer

        gguf = read_gguf(folder / gguf_file)
        check_gguf_architecture(gguf_file, gguf.metadata.get("general.architecture"))
        refuse_if_too_big(gguf_file, gguf_load_bytes(gguf, dtype), f"dequantizing it to {dtype}")
        model = _from_pretrained(
            AutoModelForCausalLM, gguf_file, folder, gguf_file=gguf_file, dtype=torch_dtype, **model_options
        )
        tokenizer = load_gguf_tokenizer(folder / gguf_file)
    else:
        weights = sorted(folder.glob("*.safetensors"))
        if not weights:
            raise Refused(
                f"{folder.name}: no .safetensors weights; owlkit never loads pickle checkpoints, "
                "convert them to safetensors first"
            )
        if not any(
            (folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
        ):
            raise InvalidFile(f"{folder.name}: has no tokenizer files; add the tokenizer of its base model")
        params = _hf_parameters(weights)
        refuse_if_too_big(
            folder.name, params * BYTES_PER_ELEMENT[dtype] + _OVERHEAD, f"loading it as {dtype}"
        )
        model = _from_pretrained(
            AutoModelForCausalLM,
            folder.name,
            folder,
            dtype=torch_dtype,
            use_safetensors=True,
            **model_options,
        )
        keep_4bit_on_float_path(model)  # a stored bnb-nf4 variant
        tokenizer = load_tokenizer(folder)
    model.eval()
    return model, tokenizer


def load_tokenizer(folder: Path) -> Any:
    """The tokenizer of an HF folder, with the same guards as the model (no remote code, no Hub)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise missing_extra("transformers", "ml", "loading a tokenizer") from None
    folder = Path(folder)
    return _from_pretrained(
        AutoTokenizer, folder.name, folder, local_files_only=True, trust_remote_code=False
    )


def _from_pretrained(cls: Any, name: str, folder: Path, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` with transformers' failures turned into one-line owlkit errors."""
    try:
        return cls.from_pretrained(str(folder), **kwargs)
    except ValueError as e:
        text = str(e)
        config = folder / "config.json"
        custom = config.is_file() and '"auto_map"' in config.read_text(encoding="utf-8", errors="replace")
        if custom or "trust_remote_code" in text:
            raise Refused(
                f"{name}: needs the model's own Python code (auto_map); owlkit never runs code from model files"
            ) from None
        raise InvalidFile(f"{name}: transformers cannot load it ({text.splitlines()[0]})") from None
    except (OSError, KeyError) as e:
        raise InvalidFile(f"{name}: transformers cannot load it ({str(e).splitlines()[0]})") from None

"""Load a causal LM for QLoRA with its linear weights quantized to 4-bit NF4 one tensor at a time.

transformers' own 4-bit load (``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))``)
quantizes tensor by tensor too, but it maps every safetensors shard at once and reads from the
mappings: every fp32 page it touches stays resident (file-backed RSS) until loading ends, so the whole
full-precision model does sit in memory, and the norm weights stay zero-copy views into the mappings for
the life of the model. Here each tensor is read with plain file reads into a fresh buffer, the linear
weights are quantized at once and their fp32 buffer freed, so at most one full-precision tensor (plus
the unquantized embeddings and output head, as with transformers) is in memory at any time.

The result is the model transformers builds, bit for bit: the same skeleton (``from_config`` on the meta
device), the same layers swapped for ``bnb.nn.Linear4bit`` by transformers' own quantizer (so the same
modules are skipped: the output head, tied weights, ``_keep_in_fp32_modules``), the same
``Params4bit(...).to("cpu")`` quantization of the same float32 values, rotary buffers recomputed by the
model's own ``_init_weights``, weights tied with the same symmetric rule, and the quantizer attached and
post-processed as ``from_pretrained`` does (``is_loaded_in_4bit``, ``quantization_method``,
``hf_quantizer``, ``config.quantization_config``), so PEFT's ``prepare_model_for_kbit_training`` and
``get_peft_model`` see no difference.

What this loader does not handle (checked from the headers, before any weight is read) is refused with
:class:`Refused`: checkpoint keys that transformers would rename or convert, missing weights, non-float
weights to quantize, buffers other than rotary ones, a config that is already quantized. With
``fallback=True`` (the default) those folders load through transformers' path instead, with a warning.
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from owlkit.adapt.memory import trim_heap
from owlkit.errors import InvalidFile, NotFound, Refused, missing_extra
from owlkit.runtime.load import NO_HUB_KERNELS, keep_4bit_on_float_path

if TYPE_CHECKING:
    import torch

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})  # what can be quantized
PLAIN_DTYPES = FLOAT_DTYPES | {"I64", "I32", "I16", "I8", "U8", "BOOL"}  # what is read as it is
# Older checkpoints hold the rotary frequencies as weights; transformers ignores them on load, as here.
IGNORED_UNEXPECTED = (r"rotary_emb\.inv_freq$",)


def nf4_config(compute_dtype: torch.dtype | None = None) -> Any:
    """The QLoRA quantization: 4-bit NF4 with double quantization, ``compute_dtype`` (float32 by default:
    CPU has no fast half-precision matmul, and float32 keeps the loop deterministic)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype or torch.float32,
    )


def load_nf4_causal_lm(
    base_dir: Path, *, compute_dtype: torch.dtype | None = None, fallback: bool = True
) -> Any:
    """The transformers causal LM of the HF folder ``base_dir``, on CPU, in eval mode, its linear layers
    (all but the output head) in 4-bit NF4 with double quantization, everything else in ``compute_dtype``
    (float32 by default), as ``from_pretrained(base_dir, dtype=compute_dtype, quantization_config=
    nf4_config(compute_dtype), device_map="cpu")`` gives it, without the full-precision model ever being
    in memory whole.

    Raises MissingDependency (no bitsandbytes or transformers), InvalidFile (a malformed safetensors file
    or index), NotFound (a shard the index names is absent), Refused (a folder this loader cannot stream,
    only when ``fallback`` is False; otherwise such a folder loads through transformers)."""
    import torch

    try:
        import bitsandbytes  # noqa: F401
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise missing_extra(e.name or "bitsandbytes", "ml", "owl tune --method qlora") from None
    base_dir = Path(base_dir)
    dtype = compute_dtype or torch.float32
    try:
        plan = _plan(base_dir, dtype)
    except Refused as e:
        if not fallback:
            raise
        warnings.warn(f"{e}; loading through transformers, which maps the whole checkpoint", stacklevel=2)
        model = AutoModelForCausalLM.from_pretrained(
            base_dir,
            trust_remote_code=False,
            dtype=dtype,
            quantization_config=nf4_config(dtype),
            device_map="cpu",
            **NO_HUB_KERNELS,
        )
    else:
        model = _load(plan, base_dir, dtype)
    return keep_4bit_on_float_path(model)


# ---------------------------------------------------------------- the plan: checked before any weight


def checkpoint_files(base_dir: Path) -> list[Path]:
    """The safetensors files of an HF folder, as transformers picks them: ``model.safetensors``, else the
    shards the index names (each a plain file name in the folder)."""
    if (base_dir / SINGLE).is_file():
        return [base_dir / SINGLE]
    index = base_dir / INDEX
    if not index.is_file():
        raise Refused(f"{base_dir.name}: no {SINGLE} or {INDEX}; only safetensors weights can be streamed")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise InvalidFile(
            f"{INDEX}: not a safetensors index with a weight_map; re-export the model"
        ) from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InvalidFile(f"{INDEX}: weight_map is not a mapping of names to files; re-export the model")
    files = []
    for name in sorted(set(weight_map.values())):
        if Path(name).name != name or not name.endswith(".safetensors"):
            raise InvalidFile(f"{INDEX}: names {name!r}, not a safetensors file in the folder; re-export it")
        if not (base_dir / name).is_file():
            raise NotFound(f"{base_dir.name}/{name}: named by {INDEX} but absent; re-download the model")
        files.append(base_dir / name)
    return files


@dataclass
class _Plan:
    """The meta-device model with its layers already swapped for Linear4bit, its quantizer, and the
    checkpoint's headers; ``expected`` is every key of the model's state dict, ``loaded`` every key the
    files will fill."""

    model: Any
    quantizer: Any
    headers: list[Any]
    expected: set[str]
    loaded: set[str]


def _plan(base_dir: Path, dtype: torch.dtype) -> _Plan:
    try:
        return _check(base_dir, dtype)
    except (AttributeError, TypeError) as e:  # transformers' loading internals moved (the tests pin them)
        import transformers

        raise Refused(
            f"transformers {transformers.__version__} is not the one this loader knows ({e})"
        ) from None


def _check(base_dir: Path, dtype: torch.dtype) -> _Plan:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers import AutoHfQuantizer

    from owlkit.formats.safetensors import read_safetensors_header

    name = base_dir.name
    if sys.byteorder != "little":
        raise Refused("safetensors data is little-endian and this machine is not")
    config = AutoConfig.from_pretrained(base_dir, trust_remote_code=False)
    if getattr(config, "quantization_config", None) is not None:
        raise Refused(f"{name}: its config.json already has a quantization_config")
    files = checkpoint_files(base_dir)
    headers = [read_safetensors_header(path) for path in files]

    try:
        with torch.device("meta"):  # the skeleton only: no weight is allocated
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    except ValueError as e:  # no causal LM class for this config
        raise Refused(f"{name}: transformers has no causal LM for it ({str(e).splitlines()[0]})") from None
    if dtype != torch.float32 and (model._keep_in_fp32_modules or model._keep_in_fp32_modules_strict):
        raise Refused(f"{name}: keeps some modules in float32, which only transformers' loader handles")
    # transformers' own quantizer picks and swaps the layers, exactly as in from_pretrained.
    quantizer = AutoHfQuantizer.from_config(nf4_config(dtype), pre_quantized=False)
    device_map = {"": "cpu"}
    quantizer.validate_environment(device_map=device_map)
    model.config.quantization_config = quantizer.quantization_config
    quantizer.preprocess_model(
        model=model,
        dtype=dtype,
        device_map=device_map,
        checkpoint_files=[str(f) for f in files],
        use_kernels=False,
    )

    expected = model.state_dict()  # meta tensors: names and shapes
    loaded: set[str] = set()
    for header in headers:
        for info in header.tensors:
            where = f"{header.path.name}: tensor {info.name!r}"
            if info.name not in expected:
                if any(re.search(p, info.name) for p in IGNORED_UNEXPECTED):
                    continue
                raise Refused(f"{where} is not a weight of {type(model).__name__} (renamed or extra)")
            if info.name in loaded:
                raise InvalidFile(f"{where} is in two shards; re-export the model")
            loaded.add(info.name)
            target = _module_and_name(model, info.name)
            if _quantized(*target):
                module = target[0]
                if info.dtype not in FLOAT_DTYPES:
                    raise Refused(f"{where} is {info.dtype}, not a float weight that can be quantized")
                stored = (module.out_features, module.in_features)
                if _transposed(module):  # GPT-2's Conv1D keeps (in, out)
                    stored = stored[::-1]
                if info.shape != stored:
                    raise Refused(f"{where} has shape {list(info.shape)}, not the layer's")
            elif info.dtype not in PLAIN_DTYPES:
                raise Refused(f"{where} is {info.dtype}, which this loader does not read")
            elif info.shape != tuple(expected[info.name].shape):
                raise Refused(f"{where} has shape {list(info.shape)}, not {list(expected[info.name].shape)}")
    missing = set(expected) - loaded
    for target_key, source_key in model.all_tied_weights_keys.items():
        if (target_key in loaded) != (source_key in loaded):  # tying fills the other one
            missing -= {target_key, source_key}
    if missing:
        raise Refused(f"{name}: the checkpoint lacks {len(missing)} weight(s), e.g. {sorted(missing)[0]!r}")
    for key, _ in model.named_non_persistent_buffers():
        owner = model.get_submodule(key.rpartition(".")[0])
        if "RotaryEmbedding" not in type(owner).__name__ or not hasattr(owner, "original_inv_freq"):
            raise Refused(f"{name}: buffer {key!r} is computed by a module this loader cannot re-run")
    return _Plan(model, quantizer, headers, set(expected), loaded)


def _module_and_name(model: Any, key: str) -> tuple[Any, str]:
    module_path, _, param = key.rpartition(".")
    return (model.get_submodule(module_path) if module_path else model), param


def _transposed(module: Any) -> bool:
    """A layer transformers built as Conv1D (weight stored transposed), swapped for Linear4bit."""
    from transformers.pytorch_utils import Conv1D

    source = getattr(module, "source_cls", None)
    return isinstance(source, type) and issubclass(source, Conv1D)


def _quantized(module: Any, param: str) -> bool:
    import bitsandbytes as bnb

    return isinstance(module, bnb.nn.Linear4bit) and param == "weight"


# ---------------------------------------------------------------- the load: one tensor at a time


def _load(plan: _Plan, base_dir: Path, dtype: torch.dtype) -> Any:
    import bitsandbytes as bnb
    import torch
    from transformers import GenerationConfig

    model = plan.model
    with torch.no_grad():
        for header in plan.headers:
            with open(header.path, "rb", buffering=0) as f:
                for info in header.tensors:  # in file order: sequential reads
                    if info.name not in plan.loaded:
                        continue
                    module, param = _module_and_name(model, info.name)
                    value = _read_tensor(f, info, header.path.name)
                    if _quantized(module, param):
                        # As transformers' Bnb4bitQuantize: cast to the load dtype (before the transpose, as
                        # there), then Params4bit with the placeholder's settings (blocksize, double quant,
                        # nf4, storage) quantizes on .to.
                        value = value.to(dtype)
                        if _transposed(module):
                            value = value.T
                        old = module.weight
                        new = bnb.nn.Params4bit(value, requires_grad=False, **old.__dict__).to("cpu")
                        module._is_hf_initialized = True
                    else:
                        # Cast to the dtype the skeleton holds, like transformers; requires_grad as it sets it.
                        value = value.to(getattr(module, param).dtype)
                        if param in module._buffers:
                            new = value
                        else:
                            new = torch.nn.Parameter(value, requires_grad=value.is_floating_point())
                    new._is_hf_initialized = True
                    setattr(module, param, new)
                    del value, new
                    # A quantized weight's fp32 buffer and temporaries are free now; glibc would keep
                    # them in its heap (memory.py), so hand them back before the next tensor.
                    trim_heap()

        # Non-persistent buffers (rotary frequencies) are computed, not stored: fill them the way
        # from_pretrained does, by the model's own _init_weights on the module that holds them.
        owners = {}
        for key, buffer in model.named_non_persistent_buffers():
            owner, name = _module_and_name(model, key)
            owner._buffers[name] = torch.empty_like(buffer, device="cpu")
            owners[id(owner)] = owner
        for owner in owners.values():
            model._init_weights(owner)

    # The same symmetric rule as from_pretrained: a tied pair with one side in the file shares it.
    model.tie_weights(missing_keys=plan.expected - plan.loaded, recompute_mapping=False)
    still_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if still_meta:  # the plan's checks should make this impossible
        raise Refused(f"{base_dir.name}: {still_meta[0]!r} was not loaded; load it without QLoRA")

    # What from_pretrained does after loading, in its order.
    model._weight_conversions = []  # no key was renamed or converted (the plan refuses those)
    model._is_hf_initialized = True
    model.eval()
    model.set_use_kernels(False, None)
    if model.can_generate() and (base_dir / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(base_dir)
    model.hf_quantizer = plan.quantizer
    plan.quantizer.postprocess_model(model)
    return model


def _read_tensor(f: Any, info: Any, file_name: str) -> torch.Tensor:
    """One tensor read with plain reads into a fresh tensor (never a view of a file mapping)."""
    import torch

    from owlkit.formats.safetensors import DTYPES

    out = torch.empty(info.shape, dtype=getattr(torch, DTYPES[info.dtype][1]))
    if info.nbytes:
        raw = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        f.seek(info.begin)
        done = 0
        while done < info.nbytes:
            n = f.readinto(raw[done:])
            if not n:
                raise InvalidFile(f"{file_name}: ends inside tensor {info.name!r}; re-download the model")
            done += n
    return out

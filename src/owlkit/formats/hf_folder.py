"""Hugging Face model folders (``save_pretrained`` output, Hub snapshots, the HF cache layout).

:func:`inspect_hf_folder` validates every file it would store (config.json, each safetensors header,
the shard index) and reads the model facts. The folder helpers below (file walk, JSON reading,
weights, license, origin) are shared with the adapter, pipeline and dataset readers.

Nothing here imports torch or transformers: a folder is understood from its JSON and safetensors
headers alone, and custom code (``auto_map``, ``*.py``) is recorded, never imported or executed.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, NotFound, Refused
from owlkit.formats.base import MODEL_FACT_KEYS, Inspected, LicenseFinding, Origin, digest_text
from owlkit.formats.card import read_card_checked
from owlkit.formats.pickles import PICKLE_SUFFIXES
from owlkit.formats.safetensors import DTYPES, SafetensorsHeader, read_safetensors_header

MAX_FILES = 100_000  # a model folder with more files is almost surely the wrong folder (a home directory)
MAX_CONFIG_BYTES = 16 << 20  # config.json, generation_config.json, adapter_config.json, model_index.json
MAX_TOKENIZER_CONFIG_BYTES = 64 << 20  # tokenizer_config.json can list 100k+ added tokens
MAX_INDEX_BYTES = 64 << 20  # *.safetensors.index.json: one line per tensor
MAX_TEMPLATE_BYTES = 1 << 20  # chat_template.jinja
LICENSE_HEAD_BYTES = 16 << 10  # license matching looks at the first few KB only

# Directories that hold caches or compiled code, never model content.
SKIPPED_DIRS = frozenset({"__pycache__"})
# Trainer state saved beside checkpoints: pickles that are not weights, so never stored or converted.
TRAINING_STATE = re.compile(
    r"^(?:training_args\.bin|optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state.*\.pth)$"
)
CUSTOM_CODE_WARNING = "custom code is recorded, never executed (trust_remote_code=False)"
GENERATION_KEYS = (
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "max_length",
    "max_new_tokens",
)


# --- files --------------------------------------------------------------------------------------------


@dataclass
class CacheSnapshot:
    """A path inside the Hugging Face cache: ``.../models--org--name/snapshots/<rev>/...``."""

    repo_dir: Path  # models--org--name
    repo_id: str  # org/name
    revision: str  # the snapshot's commit


def hf_cache_snapshot(path: Path) -> CacheSnapshot | None:
    """Where ``path`` sits in a Hugging Face cache repo, if it does (the path itself is not resolved:
    the layout is what the user pointed at)."""
    p = Path(os.path.abspath(path))
    chain = [p, *p.parents]
    for child, snapshots in itertools.pairwise(chain):
        repo_dir = snapshots.parent
        if snapshots.name == "snapshots" and re.match(r"^(?:models|datasets|spaces)--.", repo_dir.name):
            parts = repo_dir.name.split("--")[1:]
            if all(parts):
                return CacheSnapshot(repo_dir=repo_dir, repo_id="/".join(parts), revision=child.name)
    return None


def walk_folder(root: Path, warnings: list[str] | None = None) -> list[str]:
    """Every regular file under ``root`` as sorted posix paths relative to it.

    Hidden files and directories (``.git/``, ``.cache/``, ``.huggingface/``, ``.gitattributes``) and
    ``__pycache__/`` are skipped. A file symlink is followed only when it resolves inside the folder
    or inside the enclosing Hugging Face cache repo (``snapshots/<rev>/x`` -> ``../../blobs/<hash>``);
    any other symlink, and every directory symlink, is refused. Sockets, FIFOs and devices are left
    out with a warning (reading a FIFO would block the hasher).
    """
    root_abs = Path(os.path.abspath(root))
    if not root_abs.is_dir():
        raise NotFound(f"{root}: no such folder")
    allowed = [root_abs.resolve()]
    snapshot = hf_cache_snapshot(root_abs)
    if snapshot is not None:
        allowed.append(snapshot.repo_dir.resolve())

    def unreadable(err: OSError) -> None:
        raise InvalidFile(f"{err.filename}: cannot be read ({err.strerror}); check its permissions")

    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root_abs, onerror=unreadable):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            if d.startswith(".") or d in SKIPPED_DIRS:
                continue
            if (here / d).is_symlink():
                rel = (here / d).relative_to(root_abs).as_posix()
                raise Refused(f"{rel}: directory symlinks are not followed; replace it with a real folder")
            kept.append(d)
        dirnames[:] = kept
        for name in filenames:
            if name.startswith("."):
                continue
            full = here / name
            rel = full.relative_to(root_abs).as_posix()
            if full.is_symlink():
                target = full.resolve()
                if not any(target.is_relative_to(a) for a in allowed):
                    raise Refused(
                        f"{rel}: symlink to {target} points outside the folder; "
                        "copy the file into the folder or import its target directly"
                    )
                if not target.is_file():
                    raise InvalidFile(f"{rel}: symlink to {target}, which is not a file; re-download it")
            elif not full.is_file():
                if warnings is not None:
                    warnings.append(f"{rel}: not a regular file; left out")
                continue
            files.append(rel)
            if len(files) > MAX_FILES:
                raise Refused(f"{root}: more than {MAX_FILES} files; is this the right folder?")
    return sorted(files)


def read_json(root: Path, rel: str, *, limit: int = MAX_CONFIG_BYTES, want_object: bool = True) -> Any:
    """Parse ``root/rel`` as JSON, at most ``limit`` bytes; :class:`InvalidFile` names the file and
    line on any problem. With ``want_object`` the top level must be a JSON object."""
    path = root / rel
    try:
        size = path.stat().st_size
        if size > limit:
            raise InvalidFile(f"{rel}: {size} bytes, more than the {limit}-byte limit for this file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"{rel}: missing from {root}") from None
    except OSError as e:
        raise InvalidFile(f"{rel}: cannot be read ({e.strerror}); check its permissions") from None
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InvalidFile(f"{rel}: not UTF-8 text (byte {e.start}); re-download or fix it") from None
    except json.JSONDecodeError as e:
        raise InvalidFile(
            f"{rel}: not valid JSON (line {e.lineno}: {e.msg}); re-download or fix it"
        ) from None
    except RecursionError:
        raise InvalidFile(f"{rel}: JSON nested too deeply; re-download or fix it") from None
    if want_object and not isinstance(value, dict):
        raise InvalidFile(
            f"{rel}: expected a JSON object, found {type(value).__name__}; re-download or fix it"
        )
    return value


def read_text_head(path: Path, limit: int) -> str:
    """The first ``limit`` bytes of a text file, undecodable bytes replaced."""
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", errors="replace")


# --- weights ------------------------------------------------------------------------------------------


@dataclass
class Weights:
    """The weight files of a folder: validated safetensors headers, and what happens to pickles."""

    files: list[str]  # the folder's files minus pickles left out
    headers: dict[str, SafetensorsHeader] = field(default_factory=dict)  # every *.safetensors, validated
    pickle_weights: list[str] = field(default_factory=list)  # pickles that are the only weights
    left_out: list[str] = field(default_factory=list)
    indexes: dict[str, list[str]] = field(default_factory=dict)  # shard index -> the shards it names
    warnings: list[str] = field(default_factory=list)


def is_pickle_name(rel: str) -> bool:
    return Path(rel).suffix.lower() in PICKLE_SUFFIXES


def scan_weights(root: Path, files: list[str], *, group: Callable[[str], str] = lambda rel: "") -> Weights:
    """Validate every ``*.safetensors`` header and shard index; sort the pickles.

    Pickles whose ``group`` (the whole folder by default; a pipeline component's folder for diffusers)
    also has safetensors weights are left out of ``files`` with a warning: the safe copy is there.
    Pickles that are a group's only weights stay in ``files`` and are listed in ``pickle_weights``
    for the importer, which refuses them unless asked to convert. Trainer state pickles
    (``training_args.bin``, ``optimizer.pt``...) are always left out: they are not weights.
    """
    w = Weights(files=[])
    for rel in files:
        if rel.endswith(".safetensors"):
            w.headers[rel] = read_safetensors_header(root / rel)
    safe_groups = {group(rel) for rel in w.headers}
    for rel in files:
        if not is_pickle_name(rel):
            w.files.append(rel)
        elif TRAINING_STATE.match(rel.rsplit("/", 1)[-1]):
            w.left_out.append(rel)
            w.warnings.append(f"{rel}: trainer state (a pickle, not weights) left out")
        elif group(rel) in safe_groups:
            w.left_out.append(rel)
            w.warnings.append(f"{rel}: pickle left out; the safetensors weights beside it are stored instead")
        else:
            w.files.append(rel)
            w.pickle_weights.append(rel)
    present = set(files)
    for rel in files:
        if rel.endswith(".safetensors.index.json"):
            w.indexes[rel] = check_index(root, rel, present, w.headers)
    return w


def check_index(root: Path, rel: str, present: set[str], headers: dict[str, SafetensorsHeader]) -> list[str]:
    """Check a ``*.safetensors.index.json``: every shard it names is in the folder and holds the
    tensors mapped to it. Returns the shards (relative to ``root``), in the index's order."""
    index = read_json(root, rel, limit=MAX_INDEX_BYTES)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise InvalidFile(
            f"{rel}: 'weight_map' is not an object of tensor name -> shard file; re-download it"
        )
    base = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    shards: dict[str, set[str]] = {}
    for shard in dict.fromkeys(weight_map.values()):
        if shard.startswith("/") or ".." in shard.split("/") or "\\" in shard:
            raise InvalidFile(f"{rel}: shard path {shard!r} leaves the folder; re-download the index")
        if base + shard not in present:
            raise InvalidFile(
                f"{rel}: names shard {shard}, which is not in the folder; download the missing shard"
            )
        if base + shard not in headers:
            raise InvalidFile(f"{rel}: shard {shard} is not a .safetensors file; re-download the index")
        shards[shard] = {t.name for t in headers[base + shard].tensors}
    for tensor, shard in weight_map.items():
        if tensor not in shards[shard]:
            raise InvalidFile(
                f"{rel}: maps tensor {tensor!r} to {shard}, which does not hold it; "
                "the index and shards are from different versions, re-download them"
            )
    return [base + s for s in shards]


def weight_facts(headers: list[SafetensorsHeader]) -> tuple[int | None, str | None]:
    """(parameters, dtype) over several headers: total elements, and the torch-style name of the dtype
    holding most of them (ties: first seen)."""
    if not headers:
        return None, None
    counts: dict[str, int] = {}
    for h in headers:
        for t in h.tensors:
            counts[t.dtype] = counts.get(t.dtype, 0) + t.numel
    total = sum(counts.values())
    if total == 0:
        return 0, None
    return total, DTYPES[max(counts, key=lambda d: counts[d])][1]


# --- license, card, origin ---------------------------------------------------------------------------


@dataclass
class FolderTerms:
    """A folder's card, license and the files beside the license."""

    card: dict[str, Any]
    license: LicenseFinding
    side: dict[str, Any]
    warnings: list[str]


def folder_terms(root: Path, files: list[str]) -> FolderTerms:
    """Card metadata (README.md front matter), the license (card, then LICENSE-like files), and the
    NOTICE / USE_POLICY files recorded in side ("notice_files", "policy_files")."""
    from owlkit.formats.license import detect_license, is_license_file

    warnings: list[str] = []
    side: dict[str, Any] = {}
    card: dict[str, Any] = {}
    got = read_card_checked(root)
    if got is not None:
        card, _, problem = got
        if problem:
            warnings.append(f"README.md: {problem}; its metadata is ignored")
        side["card"] = card
    top = [rel for rel in files if "/" not in rel]
    texts = {rel: read_text_head(root / rel, LICENSE_HEAD_BYTES) for rel in top if is_license_file(rel)}
    notices = [rel for rel in top if rel.upper().startswith("NOTICE")]
    policies = [rel for rel in top if rel.upper().startswith("USE_POLICY")]
    if notices:
        side["notice_files"] = notices
    if policies:
        side["policy_files"] = policies
    if texts:
        side["license_files"] = sorted(texts)
    finding = detect_license(card_meta=card, license_files=texts)
    return FolderTerms(card=card, license=finding, side=side, warnings=warnings)


def folder_notes(
    path: Path, weights: Any, files: list[str], configs: dict[str, Any], warnings: list[str]
) -> tuple[list[str], dict[str, Any], FolderTerms]:
    """What every folder kind records beside its facts: pickle weights and left-out files, custom code
    (flagged, never run), the card and its license. Appends to ``warnings``; returns (flags, side, terms)."""
    flags: list[str] = []
    side: dict[str, Any] = {}
    if weights.pickle_weights:
        flags.append("pickle-weights")
        side["pickle_weights"] = weights.pickle_weights
    if weights.left_out:
        side["left_out"] = weights.left_out
    code, auto_maps = custom_code(files, configs)
    if code:
        flags.append("custom-code: " + ", ".join(code))
        warnings.append(CUSTOM_CODE_WARNING)
    if auto_maps:
        side["auto_map"] = auto_maps
    terms = folder_terms(path, weights.files)
    warnings += terms.warnings
    side.update(terms.side)
    if terms.card.get("base_model") is not None:
        side["card_base_model"] = terms.card["base_model"]
    return flags, side, terms


_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}")


def looks_like_repo_id(value: object) -> bool:
    """``org/name`` as the Hub spells repo ids (and not a relative path such as ``./x`` or ``a/..``)."""
    return (
        isinstance(value, str)
        and bool(_REPO_ID.fullmatch(value))
        and "--" not in value
        and ".." not in value
        and not value.endswith(".git")
    )


def folder_origin(path: Path, name_or_path: object = None) -> Origin:
    """The source path, plus the upstream repo: from the HF cache layout, else from a config's
    ``_name_or_path`` when it is a repo id. (A card's ``base_model`` names the parent, not this repo.)"""
    origin = Origin(source_path=str(Path(path).resolve()))
    snapshot = hf_cache_snapshot(path)
    if snapshot is not None:
        origin.repo_id, origin.revision = snapshot.repo_id, snapshot.revision
        origin.via = "Hugging Face cache layout"
    elif looks_like_repo_id(name_or_path):
        origin.repo_id, origin.via = str(name_or_path), "config.json _name_or_path"
    return origin


# --- the model folder --------------------------------------------------------------------------------


def _int(value: object) -> int | None:
    return value if type(value) is int else None


def _config_value(config: dict, *keys: str) -> Any:
    """The first key present, in the config or in its ``text_config`` (multimodal models keep the
    language model's shape there)."""
    for scope in (config, config.get("text_config")):
        if isinstance(scope, dict):
            for key in keys:
                if scope.get(key) is not None:
                    return scope[key]
    return None


def quantization_of(config: dict) -> str | None:
    """``quantization_config`` as one word: bitsandbytes as ``bnb-nf4``/``bnb-fp4``/``bnb-8bit``,
    anything else by its ``quant_method`` ("gptq", "awq", "fp8"...)."""
    q = config.get("quantization_config")
    if not isinstance(q, dict):
        return None
    method = q.get("quant_method")
    if method == "bitsandbytes" or (method is None and ("load_in_4bit" in q or "load_in_8bit" in q)):
        if q.get("load_in_4bit"):
            kind = q.get("bnb_4bit_quant_type")
            return f"bnb-{kind}" if isinstance(kind, str) else "bnb-4bit"
        return "bnb-8bit" if q.get("load_in_8bit") else "bnb"
    return method.lower() if isinstance(method, str) else "unknown"


def model_shapes(config: dict) -> dict[str, int | None]:
    heads = _int(_config_value(config, "num_attention_heads", "n_head"))
    kv_heads = _int(_config_value(config, "num_key_value_heads"))
    return {
        "layers": _int(_config_value(config, "num_hidden_layers", "n_layer")),
        "hidden": _int(_config_value(config, "hidden_size", "n_embd")),
        "intermediate": _int(_config_value(config, "intermediate_size", "n_inner")),
        "heads": heads,
        "kv_heads": kv_heads if kv_heads is not None else heads,
    }


def chat_template(root: Path, files: list[str], tokenizer_config: dict | None) -> tuple[str | None, dict]:
    """The chat template's digest and side facts. ``chat_template.jinja`` wins over the tokenizer
    config's ``chat_template`` (as in transformers); a list of named templates gives the "default"
    one's digest and keeps the names."""
    side: dict[str, Any] = {}
    named = sorted(
        rel for rel in files if rel.startswith("additional_chat_templates/") and rel.endswith(".jinja")
    )
    if named:
        side["chat_template_names"] = [rel.rsplit("/", 1)[1].removesuffix(".jinja") for rel in named]
    if "chat_template.jinja" in files:
        path = root / "chat_template.jinja"
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise InvalidFile(f"chat_template.jinja: larger than {MAX_TEMPLATE_BYTES} bytes; check the file")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFile("chat_template.jinja: not UTF-8 text; re-download or fix it") from None
        side["chat_template_source"] = "chat_template.jinja"
        return digest_text(text), side
    value = (tokenizer_config or {}).get("chat_template")
    if value is None and "chat_template.json" in files:
        value = read_json(root, "chat_template.json").get("chat_template")
        side["chat_template_source"] = "chat_template.json"
    elif value is not None:
        side["chat_template_source"] = "tokenizer_config.json"
    if isinstance(value, str):
        return digest_text(value), side
    if isinstance(value, list):
        templates = {
            t.get("name"): t.get("template")
            for t in value
            if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
        }
        side["chat_template_names"] = sorted(set(side.get("chat_template_names", [])) | set(templates))
        default = templates.get("default")
        return (digest_text(default) if default is not None else None), side
    side.pop("chat_template_source", None)
    return None, side


def custom_code(files: list[str], configs: dict[str, dict | None]) -> tuple[list[str], dict[str, Any]]:
    """What custom code a folder carries: its ``*.py`` files and the JSON files with ``auto_map``."""
    items = [rel for rel in files if rel.endswith(".py")]
    auto_maps = {
        name: cfg["auto_map"]
        for name, cfg in configs.items()
        if isinstance(cfg, dict) and cfg.get("auto_map")
    }
    items += [f"{name} auto_map" for name in auto_maps]
    return items, auto_maps


def generation_summary(root: Path, files: list[str]) -> dict[str, Any] | None:
    if "generation_config.json" not in files:
        return None
    gen = read_json(root, "generation_config.json")
    return {
        k: gen[k] for k in GENERATION_KEYS if k in gen and isinstance(gen[k], bool | int | float | str | list)
    }


def inspect_hf_folder(path: Path) -> Inspected:
    """A Hugging Face model folder as an artifact (kind "model", format "hf").

    Validates config.json (a JSON object), every safetensors header and the shard index; reads the
    model facts (:data:`~owlkit.formats.base.MODEL_FACT_KEYS`; ``tokenizer_digest`` is left None for
    the tokenizer reader), the license, the origin, and flags custom code and pickle-only weights.
    """
    path = Path(path)
    warnings: list[str] = []
    all_files = walk_folder(path, warnings)
    if "config.json" not in all_files:
        raise InvalidFile(f"{path}: no config.json, so not a Hugging Face model folder")
    config = read_json(path, "config.json")
    tokenizer_config = None
    if "tokenizer_config.json" in all_files:
        tokenizer_config = read_json(path, "tokenizer_config.json", limit=MAX_TOKENIZER_CONFIG_BYTES)

    weights = scan_weights(path, all_files)
    warnings += weights.warnings
    if "model.safetensors.index.json" in weights.indexes:
        main = weights.indexes["model.safetensors.index.json"]
    elif "model.safetensors" in weights.headers:
        main = ["model.safetensors"]
    else:
        main = sorted(weights.headers)
    parameters, dtype = weight_facts([weights.headers[rel] for rel in main])
    if dtype is None and not main:
        # Pickle-only folders: the config's declared dtype until conversion gives the real one.
        declared = config.get("torch_dtype", config.get("dtype"))
        dtype = declared if isinstance(declared, str) else None
    if not weights.headers and not weights.pickle_weights:
        warnings.append(f"{path.name}: no weight files (*.safetensors) found")

    template_digest, template_side = chat_template(path, all_files, tokenizer_config)
    architectures = config.get("architectures")
    model_type = config.get("model_type")
    tie = _config_value(config, "tie_word_embeddings")
    facts: dict[str, Any] = dict.fromkeys(MODEL_FACT_KEYS)
    facts.update(
        architecture=model_type.lower() if isinstance(model_type, str) else None,
        architectures=architectures
        if isinstance(architectures, list) and all(isinstance(a, str) for a in architectures)
        else None,
        parameters=parameters,
        dtype=dtype,
        quantization=quantization_of(config),
        vocab_size=_int(_config_value(config, "vocab_size")),
        context_length=_int(_config_value(config, "max_position_embeddings", "n_positions")),
        shapes=model_shapes(config),
        tie_word_embeddings=tie if isinstance(tie, bool) else None,
        chat_template_digest=template_digest,
        tokenizer_digest=None,
    )

    flags, side, terms = folder_notes(
        path, weights, all_files, {"config.json": config, "tokenizer_config.json": tokenizer_config}, warnings
    )
    side.update(template_side)
    generation = generation_summary(path, all_files)
    if generation is not None:
        side["generation_config"] = generation

    return Inspected(
        kind="model",
        format="hf",
        root=path,
        files=weights.files,
        facts=facts,
        license=terms.license,
        origin=folder_origin(path, config.get("_name_or_path")),
        flags=flags,
        warnings=warnings,
        side=side,
    )

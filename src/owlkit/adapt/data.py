"""Instruction data for tuning: load rows as conversations, render and tokenise them with loss on the
responses only, pack them into full sequences, and order them reproducibly.

Pipeline: :func:`load_examples` -> :func:`encode` (one conversation) -> :func:`pack` or :func:`pad_batch`,
with :func:`epoch_order` deciding the order of examples in each epoch.

Labels follow the transformers convention: ``labels`` sit at the same positions as ``input_ids`` (the
model shifts them by one) and are ``IGNORE`` (-100) wherever no loss is taken: system, user and template
text, padding, and the first token of every packed example.

Rendering:

- with a chat template (the base's own, as Jinja text), the conversation is rendered in owlkit's sandbox
  (:func:`owlkit.runtime.chat.render_chat`). Assistant spans are found by rendering prefixes: the
  conversation up to each assistant turn with ``add_generation_prompt=True`` (where the response starts)
  and then including that turn (where it ends, end-of-turn marker included). Each piece is tokenised on
  its own and the concatenation is checked, token by token, against tokenising the whole rendering. When
  they differ (a BPE merge across a boundary) or the prefixes are not prefixes of the whole rendering (a
  template that rewrites earlier turns), the safe fallback is used: the whole rendering is tokenised once
  and a token is trained on only when its characters lie entirely inside an assistant span (spans found
  by the prefix renders, or else by locating each assistant message's text in order). Tokens straddling
  a boundary are never trained on (except over the space that separates prompt and response), so no
  prompt text is ever learnt.
- without a template, or with ``template="alpaca"``: the Stanford Alpaca prompt (its two variants, with
  and without input), then the response and EOS; loss on the response and EOS. Prompt and response are
  tokenised separately, as generation will see them.

Packing: :func:`pack` gives position ids restarting at each example and segment lengths. transformers
5's Llama accepts either ``position_ids`` alone (it derives the block-diagonal mask from the restarts,
but only with ``use_cache=False``: with a cache, even one created by default in training mode, the
restarts are ignored and attention crosses examples) or a 4D mask from :func:`block_causal_mask`
(pass the position ids too, for the rotary embeddings).

BOS: added once, at the start, when the tokenizer adds one to plain text and the rendering does not
already begin with it.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from owlkit.errors import InvalidFile, NotFound, UsageError, missing_extra
from owlkit.formats.datasets import is_data_file

if TYPE_CHECKING:
    import torch

IGNORE = -100
ROLES = ("system", "user", "assistant")
# ShareGPT / Vicuna speaker names -> roles.
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
ALPACA_FORMATS = ("alpaca", "sharegpt", "openai-messages")
# Split names in file and folder names, as the Hugging Face datasets library reads a data folder
# (train.jsonl, test-00000.parquet, validation/part.json), plus "heldout".
SPLIT_WORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test", "testing", "eval", "evaluation", "heldout"),
}

# Stanford Alpaca's published prompt wording (tatsu-lab/stanford_alpaca, train.py PROMPT_DICT); the
# response follows "### Response:" directly, then EOS.
ALPACA_PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
)
ALPACA_PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:"
)


@dataclass(frozen=True)
class Turn:
    role: str  # system | user | assistant
    content: str


@dataclass(frozen=True)
class Conversation:
    """One training example. ``instruction`` and ``input`` keep an alpaca row's fields apart so the
    Alpaca prompt can place them; for other rows they are None. ``where`` names the source row."""

    turns: tuple[Turn, ...]
    where: str = ""
    instruction: str | None = None
    input: str | None = None

    def messages(self) -> list[dict[str, str]]:
        return [{"role": t.role, "content": t.content} for t in self.turns]


@dataclass
class SkipReport:
    """Rows and examples left out, counted by reason (``"alpaca: empty output": 3``)."""

    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    """The data files read, relative to the dataset folder."""
    truncated: int = 0
    dropped_overlong: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @property
    def total_skipped(self) -> int:
        return sum(self.skipped.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "kept": self.kept,
            "skipped": dict(sorted(self.skipped.items())),
            "truncated": self.truncated,
            "dropped_overlong": self.dropped_overlong,
        }


@dataclass
class Encoded:
    """One tokenised example: ``labels[i]`` is ``input_ids[i]`` where loss is taken, else IGNORE."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackedSeq:
    """Examples packed into one sequence of exactly ``seq_len`` tokens.

    ``position_ids`` restart at 0 at each example start; ``seq_ids`` number the examples (padding at the
    end gets its own id); ``seg_lengths`` are those segments' lengths, for :func:`block_causal_mask`;
    ``members`` are the packed examples' indices in the list given to :func:`pack`, in sequence order."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    seq_ids: list[int]
    seg_lengths: list[int]
    members: list[int] = field(default_factory=list)

    @property
    def real_tokens(self) -> int:
        """Tokens that belong to an example (not end padding)."""
        return sum(self.seg_lengths[: len(self.members)])


# ---------------------------------------------------------------- loading


def _jsonl_values(path: Path, rel: str) -> Iterator[Any]:
    """Each line's JSON value. A line that is not JSON breaks the file (InvalidFile naming the line); a
    value that is not an object is a bad row, counted by the caller."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                raise InvalidFile(f"{rel}: line {lineno} is not valid UTF-8 JSON; fix or remove it") from None


def _rows(path: Path, rel: str) -> Iterator[tuple[str, Any]]:
    """(where, row) for every row of one data file; rows are yielded as read, not checked."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for i, row in enumerate(_jsonl_values(path, rel), 1):
            yield f"{rel} row {i}", row
    elif suffix == ".json":
        try:
            value = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            # One object per line under a .json name (datasets.Dataset.to_json writes that).
            for i, row in enumerate(_jsonl_values(path, rel), 1):
                yield f"{rel} row {i}", row
            return
        if not isinstance(value, list):
            raise InvalidFile(f"{rel}: a JSON object, not a list of rows; give a list or JSON Lines")
        for i, row in enumerate(value, 1):
            yield f"{rel} row {i}", row
    elif suffix == ".csv":
        csv.field_size_limit(1 << 30)
        with open(path, newline="", encoding="utf-8") as f:
            for i, row in enumerate(csv.DictReader(f), 1):
                yield f"{rel} row {i}", row
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise missing_extra("pyarrow", "ml", f"reading {rel}") from None
        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                i += 1
                yield f"{rel} row {i}", row
    else:
        raise InvalidFile(
            f"{rel}: owl tune reads .jsonl, .json, .csv or .parquet rows, not {suffix or 'this'}"
        )


def _from_alpaca(row: dict) -> Conversation | str:
    instruction, input_, output = row.get("instruction"), row.get("input"), row.get("output")
    if not isinstance(instruction, str) or not isinstance(output, str):
        return "alpaca: instruction or output missing or not text"
    if input_ is not None and not isinstance(input_, str):
        return "alpaca: input is not text"
    if not instruction.strip():
        return "alpaca: empty instruction"
    if not output.strip():
        return "alpaca: empty output"
    input_ = input_ or ""
    user = f"{instruction}\n\n{input_}" if input_.strip() else instruction
    return Conversation(
        (Turn("user", user), Turn("assistant", output)), instruction=instruction, input=input_
    )


def _from_turns(
    turns: Any, role_key: str, text_key: str, names: dict[str, str], kind: str
) -> Conversation | str:
    if not isinstance(turns, list) or not turns:
        return f"{kind}: no list of turns"
    out: list[Turn] = []
    for t in turns:
        if not isinstance(t, dict):
            return f"{kind}: a turn is not an object"
        role, text = t.get(role_key), t.get(text_key)
        if not isinstance(role, str) or role.lower() not in names:
            return f"{kind}: unknown role"
        if not isinstance(text, str):
            return f"{kind}: turn text missing or not text"
        out.append(Turn(names[role.lower()], text))
    # Trailing non-assistant turns carry no loss; drop them rather than the row.
    while out and out[-1].role != "assistant":
        out.pop()
    if not out:
        return f"{kind}: no assistant turn"
    if any(t.role == "assistant" and not t.content.strip() for t in out):
        return f"{kind}: empty assistant response"
    return Conversation(tuple(out))


def to_conversation(row: Any, data_format: str) -> Conversation | str:
    """A row as a conversation, or the reason it cannot be one."""
    if not isinstance(row, dict):
        return f"{data_format}: row is not an object"
    if data_format == "alpaca":
        return _from_alpaca(row)
    if data_format == "sharegpt":
        return _from_turns(row.get("conversations"), "from", "value", SHAREGPT_ROLES, "sharegpt")
    if data_format == "openai-messages":
        return _from_turns(row.get("messages"), "role", "content", {r: r for r in ROLES}, "openai-messages")
    raise UsageError(
        f"data format {data_format!r} cannot be tuned on; use one of {', '.join(ALPACA_FORMATS)}"
    )


def split_of(rel: str) -> str | None:
    """The split a data file belongs to by its path (``train.jsonl`` -> train), or None."""
    for part in rel.lower().split("/"):
        for split, words in SPLIT_WORDS.items():
            for word in words:
                if part.startswith(word) and (len(part) == len(word) or part[len(word)] in "-._ 0123456789"):
                    return split
    return None


def select_split(rels: list[str], split: str | None) -> list[str]:
    """The data files of ``split``; with no split-named file at all, every file is training data."""
    if split is None:
        return rels
    if split not in SPLIT_WORDS:
        raise UsageError(f"split {split!r}: use one of {', '.join(SPLIT_WORDS)}")
    named = {r: split_of(r) for r in rels}
    if split == "train" and not any(named.values()):
        return rels
    return [r for r in rels if named[r] == split]


def load_examples(
    folder_or_file: Path, data_format: str, split: str | None = None
) -> tuple[list[Conversation], SkipReport]:
    """Every usable row of a data file, or of a folder's data files of ``split`` (in sorted path order;
    see :func:`select_split`), as a conversation. Bad rows are skipped and counted by reason; no usable
    row at all raises InvalidFile."""
    path = Path(folder_or_file)
    if data_format not in ALPACA_FORMATS:
        raise UsageError(
            f"{path.name}: data format {data_format!r} cannot be tuned on; use one of {', '.join(ALPACA_FORMATS)}"
        )
    if not path.exists():
        raise NotFound(f"{path}: no such file or folder")
    if path.is_file():
        files = [(path, path.name)]
    else:
        rels = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
        rels = [r for r in rels if is_data_file(r) and not r.lower().endswith(".txt")]
        chosen = select_split(rels, split)
        if rels and not chosen:
            raise InvalidFile(
                f"{path.name}: no {split} split among its data files ({', '.join(rels[:5])}); "
                f"name a file {SPLIT_WORDS[split or 'train'][0]}.jsonl or point at the file itself"
            )
        files = [(path / r, r) for r in chosen]
    report = SkipReport(files=[rel for _, rel in files])
    out: list[Conversation] = []
    for file, rel in files:
        for where, row in _rows(file, rel):
            conv = to_conversation(row, data_format)
            if isinstance(conv, str):
                report.skip(conv)
                continue
            out.append(Conversation(conv.turns, where, conv.instruction, conv.input))
    report.kept = len(out)
    if not out:
        why = f"; skipped: {dict(report.skipped)}" if report.skipped else ""
        raise InvalidFile(
            f"{path.name}: no usable {data_format} rows{why}; give rows with a non-empty response"
        )
    return out, report


# ---------------------------------------------------------------- encoding


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    return bos is not None and list(tokenizer("a", add_special_tokens=True)["input_ids"][:1]) == [bos]


def _alpaca_pieces(conv: Conversation) -> list[tuple[str, bool]]:
    """(text, trained) pieces: prompt(s) untrained, responses + EOS trained."""
    if conv.instruction is not None:
        pairs = [(conv.instruction, conv.input or "", conv.turns[-1].content)]
    else:
        # A chat conversation: system text leads the first instruction; each user turn is an instruction.
        system = "\n\n".join(t.content for t in conv.turns if t.role == "system")
        pairs, pending = [], system
        for t in conv.turns:
            if t.role == "user":
                pending = f"{pending}\n\n{t.content}" if pending else t.content
            elif t.role == "assistant":
                pairs.append((pending, "", t.content))
                pending = ""
    pieces: list[tuple[str, bool]] = []
    for instruction, input_, response in pairs:
        template = ALPACA_PROMPT_INPUT if input_.strip() else ALPACA_PROMPT_NO_INPUT
        pieces.append((template.format(instruction=instruction, input=input_), False))
        pieces.append((response, True))
        pieces.append(("", True))  # placeholder for EOS, added as an id
    return pieces


def _encode_alpaca(conv: Conversation, tokenizer: Any) -> tuple[list[int], list[int]]:
    if tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no EOS token; the Alpaca format ends each response with one")
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in _alpaca_pieces(conv):
        piece = _ids(tokenizer, text) if text else [tokenizer.eos_token_id]
        ids += piece
        labels += piece if trained else [IGNORE] * len(piece)
    return ids, labels


def _render(template: str, messages: list[dict], tokenizer: Any, gen: bool) -> str:
    from owlkit.runtime.chat import render_chat

    return render_chat(
        template,
        messages,
        add_generation_prompt=gen,
        bos_token=tokenizer.bos_token or "",
        eos_token=tokenizer.eos_token or "",
    )


def _spans_by_prefix(
    template: str, conv: Conversation, tokenizer: Any, full: str
) -> list[tuple[int, int]] | None:
    """Character spans of the assistant turns from prefix renders, or None when a prefix is not one."""
    msgs = conv.messages()
    spans: list[tuple[int, int]] = []
    last = 0
    for i, t in enumerate(conv.turns):
        if t.role != "assistant":
            continue
        start_text = _render(template, msgs[:i], tokenizer, True)
        end_text = _render(template, msgs[: i + 1], tokenizer, False)
        if not (full.startswith(start_text) and full.startswith(end_text)):
            return None
        start, end = len(start_text), len(end_text)
        if not last <= start < end:
            return None
        spans.append((start, end))
        last = end
    return spans


def _spans_by_search(conv: Conversation, full: str) -> list[tuple[int, int]] | None:
    spans, cursor = [], 0
    for t in conv.turns:
        if t.role != "assistant":
            continue
        at = full.find(t.content, cursor)
        if at < 0:
            return None
        spans.append((at, at + len(t.content)))
        cursor = at + len(t.content)
    return spans


def _encode_chat(conv: Conversation, tokenizer: Any, template: str) -> tuple[list[int], list[int]] | None:
    full = _render(template, conv.messages(), tokenizer, False)
    spans = _spans_by_prefix(template, conv, tokenizer, full)
    whole = _ids(tokenizer, full)
    if spans is not None:
        ids: list[int] = []
        labels: list[int] = []
        cursor = 0
        for start, end in spans:
            prompt, response = _ids(tokenizer, full[cursor:start]), _ids(tokenizer, full[start:end])
            ids += prompt + response
            labels += [IGNORE] * len(prompt) + response
            cursor = end
        tail = _ids(tokenizer, full[cursor:])
        ids += tail
        labels += [IGNORE] * len(tail)
        if ids == whole:
            return ids, labels
    else:
        spans = _spans_by_search(conv, full)
        if spans is None:
            return None
    # Fallback: the canonical tokenisation of the whole text; train only tokens wholly inside a span.
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    labels = [IGNORE] * len(enc["input_ids"])
    for k, (a, b) in enumerate(enc["offset_mapping"]):
        # A word token carries the space before it ("▁Once" for " Once"); that space separates prompt
        # from response and is no prompt text, so it does not stop the token from being trained.
        start = a + len(full[a:b]) - len(full[a:b].lstrip())
        if b > start and any(s <= start and b <= e for s, e in spans):
            labels[k] = enc["input_ids"][k]
    return list(enc["input_ids"]), labels


def encode(
    conv: Conversation,
    tokenizer: Any,
    *,
    template: str | None,
    max_len: int,
    overlong: Literal["truncate", "drop"] = "truncate",
    report: SkipReport | None = None,
) -> Encoded | None:
    """Tokenise one conversation with loss on assistant tokens only (see the module doc).

    ``template``: a chat template's Jinja text, or None / ``"alpaca"`` for the Alpaca prompt. Returns None
    (counted in ``report``) when the example is dropped: overlong with ``overlong="drop"``, no trained
    token left after truncation, or a template whose rendering hides the responses."""
    if overlong not in ("truncate", "drop"):
        raise UsageError(f"overlong={overlong!r}: use truncate or drop")
    report = report if report is not None else SkipReport()
    if template is None or template == "alpaca":
        ids, labels = _encode_alpaca(conv, tokenizer)
        rendered_bos = False
    else:
        pair = _encode_chat(conv, tokenizer, template)
        if pair is None:
            report.skip("chat template: responses not found in the rendering")
            return None
        ids, labels = pair
        rendered_bos = bool(ids) and ids[0] == tokenizer.bos_token_id
    if _adds_bos(tokenizer) and not rendered_bos:
        ids, labels = [tokenizer.bos_token_id, *ids], [IGNORE, *labels]
    truncated = False
    if len(ids) > max_len:
        if overlong == "drop":
            report.dropped_overlong += 1
            return None
        ids, labels, truncated = ids[:max_len], labels[:max_len], True
        if all(lab == IGNORE for lab in labels):
            report.skip("overlong: no response left after truncation")
            return None
        report.truncated += 1
    return Encoded(ids, labels, truncated)


def encode_all(
    convs: Sequence[Conversation],
    tokenizer: Any,
    *,
    template: str | None,
    max_len: int,
    overlong: Literal["truncate", "drop"] = "truncate",
    report: SkipReport | None = None,
) -> list[Encoded]:
    """:func:`encode` over many conversations, dropping the Nones (counted in ``report``)."""
    out = []
    for conv in convs:
        enc = encode(conv, tokenizer, template=template, max_len=max_len, overlong=overlong, report=report)
        if enc is not None:
            out.append(enc)
    return out


# ---------------------------------------------------------------- batching


def pack(encoded: Sequence[Encoded], seq_len: int, pad_id: int = 0) -> list[PackedSeq]:
    """Greedy first-fit in input order: each example goes into the first sequence with room for it
    (a new one when none has). Deterministic for a given order. Every sequence is padded to ``seq_len``
    (pad id, label IGNORE, its own segment). The first label of each example is set to IGNORE so no
    example's first token is predicted from the previous example's last one."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i, enc in enumerate(encoded):
        if len(enc) > seq_len:
            raise UsageError(
                f"an example of {len(enc)} tokens does not fit seq_len {seq_len}; encode with max_len"
            )
        if not len(enc):
            continue
        for b, free in enumerate(room):
            if free >= len(enc):
                bins[b].append(i)
                room[b] -= len(enc)
                break
        else:
            bins.append([i])
            room.append(seq_len - len(enc))
    out = []
    for members, free in zip(bins, room, strict=True):
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        seq_ids: list[int] = []
        lengths: list[int] = []
        for k, enc in enumerate(encoded[i] for i in members):
            ids += enc.input_ids
            labels += [IGNORE, *enc.labels[1:]]
            pos += range(len(enc))
            seq_ids += [k] * len(enc)
            lengths.append(len(enc))
        if free:
            ids += [pad_id] * free
            labels += [IGNORE] * free
            pos += range(free)
            seq_ids += [len(members)] * free
            lengths.append(free)
        out.append(PackedSeq(ids, labels, pos, seq_ids, lengths, members))
    return out


def block_causal_mask(seg_lengths: Sequence[int], seq_len: int) -> torch.Tensor:
    """A (seq_len, seq_len) bool mask, True where query i may attend key j: same segment and j <= i.
    For transformers' models unsqueeze to (batch, 1, seq_len, seq_len) (sdpa takes booleans)."""
    import torch

    if sum(seg_lengths) != seq_len:
        raise UsageError(f"segment lengths sum to {sum(seg_lengths)}, not seq_len {seq_len}")
    seg = torch.repeat_interleave(
        torch.arange(len(seg_lengths)), torch.tensor(list(seg_lengths), dtype=torch.long)
    )
    same = seg[:, None] == seg[None, :]
    return same & torch.ones(seq_len, seq_len, dtype=torch.bool).tril()


def pad_batch(encoded: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad examples to the longest: ``input_ids``, ``labels`` (IGNORE on padding) and
    ``attention_mask`` (1 on real tokens), as (batch, length) long tensors."""
    import torch

    width = max((len(e) for e in encoded), default=0)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e)
        ids[i, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[i, :n] = torch.tensor(e.labels, dtype=torch.long)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """A permutation of range(n) fixed by (seed, epoch): numpy's PCG64 seeded with both numbers, so it is
    the same on every machine and run and independent of hash order."""
    import numpy as np

    return [int(i) for i in np.random.Generator(np.random.PCG64([seed, epoch])).permutation(n)]

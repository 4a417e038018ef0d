"""owlkit.adapt.data: loading instruction rows, response-only labels (token by token), packing without
attention or positions crossing examples, and seeded data order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owlkit.adapt.data import (
    ALPACA_PROMPT_INPUT,
    ALPACA_PROMPT_NO_INPUT,
    IGNORE,
    Conversation,
    Encoded,
    SkipReport,
    Turn,
    block_causal_mask,
    encode,
    encode_all,
    epoch_order,
    load_examples,
    pack,
    pad_batch,
    split_of,
)
from owlkit.errors import InvalidFile, UsageError
from owltest import STORIES, build_tokenizer, need


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(folder)
    return AutoTokenizer.from_pretrained(folder)


def ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CHAT = Conversation(
    (
        Turn("system", "Be an owl."),
        Turn("user", "Once upon"),
        Turn("assistant", "a time there"),
        Turn("user", "The owl"),
        Turn("assistant", "read model files."),
    )
)


# ---------------------------------------------------------------- loading


def test_alpaca_rows_bad_ones_counted(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Say hi", "input": "", "output": "hi"},
        {"instruction": "Add", "input": "1 2", "output": "3"},
        {"instruction": "No output"},
        {"instruction": "Empty", "output": "   "},
        {"instruction": 5, "output": "x"},
        {"instruction": "Bad input", "input": ["x"], "output": "x"},
        ["not", "an", "object"],
    ]
    convs, report = load_examples(write_jsonl(tmp_path / "a.jsonl", rows), "alpaca")
    assert [c.turns for c in convs] == [
        (Turn("user", "Say hi"), Turn("assistant", "hi")),
        (Turn("user", "Add\n\n1 2"), Turn("assistant", "3")),
    ]
    assert (convs[1].instruction, convs[1].input) == ("Add", "1 2")
    assert convs[0].where == "a.jsonl row 1"
    assert report.kept == 2
    assert report.skipped == {
        "alpaca: instruction or output missing or not text": 2,
        "alpaca: empty output": 1,
        "alpaca: input is not text": 1,
        "alpaca: row is not an object": 1,
    }


def test_sharegpt_and_messages(tmp_path: Path) -> None:
    share = [
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "human", "value": "Q"},
                {"from": "gpt", "value": "A"},
            ]
        },
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": ""}]},
        {"conversations": [{"from": "alien", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
        {"conversations": "nope"},
    ]
    convs, report = load_examples(write_jsonl(tmp_path / "s.jsonl", share), "sharegpt")
    assert [t.role for t in convs[0].turns] == ["system", "user", "assistant"]
    assert report.kept == 1 and report.total_skipped == 4
    msgs = [
        {
            "messages": [
                {"role": "user", "content": "Q"},
                {"role": "assistant", "content": "A"},
                {"role": "user", "content": "tail"},
            ]
        },
        {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": None}]},
    ]
    (tmp_path / "m.json").write_text(json.dumps(msgs))
    convs, report = load_examples(tmp_path / "m.json", "openai-messages")
    # A trailing user turn carries no loss and is dropped; a null response is a counted skip.
    assert convs[0].turns == (Turn("user", "Q"), Turn("assistant", "A"))
    assert report.skipped == {"openai-messages: turn text missing or not text": 1}


def test_folder_is_read_in_path_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [{"instruction": "b", "output": "2"}])
    write_jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "1"}])
    (tmp_path / "README.md").write_text("# card\n")
    convs, _ = load_examples(tmp_path, "alpaca")
    assert [c.instruction for c in convs] == ["a", "b"]


@pytest.mark.parametrize(
    ("rel", "split"),
    [
        ("train.jsonl", "train"),
        ("data/train-00000-of-00002.parquet", "train"),
        ("validation/part.json", "validation"),
        ("dev.csv", "validation"),
        ("test_v2.jsonl", "test"),
        ("heldout.jsonl", "test"),
        ("trainer.jsonl", None),  # a word that merely begins with "train"
        ("contest.jsonl", None),
        ("a.jsonl", None),
    ],
)
def test_split_of_follows_hf_file_naming(rel: str, split: str | None) -> None:
    assert split_of(rel) == split


def test_folder_splits_train_and_test_apart(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"instruction": "t", "output": "1"}])
    write_jsonl(tmp_path / "test.jsonl", [{"instruction": "held", "output": "2"}])
    train, report = load_examples(tmp_path, "alpaca", split="train")
    assert [c.instruction for c in train] == ["t"] and report.files == ["train.jsonl"]
    test, _ = load_examples(tmp_path, "alpaca", split="test")
    assert [c.instruction for c in test] == ["held"]
    with pytest.raises(InvalidFile, match="no validation split"):
        load_examples(tmp_path, "alpaca", split="validation")
    # Without split-named files, a folder is all training data and has no test split.
    (tmp_path / "train.jsonl").rename(tmp_path / "a.jsonl")
    (tmp_path / "test.jsonl").rename(tmp_path / "b.jsonl")
    assert len(load_examples(tmp_path, "alpaca", split="train")[0]) == 2
    with pytest.raises(InvalidFile, match="no test split"):
        load_examples(tmp_path, "alpaca", split="test")


def test_empty_or_all_bad_data_is_one_line_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InvalidFile, match=r"empty\.jsonl: no usable alpaca rows") as e:
        load_examples(empty, "alpaca")
    assert "\n" not in str(e.value)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x", "output": ""}])
    with pytest.raises(InvalidFile, match=r"bad\.jsonl: .*empty output"):
        load_examples(bad, "alpaca")
    with pytest.raises(UsageError):
        load_examples(bad, "text")


# ---------------------------------------------------------------- encoding


def test_chat_template_labels_token_by_token(tok) -> None:
    enc = encode(CHAT, tok, template=tok.chat_template, max_len=512)
    # The tiny template renders <|role|>content</s> per turn: build the expectation piece by piece.
    pieces = [
        ("<|system|>Be an owl.</s><|user|>Once upon</s><|assistant|>", False),
        ("a time there</s>", True),
        ("<|user|>The owl</s><|assistant|>", False),
        ("read model files.</s>", True),
    ]
    want_ids = [i for text, _ in pieces for i in ids(tok, text)]
    want_labels = [i if trained else IGNORE for text, trained in pieces for i in ids(tok, text)]
    assert enc.input_ids == want_ids == ids(tok, "".join(text for text, _ in pieces))
    assert enc.labels == want_labels
    trained = [i for i in enc.labels if i != IGNORE]
    assert tok.decode(trained) == "a time there</s>read model files.</s>"
    assert not enc.truncated


def test_template_that_rewrites_history_uses_safe_fallback(tok) -> None:
    # Prefix renders are not prefixes of the whole (the count changes): spans are found by content.
    template = (
        "{{ messages|length }}"
        + "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    )
    enc = encode(CHAT, tok, template=template, max_len=512)
    assert enc.input_ids == ids(tok, "5" + "".join(f"<|{t.role}|>{t.content}</s>" for t in CHAT.turns))
    trained = [i for i in enc.labels if i != IGNORE]
    assert trained == ids(tok, "a time there") + ids(tok, "read model files.")
    assert all(lab in (IGNORE, i) for i, lab in zip(enc.input_ids, enc.labels, strict=True))


def test_template_hiding_responses_is_counted(tok) -> None:
    report = SkipReport()
    assert encode(CHAT, tok, template="{{ 'nothing' }}", max_len=64, report=report) is None
    assert report.skipped == {"chat template: responses not found in the rendering": 1}


def test_alpaca_prompt_both_variants(tok) -> None:
    eos = tok.eos_token_id
    no_input = Conversation(
        (Turn("user", "Say owl"), Turn("assistant", "owl")), instruction="Say owl", input=""
    )
    with_input = Conversation(
        (Turn("user", "Add\n\n1 2"), Turn("assistant", "3")), instruction="Add", input="1 2"
    )
    for conv, prompt in (
        (no_input, ALPACA_PROMPT_NO_INPUT.format(instruction="Say owl")),
        (with_input, ALPACA_PROMPT_INPUT.format(instruction="Add", input="1 2")),
    ):
        for template in (None, "alpaca"):
            enc = encode(conv, tok, template=template, max_len=512)
            p, r = ids(tok, prompt), ids(tok, conv.turns[-1].content)
            assert enc.input_ids == p + r + [eos]
            assert enc.labels == [IGNORE] * len(p) + r + [eos]
    assert ALPACA_PROMPT_NO_INPUT.startswith(
        "Below is an instruction that describes a task. Write a response"
    )
    assert ALPACA_PROMPT_INPUT.endswith("### Input:\n{input}\n\n### Response:")


def test_alpaca_template_on_multi_turn_masks_every_user_turn(tok) -> None:
    enc = encode(CHAT, tok, template="alpaca", max_len=1024)
    first = ALPACA_PROMPT_NO_INPUT.format(instruction="Be an owl.\n\nOnce upon")
    second = ALPACA_PROMPT_NO_INPUT.format(instruction="The owl")
    eos = tok.eos_token_id
    a, b = ids(tok, "a time there"), ids(tok, "read model files.")
    assert enc.input_ids == ids(tok, first) + a + [eos] + ids(tok, second) + b + [eos]
    assert [i for i in enc.labels if i != IGNORE] == [*a, eos, *b, eos]


def test_overlong_truncate_and_drop_are_counted(tok) -> None:
    full = encode(CHAT, tok, template=tok.chat_template, max_len=512)
    report = SkipReport()
    cut = len(full) - 3
    enc = encode(CHAT, tok, template=tok.chat_template, max_len=cut, report=report)
    assert enc.input_ids == full.input_ids[:cut] and enc.labels == full.labels[:cut] and enc.truncated
    assert encode(CHAT, tok, template=tok.chat_template, max_len=cut, overlong="drop", report=report) is None
    # Cut before any response: nothing to learn, skipped.
    assert encode(CHAT, tok, template=tok.chat_template, max_len=4, report=report) is None
    assert (report.truncated, report.dropped_overlong) == (1, 1)
    assert report.skipped == {"overlong: no response left after truncation": 1}
    assert len(encode_all([CHAT, CHAT], tok, template=None, max_len=cut, overlong="drop")) == 0


@pytest.mark.realmodel
def test_stories260k_alpaca_adds_bos_once() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(need(STORIES))
    assert tok.bos_token_id is not None
    conv = Conversation(
        (Turn("user", "Tell a story\n\nabout a cat"), Turn("assistant", "Once upon a time, a cat sat.")),
        instruction="Tell a story",
        input="about a cat",
    )
    enc = encode(conv, tok, template="alpaca", max_len=512)
    p = ids(tok, ALPACA_PROMPT_INPUT.format(instruction="Tell a story", input="about a cat"))
    r = ids(tok, "Once upon a time, a cat sat.")
    assert enc.input_ids == [tok.bos_token_id, *p, *r, tok.eos_token_id]
    assert enc.labels == [IGNORE] * (1 + len(p)) + r + [tok.eos_token_id]
    assert enc.input_ids.count(tok.bos_token_id) == 1


# ---------------------------------------------------------------- packing and batching


def fake(n: int, start: int) -> Encoded:
    # A prompt token then trained tokens: labels equal ids except the first.
    toks = list(range(start, start + n))
    return Encoded(toks, [IGNORE, *toks[1:]])


def test_pack_first_fit_in_order() -> None:
    examples = [fake(6, 10), fake(5, 20), fake(3, 30), fake(2, 40)]
    packed = pack(examples, seq_len=8, pad_id=0)
    assert [p.seg_lengths for p in packed] == [[6, 2], [5, 3]]
    assert [p.members for p in packed] == [[0, 3], [1, 2]]
    assert [p.real_tokens for p in packed] == [8, 8]
    p = packed[1]
    assert p.input_ids == [20, 21, 22, 23, 24, 30, 31, 32]
    assert p.position_ids == [0, 1, 2, 3, 4, 0, 1, 2]
    assert p.seq_ids == [0, 0, 0, 0, 0, 1, 1, 1]
    assert p.labels == [IGNORE, 21, 22, 23, 24, IGNORE, 31, 32]
    # Padding: pad id, IGNORE, its own segment and positions.
    tail = pack([fake(5, 50)], seq_len=8, pad_id=7)[0]
    assert tail.input_ids[5:] == [7, 7, 7] and tail.labels[5:] == [IGNORE] * 3
    assert tail.position_ids == [0, 1, 2, 3, 4, 0, 1, 2] and tail.seg_lengths == [5, 3]
    assert tail.members == [0] and tail.real_tokens == 5
    assert pack(examples, 8) == packed  # deterministic
    with pytest.raises(UsageError, match="does not fit seq_len"):
        pack([fake(9, 0)], 8)


def test_pack_first_label_never_crosses_examples() -> None:
    # Even an example whose first token is trained gets IGNORE there once packed.
    a, b = Encoded([1, 2], [1, 2]), Encoded([3, 4], [3, 4])
    assert pack([a, b], 4)[0].labels == [IGNORE, 2, IGNORE, 4]


def test_block_causal_mask_is_block_diagonal_causal() -> None:
    lengths = [3, 1, 4]
    mask = block_causal_mask(lengths, 8)
    seg = [k for k, n in enumerate(lengths) for _ in range(n)]
    for i in range(8):
        for j in range(8):
            assert bool(mask[i, j]) == (seg[i] == seg[j] and j <= i), (i, j)
    with pytest.raises(UsageError):
        block_causal_mask([3, 4], 8)


def test_packed_forward_equals_separate_forwards() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(1)
    examples = [
        Encoded(t, t) for t in (torch.randint(3, 96, (n,), generator=gen).tolist() for n in (7, 5, 9, 4))
    ]
    packed = pack(examples, seq_len=16, pad_id=0)
    assert len(packed) == 2
    with torch.no_grad():
        separate = [model(torch.tensor([e.input_ids])).logits[0] for e in examples]
        by_example: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for p in packed:
            input_ids = torch.tensor([p.input_ids])
            position_ids = torch.tensor([p.position_ids])
            mask4d = block_causal_mask(p.seg_lengths, 16)[None, None]
            # Both forms transformers' Llama accepts: position ids alone (it derives the packed mask,
            # only without a KV cache) and an explicit 4D boolean mask (with the position ids, for RoPE).
            via_positions = model(input_ids, position_ids=position_ids, use_cache=False).logits[0]
            via_mask = model(input_ids, position_ids=position_ids, attention_mask=mask4d).logits[0]
            start = 0
            for n in p.seg_lengths:
                segment = p.input_ids[start : start + n]
                match = [i for i, e in enumerate(examples) if e.input_ids == segment]
                if match:
                    by_example[match[0]] = (via_positions[start : start + n], via_mask[start : start + n])
                start += n
    assert sorted(by_example) == [0, 1, 2, 3]
    for i, (a, b) in by_example.items():
        torch.testing.assert_close(a, separate[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(b, separate[i], atol=1e-5, rtol=0)


def test_pad_batch() -> None:
    batch = pad_batch([fake(3, 10), fake(1, 20)], pad_id=5)
    assert batch["input_ids"].tolist() == [[10, 11, 12], [20, 5, 5]]
    assert batch["labels"].tolist() == [[IGNORE, 11, 12], [IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_epoch_order_seeded() -> None:
    a = epoch_order(50, seed=7, epoch=0)
    assert sorted(a) == list(range(50))
    assert a == epoch_order(50, seed=7, epoch=0)
    assert a != epoch_order(50, seed=7, epoch=1)
    assert a != epoch_order(50, seed=8, epoch=0)
    # Pinned: the order must not change between runs, machines or Python hash seeds.
    assert epoch_order(5, seed=0, epoch=0) == epoch_order(5, seed=0, epoch=0)


def test_merge_across_boundary_falls_back_to_whole_tokenisation(tok) -> None:
    # No separator: "Onc" + "e upon a time" tokenises as "Once ..." as a whole, not piece by piece.
    template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    conv = Conversation((Turn("user", "Onc"), Turn("assistant", "e upon a time")))
    assert ids(tok, "Onc") + ids(tok, "e upon a time") != ids(tok, "Once upon a time")
    enc = encode(conv, tok, template=template, max_len=64)
    assert enc.input_ids == ids(tok, "Once upon a time")
    # The token straddling the boundary is not trained on; the rest of the response is.
    assert enc.labels == [IGNORE, *ids(tok, " upon a time")]


@pytest.mark.realmodel
def test_stories260k_chat_template_rendering_bos_gets_no_second_bos() -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(need(STORIES))
    template = (
        "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    conv = Conversation((Turn("user", "Hi"), Turn("assistant", "Once upon a time")))
    enc = encode(conv, tok, template=template, max_len=128)
    assert enc.input_ids.count(tok.bos_token_id) == 1 and enc.input_ids[0] == tok.bos_token_id
    trained = [i for i in enc.labels if i != IGNORE]
    assert tok.decode(trained) == "Once upon a time</s>"
    assert enc.labels[: len(enc) - len(trained)] == [IGNORE] * (len(enc) - len(trained))

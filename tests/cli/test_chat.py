"""`owl chat` on the tiny Llama, driven through piped stdin: streamed replies, history sent with every
turn (checked against transformers on the saved conversation), /reset, /save, /adapter, a bad /save
path, context trimming, Ctrl-C during a reply, and a model with no chat template."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def chat(owl, tiny_llama: Path, tiny_adapter: Path, monkeypatch: pytest.MonkeyPatch):
    """`owl chat ARGS…` with ``lines`` as its stdin, in a store holding tiny-llama and its LoRA."""
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_adapter, "--name", "lora").code == 0

    def run(lines: list[str], *args: str):
        monkeypatch.setattr("sys.stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
        return owl("chat", *args)

    return run


def greedy_reply(folder: Path, messages: list[dict], n: int) -> str:
    """What the model answers to ``messages``, computed with transformers alone (an independent path)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def saved(path: Path) -> dict:
    return json.loads(path.read_text())


def test_chat_streams_keeps_history_resets_and_saves(chat, tiny_llama: Path, tmp_path: Path) -> None:
    first, second, third = (tmp_path / f"{n}.json" for n in ("first", "second", "third"))
    r = chat(
        [
            "Once upon a time",
            "The owl read",
            f"/save {first}",
            "/reset",
            "tiny owl",
            f"/save {second}",
            f"/save {tmp_path}/no/such/dir/x.json",  # a bad path: one error line, the chat goes on
            "/help",
            "model files",
            f"/save {third}",
            "/exit",
            "never sent",
        ],
        "tiny-llama",
        "--system",
        "be brief",
        "--max-tokens",
        "8",
    )
    assert r.code == 0, r.err
    conv = saved(first)
    assert conv["model"] == "tiny-llama:latest" and conv["adapter"] is None
    roles = [m["role"] for m in conv["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant"]
    msgs = conv["messages"]
    assert msgs[0]["content"] == "be brief" and msgs[3]["content"] == "The owl read"
    # Both replies were streamed to stdout, one line each, and nothing else went there.
    replies = [m["content"] for m in msgs if m["role"] == "assistant"]
    assert r.out.split("\n")[:2] == replies
    assert all(replies)
    # The second turn's prompt held the whole history, first reply included: transformers, given the
    # saved history, answers the same.
    assert greedy_reply(tiny_llama, msgs[:2], 8) == replies[0]
    assert greedy_reply(tiny_llama, msgs[:4], 8) == replies[1]
    # /reset kept the system message only.
    assert [m["role"] for m in saved(second)["messages"]] == ["system", "user", "assistant"]
    assert saved(second)["messages"][1]["content"] == "tiny owl"
    # The bad /save said so in one line; the next message was still answered and saved.
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no/such/dir" in errors[0]
    assert [m["content"] for m in saved(third)["messages"]][3] == "model files"
    assert len(saved(third)["messages"]) == 5
    assert "/adapter NAME" in r.err  # /help
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writes left no temporary files


def test_adapter_switches_and_adapter_ref(chat, tmp_path: Path) -> None:
    a, b, c = (tmp_path / f"{n}.json" for n in "abc")
    r = chat(
        [
            "/adapter",  # lists them
            "Once upon a time",
            f"/save {a}",
            "/reset",
            "/adapter base",
            "Once upon a time",
            f"/save {b}",
            "/adapter no-such-adapter",  # one error line, the chat goes on
            "/adapter tiny-llama",  # a model, not an adapter
            "/reset",
            "/adapter lora",
            "Once upon a time",
            f"/save {c}",
        ],
        "tiny-llama",
        "--adapter",
        "lora",
        "--max-tokens",
        "8",
    )
    assert r.code == 0, r.err
    with_lora, plain, again = (saved(p) for p in (a, b, c))
    assert with_lora["adapter"] == "lora:latest" and plain["adapter"] is None
    assert with_lora["messages"][1]["content"] != plain["messages"][1]["content"]  # the adapter changed it
    assert again["messages"] == with_lora["messages"]  # and switching back gives the same again
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "no-such-adapter" in errors[0] and "not an adapter" in errors[1]
    assert "active: lora:latest" in r.err

    # An adapter as REF: its base loaded with the adapter active, answering as above.
    d = tmp_path / "d.json"
    r = chat(["Once upon a time", f"/save {d}"], "lora", "--max-tokens", "8")
    assert r.code == 0, r.err
    assert saved(d)["messages"] == with_lora["messages"] and saved(d)["model"] == "tiny-llama:latest"


def test_old_turns_are_dropped_to_fit_the_context(chat, tmp_path: Path) -> None:
    # The tiny Llama holds 128 tokens: 60 for the reply leave room for about one turn of history.
    out = tmp_path / "c.json"
    r = chat(
        [
            "Once upon a time",
            "The owl read model files",
            "tiny owl",
            f"/save {out}",
            "tiny owl " * 80,
            f"/save {out}",
        ],
        "tiny-llama",
        "--system",
        "be brief",
        "--max-tokens",
        "60",
    )
    assert r.code == 0, r.err
    assert "dropped the" in r.err and "oldest messages to fit the context (128 tokens)" in r.err
    msgs = saved(out)["messages"]
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert msgs[1] == {"role": "user", "content": "tiny owl"} and len(msgs) == 3
    assert (
        "shorten it" in r.err
    )  # the 640-character message (about 165 tokens) cannot fit at all: refused, history kept


def test_ctrl_c_during_a_reply_cancels_it(chat, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    class Interrupting(io.StringIO):
        """stdout whose first write of a reply is interrupted, as Ctrl-C while the first reply streams;
        it records the later writes of replies."""

        fired = False
        pieces: list[str] = []  # noqa: RUF012 - one instance

        def write(self, s: str) -> int:
            if sys._getframe(1).f_code.co_name == "turn":  # the chat's reply loop
                if not self.fired:
                    self.fired = True
                    raise KeyboardInterrupt
                self.pieces.append(s)
            return super().write(s)

    out = tmp_path / "c.json"
    stdout = Interrupting()
    monkeypatch.setattr(sys, "stdout", stdout)
    r = chat(["Once upon a time", "The owl read", f"/save {out}"], "tiny-llama", "--max-tokens", "8")
    assert r.code == 0, r.err
    assert "reply cancelled" in r.err
    msgs = saved(out)["messages"]
    assert [m["content"] for m in msgs if m["role"] == "user"] == [
        "The owl read"
    ]  # the cancelled turn is gone
    # The cancelled reply's line was ended; the next reply was streamed in several pieces as it
    # decoded, then a newline.
    cancelled_end, *pieces, end = stdout.pieces
    assert cancelled_end == end == "\n" and len(pieces) > 1
    assert "".join(pieces) == msgs[-1]["content"]


def test_model_without_chat_template_is_refused(owl, tiny_llama: Path, tmp_path: Path, monkeypatch) -> None:
    plain = tmp_path / "plain-llama"
    shutil.copytree(tiny_llama, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))
    assert owl("import", plain, "--name", "plain").code == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    r = owl("chat", "plain")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert "plain:latest has no chat template" in r.err and r.out == ""

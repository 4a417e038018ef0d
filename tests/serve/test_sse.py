"""Server-Sent Events framing, byte for byte, read with plain httpx: what the `openai` client (and any
other SSE reader) relies on."""

from __future__ import annotations

import json
from typing import Any

import httpx

CHAT = [{"role": "user", "content": "Say something."}]


def events(url: str, path: str, body: dict) -> tuple[httpx.Response, list[bytes]]:
    """The raw events of a stream: checks the framing, returns each event's payload after 'data: '."""
    with httpx.stream("POST", url + path, json=body, timeout=60) as r:
        raw = b"".join(r.iter_bytes())
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert raw.endswith(b"data: [DONE]\n\n")
    frames = raw.split(b"\n\n")
    assert frames[-1] == b""  # every event, the last included, ends with a blank line
    payloads = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and b"\n" not in frame, frame  # one data line, nothing else
        payloads.append(frame[len(b"data: ") :])
    assert payloads[-1] == b"[DONE]" and b"[DONE]" not in payloads[:-1]
    return r, payloads[:-1]


def test_chat_stream_framing_with_usage(served: Any) -> None:
    body = {"model": "tiny", "messages": CHAT, "max_tokens": 5, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    _, payloads = events(served[0], "/v1/chat/completions", body)
    chunks = [json.loads(p) for p in payloads]
    ids, created = {c["id"] for c in chunks}, {c["created"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-") and len(created) == 1
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "tiny" for c in chunks)
    first, *content, finish, usage = chunks
    assert first["choices"] == [
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    ]
    assert content and all(
        list(c["choices"][0]["delta"]) == ["content"] and c["choices"][0]["finish_reason"] is None
        for c in content
    )
    assert finish["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert all("usage" in c and c["usage"] is None for c in chunks[:-1])  # null on every earlier chunk
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 5
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 5
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    whole = httpx.post(served[0] + "/v1/chat/completions", json={**body, "stream": False}, timeout=60).json()
    assert whole["choices"][0]["message"]["content"] == text and whole["usage"] == usage["usage"]


def test_chat_stream_without_usage_has_no_usage_key_and_every_choice_starts_with_its_role(
    served: Any,
) -> None:
    body = {"model": "lora", "messages": CHAT, "max_tokens": 3, "temperature": 0.8, "seed": 1, "n": 2,
            "stream": True}  # fmt: skip
    _, payloads = events(served[0], "/v1/chat/completions", body)
    chunks = [json.loads(p) for p in payloads]
    assert not any("usage" in c for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks[:2]] == [{"role": "assistant", "content": ""}] * 2
    assert sorted(c["choices"][0]["index"] for c in chunks[:2]) == [0, 1]
    finishes = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"]]
    assert sorted(f["index"] for f in finishes) == [0, 1] and all(f["delta"] == {} for f in finishes)


def test_completion_stream_framing(served: Any) -> None:
    body = {"model": "dora", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    _, payloads = events(served[0], "/v1/completions", body)
    chunks = [json.loads(p) for p in payloads]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("cmpl-")
    assert all(c["object"] == "text_completion" for c in chunks)
    *texts, usage = chunks
    assert texts[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in texts[:-1])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    whole = httpx.post(served[0] + "/v1/completions", json={**body, "stream": False}, timeout=60).json()
    assert "".join(c["choices"][0]["text"] for c in texts) == whole["choices"][0]["text"]


def test_error_before_the_stream_starts_is_a_plain_json_error(served: Any) -> None:
    body = {"model": "nope", "messages": CHAT, "stream": True}
    r = httpx.post(served[0] + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}

"""Every error status in OpenAI's shape (400, 401, 404, 429; never 500 for a caller's mistake), a
client that goes away freeing its slot, and a hostile chat template failing safely."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest

CHAT = [{"role": "user", "content": "hello"}]


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.fixture(scope="module")
def one_slot(serve_store: Any, start_server: Any) -> Any:
    """A server that decodes one sequence at a time and queues almost nothing."""
    with start_server(serve_store, ["tiny"], max_batch=1, max_queue=0) as s:
        yield s


def test_bad_parameter_is_400_naming_the_field(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="x", temperature=5)
    err = e.value.body
    assert (
        e.value.status_code == 400
        and err["param"] == "temperature"
        and err["type"] == "invalid_request_error"
    )
    assert "temperature" in err["message"]
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        client.chat.completions.create(model="tiny", messages=CHAT, top_logprobs=2)


def test_context_overflow_names_both_counts(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=[5] * 2000, max_tokens=100)
    msg = e.value.body["message"]
    assert "maximum context length is 2048 tokens" in msg and "2100 (2000 prompt + 100 completion)" in msg
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(
        openai.BadRequestError, match=r"2048 tokens; the request needs \d+ \(\d+ prompt \+ 5000"
    ):
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=5000)


def test_unknown_model_is_404_listing_the_served_names(client: Any, served: Any) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=CHAT)
    assert "'gpt-4o' is not served here; served: tiny, evil, lora, dora" in e.value.body["message"]
    assert error_of(httpx.get(served[0] + "/v1/models/nope"))["type"] == "not_found_error"
    r = httpx.get(served[0] + "/v2/nothing")
    assert r.status_code == 404 and error_of(r)


def test_api_key(serve_store: Any, start_server: Any) -> None:
    with start_server(serve_store, ["tiny"], api_key="sekret") as (url, _):
        with pytest.raises(openai.AuthenticationError, match="incorrect API key"):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        r = httpx.post(url + "/v1/completions", content=b"not json")  # refused before the body is read
        assert r.status_code == 401 and error_of(r)["code"] == "invalid_api_key"
        assert httpx.get(url + "/health").status_code == 200  # health checks need no key
        good = openai.OpenAI(base_url=url + "/v1", api_key="sekret", max_retries=0)
        assert good.completions.create(model="tiny", prompt="Once", max_tokens=2).usage.completion_tokens == 2


def test_queue_full_is_429(one_slot: Any) -> None:
    url, _ = one_slot

    async def main() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as ac:
            calls = [
                ac.completions.create(model="tiny", prompt="Once", max_tokens=60, temperature=0)
                for _ in range(6)
            ]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    done = [r for r in results if not isinstance(r, Exception)]
    assert limited and done and len(limited) + len(done) == 6, results
    assert limited[0].status_code == 429 and limited[0].response.headers["retry-after"] == "1"
    assert limited[0].body["type"] == "rate_limit_error"


def test_a_client_leaving_mid_stream_frees_its_slot(one_slot: Any) -> None:
    """Alone, the first request would hold the only slot for 2000 tokens (many seconds)."""
    url, server = one_slot
    before = server.stats["disconnects"]
    body = {"model": "tiny", "prompt": "Once", "max_tokens": 2000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as c, c.stream("POST", url + "/v1/completions", json=body) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # generation is under way
    # The client and its connection are gone: the next request gets the slot at once.
    t0 = time.monotonic()
    r = httpx.post(
        url + "/v1/completions", json={"model": "tiny", "prompt": "Once", "max_tokens": 4}, timeout=60
    )
    assert r.status_code == 200 and time.monotonic() - t0 < 5
    assert server.stats["disconnects"] == before + 1


def test_a_client_giving_up_on_a_one_shot_request_frees_its_slot(one_slot: Any) -> None:
    url, _ = one_slot
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/completions",
            json={"model": "tiny", "prompt": "Once", "max_tokens": 2000, "temperature": 0},
            timeout=0.5,
        )
    t0 = time.monotonic()
    r = httpx.post(
        url + "/v1/completions", json={"model": "tiny", "prompt": "Once", "max_tokens": 4}, timeout=60
    )
    assert r.status_code == 200 and time.monotonic() - t0 < 5


def test_a_template_reaching_for_python_internals_is_400_and_the_server_keeps_serving(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="evil", messages=CHAT, max_tokens=2)
    assert "evil" in e.value.body["message"] and "chat template" in e.value.body["message"]
    assert e.value.body["param"] == "messages"
    assert client.completions.create(model="evil", prompt="Once", max_tokens=2).usage.completion_tokens == 2
    # Two sampled tokens of a random model may decode to no text: count them instead.
    assert (
        client.chat.completions.create(model="tiny", messages=CHAT, max_tokens=2).usage.completion_tokens == 2
    )


BAD = [
    ("/v1/completions", {}),
    ("/v1/completions", {"model": "tiny"}),
    ("/v1/completions", {"model": "tiny", "prompt": None}),
    ("/v1/completions", {"model": "tiny", "prompt": []}),
    ("/v1/completions", {"model": "tiny", "prompt": [[]]}),
    ("/v1/completions", {"model": "tiny", "prompt": [1.5, 2]}),
    ("/v1/completions", {"model": "tiny", "prompt": [-1]}),
    ("/v1/completions", {"model": "tiny", "prompt": [10**9]}),  # outside the vocabulary
    ("/v1/completions", {"model": "tiny", "prompt": [True]}),
    ("/v1/completions", {"model": "tiny", "prompt": ["a", 1]}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": -1}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "max_tokens": "many"}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "n": 0}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "n": 10_000}),
    ("/v1/completions", {"model": "tiny", "prompt": ["x"] * 100, "n": 2}),  # more than the server holds
    ("/v1/completions", {"model": "tiny", "prompt": "x", "logprobs": 21}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "top_p": 0}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "stop": ["a"] * 17}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "seed": "x"}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "logit_bias": {"1": 5}}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "frequency_penalty": 1}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "suffix": "y"}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "best_of": 3}),
    ("/v1/completions", {"model": "tiny", "prompt": "x", "stream": "maybe"}),
    ("/v1/completions", {"model": 5, "prompt": "x"}),
    ("/v1/completions", {"prompt": "x"}),  # two bases served: the model must be named
    ("/v1/completions", ["not", "an", "object"]),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}),
    ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"content": "no role"}]}),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}),
    (
        "/v1/chat/completions",
        {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
    ),
    ("/v1/chat/completions", {"model": "tiny", "messages": CHAT, "max_tokens": 0}),
    ("/v1/chat/completions", {"model": "tiny", "messages": CHAT, "tools": [{"type": "function"}]}),
    ("/v1/chat/completions", {"model": "tiny", "messages": CHAT, "response_format": {"type": "json_object"}}),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "no-such-adapter"}),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "tiny"}),  # a model, not an adapter
    ("/v1/load_lora_adapter", {"lora_name": "lora", "lora_path": "dora"}),  # the name is taken
    ("/v1/load_lora_adapter", {"lora_name": "has space", "lora_path": "lora"}),
    ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/etc/passwd"}),
    ("/v1/unload_lora_adapter", {"lora_name": "tiny"}),  # a base
    ("/v1/unload_lora_adapter", {"lora_name": "nope"}),
]


def test_no_user_mistake_is_a_500(served: Any) -> None:
    url = served[0]
    with httpx.Client(timeout=60) as c:
        for path, body in BAD:
            r = c.post(url + path, json=body)
            assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
            assert error_of(r)["message"], (path, body)
        for raw in (b"{", b"", b"\xff\xfe"):
            r = c.post(url + "/v1/completions", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 400 and error_of(r)["type"] == "invalid_request_error"
        assert c.get(url + "/v1/completions").status_code == 405
    assert {m for m in served[1].models} == {"tiny", "evil", "lora", "dora"}  # nothing half-loaded

"""`owl serve` through the real `openai` client (sync and async, streamed and not) on a real uvicorn."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about owls."}]


def greedy(client: Any, model: str, prompt: str = "Once upon a time", n: int = 12) -> str:
    r = client.completions.create(model=model, prompt=prompt, max_tokens=n, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == n
    return r.choices[0].text


def test_models_lists_bases_and_adapters_with_parent_and_license(client: Any) -> None:
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"tiny", "evil", "lora", "dora"}
    tiny, lora = models["tiny"].model_dump(), models["lora"].model_dump()
    assert tiny["parent"] is None and tiny["owned_by"] == "owlkit" and tiny["max_model_len"] == 2048
    assert lora["parent"] == "tiny" and lora["root"] == "lora:latest" and lora["kind"] == "adapter"
    assert tiny["license"] == "Apache-2.0" and tiny["terms"] is None  # no --use declared
    assert client.models.retrieve("dora").model_dump()["parent"] == "tiny"


def test_completion_matches_the_backend_run_alone_and_adapters_differ(client: Any, served: Any) -> None:
    from owlkit.backends.base import Sampling, generate

    texts = {m: greedy(client, m) for m in ("tiny", "lora", "dora")}
    assert len(set(texts.values())) == 3, texts  # each adapter changes the output
    assert greedy(client, "lora") == texts["lora"]  # greedy is repeatable
    # The server's text is the decoded tokens of the same request run directly on the backend.
    backend = served[1].models["tiny"].backend
    prompt = backend.encode("Once upon a time", special=True)
    ids = [t for ev in generate(backend, prompt, Sampling(max_tokens=12, temperature=0)) for t in ev.tokens]
    assert texts["tiny"] == backend.decode(ids)


def test_chat_stream_and_not_agree(client: Any) -> None:
    whole = client.chat.completions.create(model="lora", messages=CHAT, max_tokens=10, temperature=0)
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 10
    chunks = list(
        client.chat.completions.create(
            model="lora", messages=CHAT, max_tokens=10, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.model_dump()["total_tokens"] == whole.usage.total_tokens


def test_default_max_tokens_of_chat_is_the_rest_of_the_context(client: Any) -> None:
    # max_completion_tokens is the newer name; without either, chat may use the whole context.
    r = client.chat.completions.create(model="tiny", messages=CHAT, max_completion_tokens=3, temperature=0)
    assert r.usage.completion_tokens == 3


def test_async_client_concurrent_mixed_adapters_match_solo_runs(client: Any, served: Any) -> None:
    """Requests for the base, a LoRA and a DoRA adapter at once (batched together where PEFT allows)
    each return what the same request returns alone."""
    prompts = ["Once upon a time", "The owl read", "tiny model files"]
    solo = {(m, p): greedy(client, m, p, 8) for m in ("tiny", "lora", "dora") for p in prompts}

    async def one(ac: Any, model: str, prompt: str, stream: bool) -> str:
        if not stream:
            r = await ac.completions.create(model=model, prompt=prompt, max_tokens=8, temperature=0)
            return r.choices[0].text
        out = []
        async for chunk in await ac.completions.create(
            model=model, prompt=prompt, max_tokens=8, temperature=0, stream=True
        ):
            out.append(chunk.choices[0].text)
        return "".join(out)

    async def main() -> list[tuple[tuple[str, str], str]]:
        async with openai.AsyncOpenAI(base_url=served[0] + "/v1", api_key="x", max_retries=0) as ac:
            keys = [(m, p, s) for (m, p) in solo for s in (False, True)]
            results = await asyncio.gather(*(one(ac, m, p, s) for m, p, s in keys))
            return [((m, p), r) for (m, p, _), r in zip(keys, results, strict=True)]

    for key, text in asyncio.run(main()):
        assert text == solo[key], key


def test_async_chat_stream(served: Any) -> None:
    async def main() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=served[0] + "/v1", api_key="x", max_retries=0) as ac:
            stream = await ac.chat.completions.create(
                model="dora", messages=CHAT, max_tokens=6, temperature=0, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            whole = await ac.chat.completions.create(model="dora", messages=CHAT, max_tokens=6, temperature=0)
            return text, whole.choices[0].message.content

    streamed, whole = asyncio.run(main())
    assert streamed == whole and streamed


def test_prompt_lists_n_and_seed(client: Any, served: Any) -> None:
    kw = {"model": "tiny", "prompt": ["Once upon", "The owl"], "n": 2, "max_tokens": 6, "temperature": 1.0}
    a = client.completions.create(seed=7, **kw)
    b = client.completions.create(seed=7, **kw)
    assert [c.index for c in a.choices] == [0, 1, 2, 3]  # prompt_index * n + j
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # a seed repeats the samples
    assert a.usage.prompt_tokens == b.usage.prompt_tokens and a.usage.completion_tokens == 24
    # Token-id prompts are used as they are: the same answer as their text.
    ids = served[1].models["tiny"].backend.encode("The owl", special=True)
    by_ids = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=6, temperature=0)
    assert [c.text for c in by_ids.choices] == [greedy(client, "tiny", "The owl", 6)] * 2
    assert by_ids.usage.prompt_tokens == 2 * len(ids)


def test_stop_strings_cut_the_text_and_never_leak_into_a_stream(client: Any) -> None:
    full = greedy(client, "tiny", n=40)
    stop = full[15:18]  # a piece from the middle (maybe across tokens)
    want = full[: full.index(stop)]
    r = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0, stop=[stop, "zzzz"]
    )
    assert r.choices[0].text == want and r.choices[0].finish_reason == "stop"
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model="tiny", prompt="Once upon a time", max_tokens=40, temperature=0, stop=stop, stream=True
        )
    ]
    assert "".join(pieces) == want and not any(stop in p for p in pieces)


def test_max_tokens_zero_answers_an_empty_choice(client: Any) -> None:
    r = client.completions.create(model="tiny", prompt="Once", max_tokens=0)
    assert (
        r.choices[0].text == "" and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 0
    )


def test_load_and_unload_adapters_at_run_time(client: Any, served: Any) -> None:
    url = served[0]
    r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "rt", "lora_path": "lora"})
    assert r.status_code == 200, r.text
    assert r.json()["parent"] == "tiny"
    try:
        assert "rt" in {m.id for m in client.models.list().data}
        assert greedy(client, "rt") == greedy(client, "lora")
        again = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "rt", "lora_path": "lora"})
        assert again.status_code == 400 and "already served" in again.json()["error"]["message"]
    finally:
        r = httpx.post(url + "/v1/unload_lora_adapter", json={"lora_name": "rt"})
    assert r.status_code == 200 and r.json()["deleted"] is True
    with pytest.raises(openai.NotFoundError, match="not served here"):
        greedy(client, "rt")
    assert "rt" not in {m.id for m in client.models.list().data}
    assert greedy(client, "lora")  # the other adapters are untouched


def test_adapter_paths_only_with_allow_adapter_paths(
    served: Any, serve_store: Any, serve_folders: Any, start_server: Any
) -> None:
    folder = str(serve_folders["dora"])
    r = httpx.post(served[0] + "/v1/load_lora_adapter", json={"lora_name": "p", "lora_path": folder})
    err = r.json()["error"]
    assert r.status_code == 400 and "--allow-adapter-paths" in err["message"] and err["param"] == "lora_path"
    with start_server(serve_store, ["tiny"], allow_adapter_paths=True) as (url, server):
        r = httpx.post(url + "/v1/load_lora_adapter", json={"lora_name": "from-path", "lora_path": folder})
        assert r.status_code == 200, r.text
        assert server.models["from-path"].record.digest == serve_store.find("dora").digest  # same content
        c = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        assert greedy(c, "from-path") != greedy(c, "tiny")

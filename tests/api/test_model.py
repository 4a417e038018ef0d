"""The model commands through the Python API: convert and run report what `owl … --json` prints; run and
chat stream events; serve runs a real server for the `openai` client inside a `with` block and stops it
at the end, leaving the process environment as it was."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from owlkit import Owl
from owlkit.api import ChatResult, Loaded, RunResult, TextDelta
from owlkit.errors import Refused, UsageError


@pytest.fixture
def stocked(owl, owl_home: Path, tiny_llama: Path, tiny_adapter: Path) -> Owl:
    """A store with tiny-llama, its LoRA and a Q8_0 GGUF of it; the API on that store."""
    assert owl("import", tiny_llama).code == 0
    assert owl("import", tiny_adapter, "--name", "lora").code == 0
    assert owl("quantize", "tiny-llama", "--to", "gguf-q8_0", "--no-eval", "--name", "q8").code == 0
    return Owl(home=owl_home)


def _without_timings(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "timings"}


def test_convert_and_run_json_is_to_dict(owl, stocked: Owl) -> None:
    printed = owl("convert", "q8", "--to", "hf", "--name", "q8-hf", "--json").json()
    assert (
        printed == stocked.convert("q8", to="hf", name="q8-hf").to_dict()
    )  # the same recipe: the same artifact
    assert printed["names"] == ["q8-hf:latest"]

    for args in (("tiny-llama", "Once upon a time"), ("lora", "Once upon a time"), ("q8-hf", "The owl")):
        r = owl("run", *args, "--max-tokens", "6", "--json")
        assert r.code == 0, r.err
        printed = r.json()
        result = list(stocked.run(*args, max_tokens=6))[-1]
        assert isinstance(result, RunResult)
        assert _without_timings(printed) == _without_timings(result.to_dict())  # greedy: the same text
        assert set(printed["timings"]) == {"load_s", "generate_s", "tokens_per_s"}
    assert printed["usage"]["completion_tokens"] == 6 and printed["finish_reason"] == "length"


def test_run_streams_events_and_checks_options_first(stocked: Owl) -> None:
    *deltas, result = stocked.run("lora", "Once upon a time", max_tokens=5)
    assert (
        result.model == "tiny-llama:latest" and result.adapter == "lora:latest" and result.backend == "torch"
    )
    assert all(isinstance(d, TextDelta) for d in deltas) and isinstance(result, RunResult)
    assert "".join(d.text for d in deltas) == result.text
    assert result.usage.completion_tokens == 5 and result.usage.total_tokens == result.usage.prompt_tokens + 5
    with pytest.raises(UsageError, match="--system needs --chat"):  # before anything is loaded
        stocked.run("tiny-llama", "hi", system="be brief")
    with pytest.raises(UsageError, match="top_p"):
        stocked.run("tiny-llama", "hi", top_p=0)
    # llama.cpp is another name of the gguf backend, in the API as on the command line
    *_, result = stocked.run("q8", "Once upon a time", max_tokens=3, backend="llama.cpp")
    assert result.backend == "gguf" and result.usage.completion_tokens <= 3
    with pytest.raises(UsageError, match=r"llama\.cpp = gguf"):
        list(stocked.run("tiny-llama", "hi", backend="vllm"))
    with pytest.raises(Refused, match="not a GGUF model"):
        list(stocked.run("tiny-llama", "hi", backend="gguf"))


def test_chat_and_conversation(stocked: Owl) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Once upon a time"}]
    *deltas, result = stocked.chat("tiny-llama", messages, adapters=["lora"], max_tokens=6)
    assert isinstance(result, ChatResult) and result.adapter == "lora:latest"
    assert "".join(d.text for d in deltas) == result.text
    assert result.messages == [*messages, result.message]

    with stocked.conversation("tiny-llama", system="be brief", max_tokens=6) as c:
        assert isinstance(c.loaded, Loaded) and c.loaded.model == "tiny-llama:latest" and c.active is None
        assert c.use_adapter("lora") == [] and c.active == "lora:latest"
        *_, again = c.send("Once upon a time")
        assert again.text == result.text and c.messages == result.messages  # the same reply, kept
        c.use_adapter("base")
        events = c.send("The owl read")
        next(events)
        events.close()  # cancelled: the message is taken back
        assert c.messages == result.messages
        c.reset()
        assert c.messages == messages[:1]
        with pytest.raises(Refused, match="not an adapter"):
            c.use_adapter("tiny-llama")


def test_serve_answers_the_openai_client_inside_the_with_block(
    stocked: Owl, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openai

    import owlkit.backends.adapters as adapters

    checks = []
    check = adapters.check_adapter_applies
    monkeypatch.setattr(adapters, "check_adapter_applies", lambda *a: checks.append(a[1].name) or check(*a))
    before = dict(os.environ)
    with stocked.serve("tiny-llama", adapters=[("tuned", "lora")]) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=60)
        assert {m.id for m in client.models.list().data} == {"tiny-llama", "tuned"}
        done = client.completions.create(
            model="tuned", prompt="Once upon a time", max_tokens=4, temperature=0
        )
        assert done.usage.completion_tokens == 4
        chat = client.chat.completions.create(
            model="tuned", messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
        )
        assert chat.choices[0].finish_reason in ("stop", "length")
    assert checks == ["lora:latest"]  # the adapter was checked against its base once
    with pytest.raises(httpx.ConnectError):
        httpx.get(url.removesuffix("/v1") + "/health", timeout=5)
    assert dict(os.environ) == before

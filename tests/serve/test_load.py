"""Load, bounded and on loopback only: 16 concurrent streaming clients for 30 s on stories260k.

No response may be lost or mixed with another: every streamed text must equal the text of the same
greedy request run alone. Latency percentiles are printed (run with -s to see them)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from owltest import STORIES, need

pytestmark = [pytest.mark.slow, pytest.mark.realmodel]

CLIENTS = 16
SECONDS = float(os.environ.get("OWL_LOAD_SECONDS", "30"))
MAX_TOKENS = 48
PROMPTS = ["Once upon a time", "Lily went to the park", "The little dog", "Tom and Sue", "One day, a bird",
           "There was a big tree", "Mom said", "The sun was hot"]  # fmt: skip


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def test_sixteen_streaming_clients_for_thirty_seconds(tmp_path: Path, start_server: Any) -> None:
    import openai

    from owlkit.recipes.importer import import_path
    from owlkit.store import open_store

    store = open_store(tmp_path / "home", write=True)
    import_path(store, need(STORIES), name="stories")
    with start_server(store, ["stories"], max_batch=8, max_queue=64) as (url, _server):
        solo_client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        solo = {
            p: solo_client.completions.create(model="stories", prompt=p, max_tokens=MAX_TOKENS, temperature=0)
            .choices[0]
            .text
            for p in PROMPTS
        }
        latencies: list[float] = []
        first_token: list[float] = []
        wrong: list[tuple[str, str, str]] = []
        unfinished: list[str] = []
        tokens = 0

        async def client(ac: Any, k: int, deadline: float) -> None:
            nonlocal tokens
            i = k
            while time.monotonic() < deadline:
                prompt = PROMPTS[i % len(PROMPTS)]
                i += 1
                t0 = time.monotonic()
                pieces, first, finish = [], None, None
                stream = await ac.completions.create(
                    model="stories", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True,
                    stream_options={"include_usage": True},
                )  # fmt: skip
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].text:
                        first = first or time.monotonic() - t0
                        pieces.append(chunk.choices[0].text)
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                    if chunk.usage:
                        tokens += chunk.usage.completion_tokens
                latencies.append(time.monotonic() - t0)
                if finish is None:
                    unfinished.append(prompt)
                first_token.append(first or 0.0)
                if "".join(pieces) != solo[prompt]:
                    wrong.append((prompt, "".join(pieces), solo[prompt]))

        async def main() -> float:
            started = time.monotonic()
            async with openai.AsyncOpenAI(
                base_url=url + "/v1", api_key="x", max_retries=0, timeout=120
            ) as ac:
                await asyncio.gather(*(client(ac, k, started + SECONDS) for k in range(CLIENTS)))
            return time.monotonic() - started

        elapsed = asyncio.run(main())
    print(
        f"\nload: {CLIENTS} streaming clients, {elapsed:.1f} s, {len(latencies)} requests, {tokens} tokens "
        f"({tokens / elapsed:.0f} tokens/s); latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {percentile(latencies, 99) * 1000:.0f} ms; first text p50 {statistics.median(first_token) * 1000:.0f} ms"
    )
    assert not wrong, wrong[:3]
    assert len(latencies) >= CLIENTS and not unfinished  # every stream ended with its finish reason

"""The torch backend on a tiny random Llama: batched decoding equals each request run alone (mixed
lengths, mixed LoRA adapters, a DoRA adapter), logprobs equal transformers' own, cancel and queue limits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from owlkit.backends.adapters import attach
from owlkit.backends.base import Event, QueueFull, Request, Sampling, generate, open_backend
from owltest import build_adapter

GREEDY = Sampling(max_tokens=12, temperature=0)


@pytest.fixture(scope="module")
def tiny_dora(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return build_adapter(
        tiny_llama, tmp_path_factory.mktemp("dora") / "tiny-dora", "tiny-llama", seed=5, use_dora=True
    )


@pytest.fixture
def backend(owl, tiny_llama: Path, tiny_adapter: Path, tiny_dora: Path):
    from owlkit.store import open_store

    for args in ((tiny_llama,), (tiny_adapter, "--name", "lora"), (tiny_dora, "--name", "dora")):
        assert owl("import", *args).code == 0
    store = open_store(write=True)
    b = open_backend(store, store.find("tiny-llama"), "torch", max_batch=8, max_queue=4)
    attach(b, "lora", store.find("lora"))
    attach(b, "dora", store.find("dora"))
    yield b
    b.close()


def _run(b, prompt: list[int], adapter: str | None = None, sampling: Sampling = GREEDY) -> list[int]:
    return [t for ev in generate(b, prompt, sampling, adapter=adapter, timeout=60) for t in ev.tokens]


def _run_together(b, jobs: list[tuple[list[int], str | None]]) -> list[list[int]]:
    """Submit every job before the worker can start, so they share batches."""
    results: list[list[int]] = [[] for _ in jobs]
    done = threading.Semaphore(0)

    def sink(i: int):
        def put(ev: Event) -> None:
            assert ev.error is None, ev.error
            results[i] += ev.tokens
            if ev.finish:
                done.release()

        return put

    with b._cond:  # hold the queue so all requests are waiting when the worker looks
        for i, (prompt, adapter) in enumerate(jobs):
            b._pending.append(Request(prompt, GREEDY, sink(i), adapter=adapter))
        b._cond.notify_all()
    for _ in jobs:
        assert done.acquire(timeout=60)
    return results


def test_batched_mixed_adapters_equal_each_request_alone(backend) -> None:
    jobs = [([1, 5, 9, 13], None), ([2, 7], "lora"), ([3, 4, 5, 6, 7, 8, 9], "dora"), ([11, 12, 13], "lora"),
            ([1, 5, 9, 13], "dora"), ([40, 41], None)]  # fmt: skip
    alone = [_run(backend, p, a) for p, a in jobs]
    assert alone[0] != _run(backend, jobs[0][0], "lora") != _run(backend, jobs[0][0], "dora")
    assert _run_together(backend, jobs) == alone


def test_a_request_joins_a_running_batch(backend) -> None:
    order: list[str] = []
    out: dict[str, list[int]] = {"long": [], "late": []}
    started = threading.Event()
    finished = threading.Semaphore(0)

    def sink(name: str):
        def put(ev: Event) -> None:
            out[name] += ev.tokens
            started.set()
            if ev.finish:
                order.append(name)
                finished.release()

        return put

    long = Sampling(max_tokens=60, temperature=0)
    backend.submit(Request([1, 5, 9, 13, 17, 21], long, sink("long"), adapter="lora"))
    assert started.wait(30)
    backend.submit(Request([2, 7], GREEDY, sink("late")))  # the base, mid-batch, shorter prompt
    assert finished.acquire(timeout=60) and finished.acquire(timeout=60)
    assert order == ["late", "long"]  # it did not wait for the long request to finish
    assert out["late"] == _run(backend, [2, 7])
    assert out["long"] == _run(backend, [1, 5, 9, 13, 17, 21], "lora", long)


def test_dora_batches_only_with_its_own_adapter(backend) -> None:
    with backend._cond:
        backend._pending.extend(
            Request([1, 2], GREEDY, lambda ev: None, adapter=a) for a in ("dora", None, "lora", "dora")
        )
        first = backend._take_batch()
        second = backend._take_batch()
    assert [r.adapter for r in first] == ["dora", "dora"]
    assert [r.adapter for r in second] == [None, "lora"]


def test_logprobs_and_echo_equal_transformers(backend, tiny_llama: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    prompt = [1, 17, 23, 5, 60]
    events = list(
        generate(backend, prompt, Sampling(max_tokens=3, temperature=0, logprobs=2, echo_logprobs=True))
    )
    assert events[0].prompt_logprobs[0] is None
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    generated = [t for ev in events for t in ev.tokens]
    with torch.no_grad():
        logits = model(torch.tensor([prompt + generated])).logits[0]
    lp = torch.log_softmax(logits, dim=-1)
    for j, entry in enumerate(events[0].prompt_logprobs[1:], start=1):
        assert entry.token == prompt[j]
        assert entry.logprob == pytest.approx(float(lp[j - 1, prompt[j]]), abs=1e-4)
    chosen = [lpr for ev in events for lpr in ev.logprobs]
    for k, entry in enumerate(chosen):
        pos = len(prompt) - 1 + k
        assert entry.logprob == pytest.approx(float(lp[pos].max()), abs=1e-4)  # greedy: the top token
        assert entry.top[0][0] == entry.token and len(entry.top) == 2


def test_seeded_sampling_repeats(backend) -> None:
    s = Sampling(max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    assert _run(backend, [3, 4], sampling=s) == _run(backend, [3, 4], sampling=s)


def test_cancel_aborts_and_queue_is_bounded(backend) -> None:
    events: list[Event] = []
    long = Sampling(max_tokens=100, temperature=0)
    with backend._cond:
        req = Request([1, 2, 3], long, events.append)
        backend._pending.append(req)
        req.cancel()
        for _ in range(backend.options.max_queue + backend.options.max_batch - 1):
            backend._pending.append(Request([1], long, lambda ev: None))
        with pytest.raises(QueueFull):
            backend._cond.release()
            try:
                backend.submit(Request([1], long, lambda ev: None))
            finally:
                backend._cond.acquire()
        for r in list(backend._pending)[1:]:
            r.cancel()
        backend._cond.notify_all()
    for _ in range(100):
        if events:
            break
        threading.Event().wait(0.05)
    assert events == [Event(finish="abort")]


def test_unload_adapter(backend) -> None:
    from owlkit.errors import NotFound

    backend.remove_adapter("lora")
    assert backend.adapters() == ["dora"]
    with pytest.raises(NotFound):
        backend.submit(Request([1], GREEDY, lambda ev: None, adapter="lora"))

"""`owl serve --backend gguf` on the real SmolLM2 Q4_1 GGUF, through the `openai` client on a real
uvicorn: streamed chat on the base and on a LoRA adapter (applied per request by llama.cpp), the base's
reply equal to llama-cpp-python's own chat completion, and lm-eval style echo logprobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from owltest import SMOLLM_GGUF, need

pytest.importorskip("llama_cpp", reason="the gguf backend needs llama-cpp-python (the gguf extra)")
pytestmark = pytest.mark.realmodel

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def smol_lora(out: Path, facts: dict[str, Any], base: str) -> Path:
    """A PEFT LoRA folder (q_proj and v_proj, rank 4) for the Llama shapes in ``facts``, with noise in
    both matrices so it changes the output: written directly, as it would take loading the model in
    transformers to let PEFT write it."""
    from safetensors.numpy import save_file

    shapes = facts["shapes"]
    hidden, kv = shapes["hidden"], shapes["hidden"] // shapes["heads"] * shapes["kv_heads"]
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(shapes["layers"]):
        for module, width in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{prefix}.lora_A.weight"] = rng.normal(0, 0.1, (4, hidden)).astype(np.float32)
            tensors[f"{prefix}.lora_B.weight"] = rng.normal(0, 0.1, (width, 4)).astype(np.float32)
    out.mkdir()
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 4, "lora_alpha": 8, "bias": "none",
              "target_modules": ["q_proj", "v_proj"], "base_model_name_or_path": base}  # fmt: skip
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def gguf_server(start_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from owlkit.recipes.importer import import_path
    from owlkit.store import open_store

    tmp = tmp_path_factory.mktemp("serve-gguf")
    store = open_store(tmp / "owl", write=True)
    import_path(store, need(SMOLLM_GGUF), name="smollm2")
    import_path(
        store, smol_lora(tmp / "lora", store.find("smollm2").manifest.facts, "smollm2"), name="smol-lora"
    )
    with start_server(store, ["smollm2"], [("smol-lora", "smol-lora")], backend="gguf", threads=1) as s:
        yield s
    store.close()


@pytest.fixture
def client(gguf_server: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=gguf_server[0] + "/v1", api_key="unused", max_retries=0, timeout=120)


def stream_chat(client: Any, model: str) -> tuple[str, list[Any]]:
    chunks = list(
        client.chat.completions.create(
            model=model, messages=QUESTION, max_tokens=16, temperature=0, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def test_streamed_chat_on_the_base_and_the_adapter(client: Any, gguf_server: Any) -> None:
    from owlkit.backends.gguf_backend import GGUFBackend
    from owlkit.runtime.llamacpp import open_gguf

    models = {m.id: m.model_dump() for m in client.models.list().data}
    assert models["smol-lora"]["parent"] == "smollm2" and models["smollm2"]["max_model_len"] == 4096
    assert isinstance(gguf_server[1].models["smollm2"].backend, GGUFBackend)

    base, chunks = stream_chat(client, "smollm2")
    assert base
    assert len({c.id for c in chunks}) == 1 and chunks[0].choices[0].delta.role == "assistant"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] in (["stop"], ["length"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 16

    llm = open_gguf(SMOLLM_GGUF, n_ctx=512, n_threads=1)
    try:
        direct = llm.create_chat_completion(messages=QUESTION, max_tokens=16, temperature=0)
    finally:
        llm.close()
    assert base == direct["choices"][0]["message"]["content"]

    adapted, _ = stream_chat(client, "smol-lora")
    assert adapted and adapted != base
    assert stream_chat(client, "smollm2")[0] == base  # the base again, after the adapter's request
    whole = client.chat.completions.create(model="smol-lora", messages=QUESTION, max_tokens=16, temperature=0)
    assert whole.choices[0].message.content == adapted


def test_echo_logprobs_as_lm_eval_asks(client: Any) -> None:
    r = client.completions.create(
        model="smollm2",
        prompt="The capital of France is Paris",
        max_tokens=0,
        echo=True,
        logprobs=1,
        temperature=0,
    )
    lp = r.choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(v < 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens) == "The capital of France is Paris" == r.choices[0].text

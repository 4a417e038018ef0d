"""The tune recipe on a tiny random Llama: loss falls, the saved adapter reloads to the same logits,
resume equals an uninterrupted run bit for bit, and params are checked naming the flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from owlkit.adapt.train import TrainResult, TuneParams, get_lr, train
from owlkit.errors import UsageError
from owltest import STORIES, build_tiny_llama, need, transformers_nf4

ROWS = [
    {"instruction": "Say owl.", "input": "", "output": "The owl read model files carefully."},
    {"instruction": "Tell a story.", "input": "tiny", "output": "Once upon a time there was a tiny owl."},
    {"instruction": "Say owl again.", "input": "", "output": "The owl read."},
    {"instruction": "Once more.", "input": "", "output": "Once upon a time."},
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("base") / "tiny")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 2))
    return path


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One example eight times: a tiny random model can learn it in a few steps."""
    path = tmp_path_factory.mktemp("data") / "repeated.jsonl"
    path.write_text((json.dumps(ROWS[0]) + "\n") * 8)
    return path


def run(base: Path, data: Path, tmp: Path, params: TuneParams, **kw) -> TrainResult:
    return train(base, data, "alpaca", params, tmp / "out", work_dir=tmp / "work", base_ref="owl:tiny", **kw)


def batch_logits(model, tokenizer):
    import torch

    ids = torch.tensor([tokenizer("Once upon a time there was", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_loss_falls_and_output_reloads(
    method: str, base: Path, repeated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from owlkit.adapt import train as recipe

    # Keep the in-memory model the recipe saves (a wrapper around the real save), to compare with a reload.
    captured = {}
    real_save = recipe._save

    def keep(model, *args):
        captured["model"] = model.eval()
        real_save(model, *args)

    monkeypatch.setattr(recipe, "_save", keep)
    lr = 3e-3 if method == "full" else 1e-2
    params = TuneParams(method=method, steps=20, lr=lr, batch_size=2, seq_len=64, warmup=2)
    seen: list[dict] = []
    result = run(base, repeated, tmp_path, params, progress=seen.append)
    assert result.steps == 20 and len(result.log) == 20 and len(seen) == 20
    first, last = result.log[0]["loss"], result.log[-1]["loss"]
    # LoRA on a random 40K-parameter model plateaus near 3.95 from 4.55 (the output layer stays random).
    assert last < first - 0.3, (first, last)
    assert result.log[-1]["tokens"] > 0 and result.tokens_per_s > 0 and seen[0]["tokens_per_s"] > 0
    assert result.data_report["kept"] == 8 and len(result.data_order_digest) == 64
    out = tmp_path / "out"
    if method == "full":
        assert "transformers_version" not in json.loads((out / "config.json").read_text())
        loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    else:
        from peft import PeftModel

        adapter_config = json.loads((out / "adapter_config.json").read_text())
        assert adapter_config["base_model_name_or_path"] == "owl:tiny"
        assert adapter_config["use_dora"] is (method == "dora")
        base_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        loaded = PeftModel.from_pretrained(base_model, out)
    tok = AutoTokenizer.from_pretrained(base)
    trained = batch_logits(captured["model"], tok)
    assert float((batch_logits(loaded.eval(), tok) - trained).abs().max()) < 1e-5
    untrained = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    assert float((batch_logits(untrained, tok) - trained).abs().max()) > 1e-3


def test_resume_equals_uninterrupted(base: Path, data: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    params = TuneParams(steps=6, save_every=3, lr=1e-2, dropout=0.1, batch_size=2, seq_len=32, packing=True)
    whole = run(base, data, tmp_path / "whole", params)
    part = run(base, data, tmp_path / "split", params, _stop_after=3)
    assert part.steps == 3 and not (tmp_path / "split" / "out").exists()
    assert (tmp_path / "split" / "work" / "ckpt-00000003" / "state.json").is_file()
    resumed = run(base, data, tmp_path / "split", params, resume=True)
    assert resumed.steps == 6 and [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]
    a = load_file(tmp_path / "whole" / "out" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "out" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.num_threads == torch.get_num_threads()


def test_qlora_trains_on_nf4_and_reloads(
    base: Path, repeated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("bitsandbytes")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from owlkit.adapt import train as recipe

    captured = {}
    real_save = recipe._save

    def keep(model, *args):
        captured["model"] = model.eval()
        real_save(model, *args)

    monkeypatch.setattr(recipe, "_save", keep)
    params = TuneParams(method="qlora", steps=20, lr=1e-2, batch_size=2, seq_len=64, warmup=2)
    result = run(base, repeated, tmp_path, params)
    assert result.steps == 20 and result.log[-1]["loss"] < result.log[0]["loss"] - 0.3, result.log
    assert any("AdamW" in n and "CUDA" in n for n in result.notes)
    linear = captured["model"].base_model.model.model.layers[0].self_attn.q_proj.base_layer
    assert type(linear).__name__ == "Linear4bit"  # trained against the quantized weights
    out = tmp_path / "out"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "owl:tiny"
    tok = AutoTokenizer.from_pretrained(base)
    trained = batch_logits(captured["model"], tok)
    loaded = PeftModel.from_pretrained(transformers_nf4(base), out).eval()
    assert float((batch_logits(loaded, tok) - trained).abs().max()) < 1e-5
    # A normal LoRA adapter: it also applies to the full-precision base (up to the NF4 rounding).
    fp32 = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    on_fp32 = batch_logits(PeftModel.from_pretrained(fp32, out).eval(), tok)
    untrained = batch_logits(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval(), tok)
    assert float((on_fp32 - untrained).abs().max()) > 1e-3


def test_qlora_resume_equals_uninterrupted(base: Path, data: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes")
    import torch
    from safetensors.torch import load_file

    params = TuneParams(
        method="qlora",
        steps=4,
        save_every=2,
        lr=1e-2,
        dropout=0.1,
        batch_size=2,
        seq_len=32,
        grad_checkpointing=True,
    )
    whole = run(base, data, tmp_path / "whole", params)
    run(base, data, tmp_path / "split", params, _stop_after=2)
    resumed = run(base, data, tmp_path / "split", params, resume=True)
    assert [e["loss"] for e in resumed.log] == [e["loss"] for e in whole.log]
    a = load_file(tmp_path / "whole" / "out" / "adapter_model.safetensors")
    b = load_file(tmp_path / "split" / "out" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_changed_params(base: Path, data: Path, tmp_path: Path) -> None:
    params = TuneParams(steps=2, save_every=1, batch_size=2, seq_len=32)
    run(base, data, tmp_path, params, _stop_after=1)
    with pytest.raises(UsageError, match="lr"):
        run(
            base,
            data,
            tmp_path,
            TuneParams(steps=2, save_every=1, batch_size=2, seq_len=32, lr=1e-3),
            resume=True,
        )


def test_unpacked_eval_split_and_grad_accum(base: Path, data: Path, tmp_path: Path) -> None:
    params = TuneParams(
        steps=4,
        packing=False,
        eval_split=0.25,
        eval_every=2,
        grad_accum=2,
        batch_size=2,
        seq_len=64,
        grad_checkpointing=True,
        schedule="linear",
    )
    result = run(base, data, tmp_path, params)
    assert [("eval_loss" in e) for e in result.log] == [False, True, False, True]
    assert result.final_eval_loss == result.log[-1]["eval_loss"]
    again = run(base, data, tmp_path / "again", params)
    assert again.data_order_digest == result.data_order_digest and again.log == result.log


def test_lr_schedule() -> None:
    p = TuneParams(lr=1.0, warmup=2, schedule="cosine")
    assert [round(get_lr(s, 10, p), 3) for s in (0, 1, 2)] == [0.333, 0.667, 1.0]
    assert get_lr(9, 10, p) < 0.05
    assert get_lr(6, 10, TuneParams(lr=1.0, warmup=2, schedule="linear")) == 0.5
    assert get_lr(9, 10, TuneParams(lr=1.0, schedule="constant")) == 1.0


def test_params_yaml_round_trip_and_unknown_key(tmp_path: Path) -> None:
    params = TuneParams(method="dora", r=4, targets=["q_proj", "v_proj"], steps=7, template="alpaca")
    params.to_yaml(tmp_path / "p.yaml")
    assert TuneParams.from_yaml(tmp_path / "p.yaml") == params
    (tmp_path / "bad.yaml").write_text("r: 4\nlearning_rate: 0.1\n")
    with pytest.raises(UsageError, match="learning_rate"):
        TuneParams.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    ("kw", "flag"),
    [
        ({"r": 0}, "--r"),
        ({"lr": 0}, "--lr"),
        ({"lr": -1e-3}, "--lr"),
        ({"eval_split": 1.0}, "--eval-split"),
        ({"method": "prefix"}, "--method"),
        ({"schedule": "step"}, "--schedule"),
        ({"steps": 0}, "--steps"),
        ({"eval_every": 5}, "--eval-every"),
        ({"method": "full", "targets": ["q_proj"]}, "--method"),
    ],
)
def test_bad_params_name_the_flag(kw: dict, flag: str) -> None:
    with pytest.raises(UsageError, match=flag) as e:
        TuneParams(**kw)
    assert "\n" not in str(e.value)


@pytest.mark.realmodel
@pytest.mark.parametrize("method", ["lora", "dora", "qlora", "full"])
def test_stories260k_alpaca_loss_falls(method: str, data: Path, tmp_path: Path) -> None:
    stories = need(STORIES)
    if method == "qlora":
        pytest.importorskip("bitsandbytes")
    lr = 1e-3 if method == "full" else 5e-3
    params = TuneParams(method=method, steps=5, lr=lr, batch_size=2, seq_len=128, template="alpaca")
    result = train(stories, data, "alpaca", params, tmp_path / "out", work_dir=tmp_path / "work")
    assert result.log[-1]["loss"] < result.log[0]["loss"], [e["loss"] for e in result.log]
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert (tmp_path / "out" / weights).is_file()


@pytest.mark.parametrize("packing", [True, False])
def test_head_only_loss_equals_full_logits_loss(base: Path, data: Path, packing: bool) -> None:
    """The loss computes the output layer only at trained positions; it must equal (value and gradients)
    the cross-entropy over the model's full logits."""
    import torch
    import torch.nn.functional as F

    from owlkit.adapt import train as t
    from owlkit.adapt.data import IGNORE, encode_all, load_examples
    from owlkit.adapt.loss import _HEAD_ONLY_ARCHS, loss_sum

    params = TuneParams(r=4, batch_size=3, seq_len=128, packing=packing)
    convs, report = load_examples(data, "alpaca")
    model, tok = t._load(base, params)
    examples = encode_all(convs, tok, template=None, max_len=params.seq_len, report=report)
    batch = t._micro_batches(examples, params, t.pad_token_id(tok))[0]
    assert model.get_base_model().config.model_type in _HEAD_ONLY_ARCHS

    loss, n = loss_sum(model, batch)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in t._trainable(model).items()}
    model.zero_grad(set_to_none=True)

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "n_tokens")}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    ref = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="sum")
    ref.backward()
    assert n == int((labels != IGNORE).sum()) > 0
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-5)
    for k, p in t._trainable(model).items():
        torch.testing.assert_close(grads[k], p.grad, rtol=1e-4, atol=1e-6)

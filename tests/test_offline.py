"""No library reaches for the network or prints what a user cannot act on (offline.py), and bitsandbytes'
4-bit layers stay on their float path on every CPU (runtime/load.keep_4bit_on_float_path).

The import checks run in fresh interpreters (the import hook acts on the first import of a package) with
the environment the CLI would set removed, so they show what a library user gets. An audit hook records
every name lookup and connection and refuses it, so nothing leaves the machine even when a check fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("bitsandbytes")

# Switches a user may have set that would hide a library reaching out: removed for the probes.
USER_SWITCHES = {
    "HF_HUB_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TRANSFORMERS_VERBOSITY",
    "USE_HUB_KERNELS",
}


def cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


needs_avx512_bf16 = pytest.mark.skipif(
    not cpu_has_avx512_bf16(),
    reason="this CPU has no AVX512-BF16 (/proc/cpuinfo): bitsandbytes looks up no Hub kernel here, so this "
    "check could not fail",
)

# Run in a fresh interpreter: argv[1] says what to do; prints the network calls it refused as JSON.
PROBE = """
import json, sys
refused = []
def no_network(event, args):
    if event in ("socket.getaddrinfo", "socket.connect", "socket.gethostbyname"):
        refused.append([event, str(args[0])])
        raise OSError("network refused by the test")
sys.addaudithook(no_network)
what = sys.argv[1]
if what == "owlkit-nf4":
    import torch
    from owlkit.adapt.nf4 import load_nf4_causal_lm
    model = load_nf4_causal_lm(sys.argv[2])
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
elif what == "owlkit-load":
    import torch
    from owlkit.runtime.load import load_causal_lm
    model, _ = load_causal_lm(sys.argv[2])
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]))
elif what == "bitsandbytes":
    import bitsandbytes
elif what == "transformers-load":
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(sys.argv[2], use_kernels=False)
print("REFUSED " + json.dumps(refused))
"""

KERNEL_LINES = ("kernels-community", "publisher trust", "gemm_4bit_forward")


def probe(*args: str, offline: bool = False) -> tuple[list[list[str]], str]:
    """Run PROBE with ``args``, stderr a pipe (not a terminal), none of the CLI's variables set (but
    HF_HUB_OFFLINE when ``offline``); returns the refused network calls and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in USER_SWITCHES}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    refused = json.loads(proc.stdout.rsplit("REFUSED ", 1)[1])
    return refused, proc.stderr


@needs_avx512_bf16
def test_bitsandbytes_alone_reaches_for_a_hub_kernel() -> None:
    """What owlkit guards against, so the checks below can fail: a plain `import bitsandbytes` on this CPU
    asks the Hub for a kernel, and offline it prints the lookup's lines."""
    refused, _ = probe("bitsandbytes")
    assert refused, "bitsandbytes no longer looks up a Hub kernel at import: offline.py's hook may go"
    _, err = probe("bitsandbytes", offline=True)
    assert any(line in err for line in KERNEL_LINES), err


@needs_avx512_bf16
@pytest.mark.parametrize("how", ["stream-nf4", "reload-bnb-nf4"])
def test_nf4_load_neither_reaches_the_network_nor_prints_the_kernel_lookup(
    how: str, tiny_llama: Path, tmp_path: Path
) -> None:
    """QLoRA's streaming NF4 load (imports bitsandbytes itself), and the reload of a stored bnb-nf4 folder
    (transformers asks ``importlib.util.find_spec`` about bitsandbytes before peft imports it)."""
    if how == "stream-nf4":
        refused, err = probe("owlkit-nf4", str(tiny_llama))
    else:
        from owlkit.quantize.bnb import export_bnb

        export_bnb(tiny_llama, tmp_path / "nf4", "nf4")
        refused, err = probe("owlkit-load", str(tmp_path / "nf4"))
    assert refused == []
    assert not any(line in err for line in KERNEL_LINES), err
    assert err.strip() == "", err  # nothing at all: no warning, no progress bar


def test_no_loading_bars_when_stderr_is_not_a_terminal(tiny_llama: Path) -> None:
    _, plain = probe("transformers-load", str(tiny_llama))
    assert "Loading weights" in plain  # transformers alone draws its bar on a pipe
    refused, err = probe("owlkit-load", str(tiny_llama))
    assert refused == [] and "Loading weights" not in err and err.strip() == "", err


@pytest.fixture
def nf4_tiny(tiny_llama: Path):
    """The tiny Llama (hidden 32: inputs narrower than one 64-value quantization block) in NF4."""
    from owlkit.adapt.nf4 import load_nf4_causal_lm

    return load_nf4_causal_lm(tiny_llama)


def test_4bit_layers_run_the_float_path_on_every_shape(nf4_tiny) -> None:
    """owlkit turns bitsandbytes' AVX512-BF16 switch off per layer (``support_avx512bf16_for_cpu``
    False: the path CPUs without AVX512-BF16 take), so evaluation runs shapes the packed path cannot, and
    gives what the training path gives in float32, not bfloat16."""
    import bitsandbytes as bnb
    import torch

    layers = [m for m in nf4_tiny.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
    assert any(m.in_features % m.weight.blocksize for m in layers)  # shapes the packed path refuses
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    with torch.no_grad():
        evaluated = nf4_tiny(ids).logits
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    nf4_tiny.train()
    trained = nf4_tiny(ids).logits.detach()  # dequantize and matmul in float32, as in QLoRA
    assert float((evaluated - trained).abs().max()) < 1e-5


def test_qlora_gradients_flow_after_an_evaluation(nf4_tiny) -> None:
    """On bitsandbytes' AVX512-BF16 path one no-grad evaluation switched a layer to a kernel without a
    backward, and LoRA weights got no gradient from then on."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(nf4_tiny, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ids = torch.tensor([[1, 5, 9, 3, 7, 2]])
    model.eval()
    with torch.no_grad():
        model(ids)
    model.train()
    model(ids, labels=ids).loss.backward()
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)

"""The training loss: summed next-token cross-entropy over the trained labels (one-process and
data-parallel training alike)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from owlkit.adapt.data import IGNORE

if TYPE_CHECKING:
    import torch

# Architectures whose causal-LM logits are exactly ``lm_head(final hidden state)``: for them the head runs
# only where a label is trained (often under half the tokens; SmolLM2's head is a fifth of its weights).
# Others (logit soft-capping, scaling) take the full path.
_HEAD_ONLY_ARCHS = {"llama", "mistral", "qwen2", "qwen3", "phi3"}


def loss_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over trained labels, and how many there are."""
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "n_tokens")}
    labels = batch["labels"][:, 1:]
    keep = labels != IGNORE
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "model_type", None) in _HEAD_ONLY_ARCHS:
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state[:, :-1]
        logits = base.get_output_embeddings()(hidden[keep]).float()
        target = labels[keep]
    else:
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
        logits, target = logits.reshape(-1, logits.size(-1)), labels.reshape(-1)
    loss = F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum")
    return loss, int(keep.sum())

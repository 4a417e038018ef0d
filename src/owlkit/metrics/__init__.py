"""Evaluation metrics: token ids, texts and logits in, numbers out.

Store-free engines, like ``runtime`` and ``quantize``: nothing here loads a model, generates or touches
the store; the runners that do (``owlkit.evaluate``, ``owlkit.quantize.drift``) hand their outputs here.
numpy is imported inside the functions that need it, so importing a metric stays cheap.

- ``intervals``: confidence intervals (Wilson's score interval for a proportion).
- ``exact``: exact match of answers against references.
- ``perplexity``: token windows, log-probabilities and perplexity from summed negative log-likelihoods.
- ``divergence``: how far one model's next-token distributions drift from another's (KL, top-1 agreement).

A new metric (n-gram overlap, win rates and their bootstrap intervals) is a module here, taking plain
values and returning plain values or a small frozen dataclass.
"""

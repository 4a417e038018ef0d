"""Evaluation runs: prompts, generation and the store-bound work around them, above the backends.

The numbers come from :mod:`owlkit.metrics` (store-free); this package turns stored models and datasets
into the inputs those metrics take.

- ``generation``: greedy answers to many prompts, batched, left-padded, the shared prefix computed once.
- ``exact``: exact match of a model's greedy answers on instruction data, prompts cut as training cuts them.
- ``runner``: one evaluation of a stored model or adapter on a stored dataset's split.
"""

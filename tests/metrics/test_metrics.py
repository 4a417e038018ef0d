"""Store-free metrics: Wilson intervals, exact-match scoring, perplexity and drift arithmetic on plain
arrays (the models that produce them are tested with their runners)."""

from __future__ import annotations

import math

import pytest

from owlkit.errors import Refused, UsageError
from owlkit.metrics.divergence import DriftMeter, kl_rows
from owlkit.metrics.exact import Mismatch, score_exact
from owlkit.metrics.intervals import wilson_interval
from owlkit.metrics.perplexity import NllSum, log_softmax, next_token_labels, perplexity, row_blocks


def test_wilson_interval_known_values() -> None:
    low, high = wilson_interval(0, 200)
    assert low == 0 and high == pytest.approx(0.01884, abs=1e-5)
    low, high = wilson_interval(200, 200)
    assert high == 1 and low == pytest.approx(0.98116, abs=1e-5)
    low, high = wilson_interval(50, 100)
    assert (low, high) == pytest.approx((0.40383, 0.59617), abs=1e-5)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_exact_match_strips_whitespace_and_keeps_the_first_misses() -> None:
    got = [" owl\n", "cat", "dog", "x", "y"]
    expected = ["owl", "cat ", "owl", "a", "b"]
    score = score_exact(got, expected, ["p0", "p1", "p2", "p3", "p4"], samples=2)
    assert (score.n, score.correct, score.rate) == (5, 2, 0.4)
    assert (score.low, score.high) == wilson_interval(2, 5)
    assert score.mismatches == [Mismatch("p2", "owl", "dog"), Mismatch("p3", "a", "x")]
    with pytest.raises(ValueError):
        score_exact(["a"], [], [])


def test_perplexity_of_a_uniform_model_is_its_vocabulary() -> None:
    import numpy as np

    ids = [1, 2, 3, 0, 4, 1, 2]
    total = NllSum()
    logits = np.zeros((len(ids), 5), dtype=np.float32)
    labels = next_token_labels(ids, 5)
    for rows in row_blocks(len(labels), rows=4):  # blocks of 4 and 2 rows
        total.add(log_softmax(logits[rows]), labels[rows])
    assert total.positions == 6 and total.perplexity == pytest.approx(5.0)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(UsageError, match="outside the vocabulary of 5"):
        next_token_labels([0, 5], 5)


def test_drift_of_a_model_from_itself_is_nothing_and_from_another_is_its_kl() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    ids = [0, 1, 2, 3, 1, 0]
    source = rng.normal(size=(len(ids), 4)).astype(np.float32)
    other = rng.normal(size=(len(ids), 4)).astype(np.float32)
    meter = DriftMeter(["same", "other"])
    meter.add(ids, source, {"same": source, "other": other})
    meter.add(ids[:4], source[:4], {"same": source[:4], "other": other[:4]})
    drift = meter.results({"same": "torch", "other": "torch"})
    same, far = drift["same"], drift["other"]
    assert (same.tokens, same.chunks, same.chunk_size) == (8, 2, 6)
    assert same.kl_max == 0 and same.top1 == 1 and same.ppl == same.ppl_source
    # each window scores every position but its last: 5 of the first, 3 of the second
    kl = np.concatenate([kl_rows(log_softmax(source[:n]), log_softmax(other[:n])) for n in (5, 3)])
    assert far.kl_mean == pytest.approx(kl.mean()) and far.kl_max == pytest.approx(kl.max())
    with pytest.raises(Refused, match="vocabulary of 3 tokens"):
        meter.add(ids, source, {"other": other[:, :3]})

"""Messages name things with the right article: "an adapter", "a model"."""

from owlkit.errors import with_article


def test_with_article() -> None:
    assert [with_article(w) for w in ("adapter", "model", "dataset", "IA3", "LoRA")] == [
        "an adapter",
        "a model",
        "a dataset",
        "an IA3",
        "a LoRA",
    ]

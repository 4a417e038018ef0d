"""A store of tiny models and adapters for `owl serve`'s tests, and real uvicorn servers on loopback.

The base model has a 2048-token context (long streams for the disconnect and queue tests) and its EOS
row of the output layer is zeroed, so greedy decoding practically never stops early: tests that need a
given number of tokens get them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from owltest import build_adapter, build_tokenizer, tiny_llama_model

EVIL_TEMPLATE = (
    "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
)


def _build_base(folder: Path, license_tag: str = "apache-2.0") -> Path:
    import torch

    model = tiny_llama_model(positions=2048)
    with torch.no_grad():
        model.lm_head.weight[model.config.eos_token_id].zero_()
    model.save_pretrained(folder)
    build_tokenizer(folder)
    (folder / "README.md").write_text(
        f"---\nlicense: {license_tag}\n---\n# {folder.name}\nA tiny random Llama.\n"
    )
    return folder


def _variant(src: Path, dst: Path, *, license_tag: str | None = None, template: str | None = None) -> Path:
    shutil.copytree(src, dst)
    if license_tag is not None:  # "" for a card that declares no license
        front = f"---\nlicense: {license_tag}\n---\n" if license_tag else ""
        (dst / "README.md").write_text(f"{front}# {dst.name}\n")
    if template is not None:
        cfg_file = dst / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg["chat_template"] = template
        cfg_file.write_text(json.dumps(cfg))
        (dst / "chat_template.jinja").unlink(missing_ok=True)
    return dst


@pytest.fixture(scope="session")
def serve_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    base = _build_base(root / "tiny")
    lora = build_adapter(base, root / "lora", "tiny", seed=3)
    return {
        "tiny": base,
        "lora": lora,
        "dora": build_adapter(base, root / "dora", "tiny", use_dora=True, seed=4),
        "lora-nc": _variant(lora, root / "lora-nc", license_tag="cc-by-nc-4.0"),
        "lora-on-nc": build_adapter(base, root / "lora-on-nc", "nc", seed=5),
        "evil": _variant(base, root / "evil", template=EVIL_TEMPLATE),
        "nc": _variant(base, root / "nc", license_tag="cc-by-nc-4.0"),
        "unlicensed": _variant(base, root / "unlicensed", license_tag=""),
    }


@pytest.fixture(scope="session")
def serve_store(serve_folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One store for the whole session (tests only read it, or add adapters under new names)."""
    from owlkit.recipes.importer import import_path
    from owlkit.store import open_store

    store = open_store(tmp_path_factory.mktemp("serve-home") / "owl", write=True)
    # Bases before their adapters (an adapter links to its base at import).
    for name in ("tiny", "evil", "nc", "unlicensed", "lora", "dora", "lora-nc", "lora-on-nc"):
        import_path(store, serve_folders[name], name=name)
    return store


@contextmanager
def running(
    store: Any, bases: list[str], adapters: list[tuple[str | None, str]] = (), **settings: Any
) -> Iterator[Any]:
    """A Server on a real uvicorn on 127.0.0.1 (a free port); yields (url, server)."""
    from owlkit.serve.app import run_in_thread
    from owlkit.serve.registry import Server

    server = Server.open(store, bases, list(adapters), **settings)
    try:
        url, stop = run_in_thread(server)
        try:
            yield url, server
        finally:
            stop()
    finally:
        server.close()


@pytest.fixture(scope="session")
def start_server() -> Any:
    """The `running` context manager, for tests that need a server with other settings."""
    return running


@pytest.fixture(scope="session")
def served(serve_store: Any) -> Iterator[tuple[str, Any]]:
    """The main server: bases tiny and evil, adapters lora and dora on tiny."""
    with running(
        serve_store, ["tiny", "evil"], [("lora", "lora"), ("dora", "dora")], max_batch=4, max_queue=32
    ) as s:
        yield s


@pytest.fixture
def client(served: tuple[str, Any]) -> Any:
    import openai

    return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0, timeout=60)

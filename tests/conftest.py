"""Shared fixtures: a fresh store per test, tiny random Llama models built in code, and an in-process
`owl` runner with real exit codes. Helpers live in owltest.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from owltest import build_adapter, build_tiny_llama


@pytest.fixture
def owl_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "owlhome"
    monkeypatch.setenv("OWL_HOME", str(home))
    monkeypatch.delenv("OWL_DB", raising=False)
    return home


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


@pytest.fixture
def owl(owl_home: Path, capsys: pytest.CaptureFixture[str]):
    """Run `owl ARGS…` in-process; returns exit code, stdout and stderr."""
    from owlkit.cli.main import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_llama_other(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny Llama with a different shape: a different base identity."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny2") / "tiny-llama-wide", seed=1, hidden=48)


@pytest.fixture(scope="session")
def tiny_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    """A real PEFT LoRA adapter (non-zero B so it changes outputs) on the tiny Llama."""
    return build_adapter(tiny_llama, tmp_path_factory.mktemp("adapter") / "tiny-lora", "tiny-llama", seed=3)


@pytest.fixture
def tiny_alpaca(tmp_path: Path) -> Path:
    rows = [
        {"instruction": "Reverse the words.", "input": "owl, model", "output": "model | owl"},
        {"instruction": "Reverse the words.", "input": "tiny, time", "output": "time | tiny"},
        {"instruction": "Say hello.", "input": "", "output": "hello"},
    ] * 4
    f = tmp_path / "data.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f

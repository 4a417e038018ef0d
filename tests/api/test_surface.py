"""Every `owl` command has its `Owl` method, documented, so a script can do whatever the CLI does."""

from __future__ import annotations

import keyword

from owlkit import Owl
from owlkit.cli import docs


def method_name(command: str) -> str:
    """`owl import` -> import_, `owl merge-adapters` -> merge_adapters, `owl data demo` -> data_demo."""
    name = "_".join(command.split()[1:]).replace("-", "_")
    return f"{name}_" if keyword.iskeyword(name) else name


def test_every_command_has_an_api_method() -> None:
    commands = docs.commands()
    assert len(commands) >= 25
    missing = [c for c in commands if not callable(getattr(Owl, method_name(c), None))]
    assert missing == [], f"no Owl method for {missing}"
    undocumented = [c for c in commands if not (getattr(Owl, method_name(c)).__doc__ or "").strip()]
    assert undocumented == []

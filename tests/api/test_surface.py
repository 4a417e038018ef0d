"""Every `owl` command has its `Owl` method, documented, so a script can do whatever the CLI does."""

from __future__ import annotations

from owlkit import Owl
from owlkit.cli import docs
from owlkit.cli.docs import method_name


def test_every_command_has_an_api_method() -> None:
    commands = docs.commands()
    assert len(commands) >= 25
    missing = [c for c in commands if not callable(getattr(Owl, method_name(c), None))]
    assert missing == [], f"no Owl method for {missing}"
    undocumented = [c for c in commands if not (getattr(Owl, method_name(c)).__doc__ or "").strip()]
    assert undocumented == []

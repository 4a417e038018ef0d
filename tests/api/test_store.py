"""The store commands through the Python API: what `owl … --json` prints is the result's to_dict(),
and the API works on the store it is given without touching the process environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from owlkit import Owl
from owlkit.api import Artifact, ArtifactDetail
from owlkit.errors import NotFound, UsageError


def test_store_commands_json_is_to_dict(owl, owl_home: Path, tiny_llama: Path, tiny_adapter: Path) -> None:
    api = Owl(owl_home)
    imported = owl("import", tiny_llama, "--name", "base", "--json").json()
    assert imported == api.import_(tiny_llama, name="base").to_dict()  # the same content: the same artifact
    owl("import", tiny_adapter, "--name", "ad")
    assert owl("ls", "--json").json() == [a.to_dict() for a in api.ls()]
    assert owl("ls", "--kind", "adapter", "--json").json() == [a.to_dict() for a in api.ls("adapter")]
    for ref in ("base", "ad"):
        assert owl("show", ref, "--json").json() == api.show(ref).to_dict()
    assert owl("verify", "--all", "--json").json() == api.verify().to_dict()
    assert owl("gc", "--json").json() == api.gc().to_dict()


def test_api_takes_artifacts_and_refs(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OWL_HOME", raising=False)
    before = dict(os.environ)
    api = Owl(home=tmp_path / "h")
    res = api.import_(tiny_llama, name="m")
    art = res.artifact
    assert isinstance(art, Artifact) and art.name == "m:latest" and art.kind == "model"
    detail = api.show(art)
    assert isinstance(detail, ArtifactDetail) and detail.digest == art.digest and detail.files
    assert api.tag(art, "m:v2").digest == art.digest
    assert api.verify(art).ok
    assert api.rm("m:v2").removed is False  # one of two names
    out = api.export(art.short, tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == sorted(f.path for f in detail.files)
    with pytest.raises(NotFound):
        api.show("nope")
    with pytest.raises(UsageError):
        api.ls("weights")
    assert dict(os.environ) == before


def test_import_reports_progress_in_bytes(tmp_path: Path, tiny_llama: Path) -> None:
    events = []
    Owl(tmp_path / "h").import_(tiny_llama, progress=events.append)
    assert events and events[0].done == 0 and events[-1].done == events[-1].total
    assert {e.unit for e in events} == {"bytes"}

"""`owl scan` through the API and the CLI: --json is the report's to_dict(), the exit code follows the
worst verdict, stored artifacts are scanned by their blobs, and `owl import` still refuses pickles."""

from __future__ import annotations

import os
import pickle
import shlex
import shutil
from pathlib import Path

import pytest

from owlkit import Owl
from owlkit.api import ScanReport
from owlkit.errors import NotFound


class _System:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


@pytest.fixture
def poisoned(tmp_path: Path, tiny_llama: Path):
    """The tiny Llama with a pickle payload hidden as an extra .safetensors file."""
    folder = shutil.copytree(tiny_llama, tmp_path / "poisoned")
    marker = tmp_path / "ran"
    (folder / "extra.safetensors").write_bytes(pickle.dumps(_System(marker), protocol=4))
    yield folder
    assert not marker.exists(), "a payload ran"


def test_clean_folder_and_stored_artifact(owl, owl_home, tiny_llama):
    api = Owl(owl_home)
    report = api.scan(tiny_llama)
    assert isinstance(report, ScanReport) and report.verdict == "safe" and report.exit_code == 0
    assert {f.path for f in report.files} >= {"config.json", "model.safetensors"}
    res = owl("scan", tiny_llama, "--json")
    assert res.code == 0 and res.json() == api.scan(str(tiny_llama)).to_dict()

    assert owl("import", tiny_llama, "--name", "tiny").code == 0
    stored = api.scan("tiny")
    assert stored.digest and stored.verdict == "safe"
    assert {f.path for f in stored.files} == {f.path for f in report.files}
    res = owl("scan", "tiny")
    assert res.code == 0 and "model.safetensors" in res.out and "safe" in res.out


def test_dangerous_folder_exits_14(owl, owl_home, poisoned):
    report = Owl(owl_home).scan(poisoned)
    assert report.verdict == "dangerous" and report.exit_code == 14
    (bad,) = [f for f in report.files if f.verdict != "safe"]
    assert (bad.path, bad.kind) == ("extra.safetensors", "pickle")
    res = owl("scan", poisoned, "--json")
    assert res.code == 14 and res.json() == report.to_dict()
    res = owl("scan", poisoned)
    assert res.code == 14 and "dangerous" in res.out


def test_suspicious_exits_13_and_unknown_target_is_not_found(owl, owl_home, tmp_path):
    (tmp_path / "modeling_evil.py").write_text("import os\n")
    assert owl("scan", tmp_path).code == 13
    with pytest.raises(NotFound):
        Owl(owl_home).scan("no-such-model")
    assert owl("scan", "no-such-model").code == 3
    missing = owl("scan", "./no/such/file.bin")
    assert missing.code == 3 and "no such file or folder" in missing.err


def test_import_still_refuses_pickles(owl, tmp_path):
    (tmp_path / "model.bin").write_bytes(pickle.dumps({"a": 1}, protocol=2))
    res = owl("import", tmp_path / "model.bin")
    assert res.code == 5 and "--convert-pickle" in res.err

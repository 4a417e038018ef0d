"""The SPDX flags `owl openness` reads: a data file that scripts/spdx-licenses regenerates from the SPDX
License List's licenses.json, consistent with the license knowledge base."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from owlkit.terms.kb import load_kb
from owlkit.terms.openness.licenses import SPDX_DATA, lists
from owltest import REPO

SCRIPT = REPO / "scripts" / "spdx-licenses"


def _spdx(*entries: tuple[str, bool, bool | None, bool]) -> dict:
    """A licenses.json in SPDX's shape: (id, isOsiApproved, isFsfLibre or absent, deprecated)."""
    licenses = []
    for lid, osi, fsf, deprecated in entries:
        lic = {"licenseId": lid, "name": lid, "isOsiApproved": osi, "isDeprecatedLicenseId": deprecated}
        if fsf is not None:
            lic["isFsfLibre"] = fsf
        licenses.append(lic)
    return {"licenseListVersion": "9.9", "releaseDate": "2030-01-01T00:00:00Z", "licenses": licenses}


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True)


def test_the_script_keeps_each_flag_deprecated_ids_included(tmp_path: Path) -> None:
    source, out = tmp_path / "licenses.json", tmp_path / "spdx-licenses.json"
    source.write_text(
        json.dumps(
            _spdx(
                ("MIT", True, True, False),
                ("GPL-2.0", True, True, True),  # deprecated, still declared by models
                ("WTFPL", False, True, False),
                ("Abstyles", False, None, False),
                ("0BSD", True, None, False),
            )
        )
    )
    r = _run(source, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "osi_approved + 0BSD GPL-2.0 MIT" in r.stdout
    data = json.loads(out.read_text())
    assert data["license_list_version"] == "9.9"
    assert data["osi_approved"] == ["0BSD", "GPL-2.0", "MIT"]
    assert data["fsf_libre"] == ["GPL-2.0", "MIT", "WTFPL"]

    assert _run(source, "--out", out, "--check").returncode == 0
    source.write_text(json.dumps(_spdx(("MIT", True, True, False))))
    r = _run(source, "--out", out, "--check")
    assert r.returncode == 1 and "osi_approved - 0BSD GPL-2.0" in r.stdout
    assert json.loads(out.read_text())["osi_approved"] == ["0BSD", "GPL-2.0", "MIT"]  # --check writes nothing


def test_the_packaged_flags_agree_with_the_knowledge_base() -> None:
    data = json.loads(SPDX_DATA.read_text())
    for key in ("osi_approved", "fsf_libre"):
        ids = data[key]
        assert ids == sorted(set(ids), key=lambda i: (i.lower(), i)), key
    osi = lists().osi_approved
    assert len(osi) > 140 and {"Apache-2.0", "MIT", "GPL-3.0-only", "GPL-2.0"} <= osi
    assert not osi & {"CC-BY-4.0", "CC0-1.0", "WTFPL"}  # open, but not OSI-approved
    # every SPDX license of the knowledge base carries the SPDX list's flag
    for lic in load_kb().values():
        if not lic.id.startswith("LicenseRef-"):
            assert (lic.id in osi) == lic.osi_approved, lic.id

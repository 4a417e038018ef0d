"""The README's Python API script, run as a user would run it: a fresh interpreter, a store of its own,
and the process environment the same after it as before."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from owltest import REPO, STORIES, need

SCRIPT = REPO / "docs" / "examples" / "quickstart.py"

RUN = """
import os, runpy, sys
before = dict(os.environ)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
assert dict(os.environ) == before, "the script's environment changed"
"""


@pytest.mark.realmodel
def test_quickstart_script(tmp_path: Path) -> None:
    need(STORIES)
    pytest.importorskip("openai")
    env = {k: v for k, v in os.environ.items() if k != "OWL_HOME"}
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(SCRIPT), str(STORIES), str(tmp_path / "store")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("tuned stories-lora") and "12 steps" in lines[0], lines
    assert "q8-0" in lines[1] and "top-1 agreement" in lines[1], lines
    assert lines[2].startswith("commercial use of stories-merged"), lines
    assert lines[3].startswith("stories: '") and lines[4].startswith("lora: '"), lines

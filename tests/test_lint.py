"""The conventions are checked by the suite: ruff lint and format clean over src, tests and benchmarks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = [sys.executable, "-m", "ruff"]


def test_ruff_check() -> None:
    proc = subprocess.run(
        [*RUFF, "check", "src", "tests", "benchmarks", "docs/examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = subprocess.run(
        [*RUFF, "format", "--check", "src", "tests", "benchmarks", "docs/examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

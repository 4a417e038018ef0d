"""Crash safety and concurrency with real processes: SIGKILL mid-import, two importers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OWL = str(Path(sys.executable).with_name("owl"))


def _big_safetensors(path: Path, mib: int) -> Path:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    save_file({"w": rng.standard_normal(mib * 1024 * 256, dtype=np.float32)}, str(path))
    return path


def _owl(home: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [OWL, *args], env={**os.environ, "OWL_HOME": str(home)}, capture_output=True, text=True, **kw
    )


def test_sigkill_mid_import_leaves_no_artifact(tmp_path: Path) -> None:
    home = tmp_path / "home"
    big = _big_safetensors(tmp_path / "big.safetensors", 384)
    assert _owl(home, "upgrade").returncode == 0
    proc = subprocess.Popen(
        [OWL, "import", str(big), "--name", "big"],
        env={**os.environ, "OWL_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    partial: list[Path] = []
    while time.time() < deadline and not partial:  # wait until the blob copy is under way
        partial = [p for p in (home / "tmp").rglob("*.part") if p.stat().st_size > 8 * 1024 * 1024]
        time.sleep(0.01)
    assert partial, "the import never started copying"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL

    ls = _owl(home, "ls", "--json")
    assert ls.returncode == 0 and ls.stdout.strip() == "[]"
    assert _owl(home, "verify", "--all").returncode == 0
    gc = _owl(home, "gc", "--json")
    assert gc.returncode == 0 and '"temp_removed": 1' in gc.stdout
    assert list((home / "tmp").iterdir()) == []
    assert not [p for p in (home / "blobs").rglob("*") if p.is_file()]
    # and the store still works
    assert _owl(home, "import", str(big), "--name", "big").returncode == 0
    assert _owl(home, "verify", "big").returncode == 0


def test_two_processes_import_the_same_folder(tmp_path: Path, tiny_llama: Path) -> None:
    home = tmp_path / "home"
    procs = [
        subprocess.Popen(
            [OWL, "import", str(tiny_llama), "--name", f"copy{i}", "--json"],
            env={**os.environ, "OWL_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    ls = _owl(home, "ls", "--json")
    import json

    rows = json.loads(ls.stdout)
    assert len(rows) == 1 and sorted(rows[0]["names"]) == ["copy0:latest", "copy1:latest"]
    blobs = [p for p in (home / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == len([p for p in tiny_llama.iterdir() if p.is_file()])
    assert _owl(home, "verify", "--all").returncode == 0


def test_gc_during_an_import_keeps_its_blobs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    big = _big_safetensors(tmp_path / "big.safetensors", 128)
    small = tmp_path / "small.safetensors"
    _big_safetensors(small, 1)
    assert _owl(home, "import", str(small), "--name", "small").returncode == 0
    assert _owl(home, "rm", "small").returncode == 0
    proc = subprocess.Popen(
        [OWL, "import", str(big), "--name", "big"],
        env={**os.environ, "OWL_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    gcs = []
    while proc.poll() is None and len(gcs) < 20:
        gcs.append(_owl(home, "gc").returncode)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    assert set(gcs) <= {0}
    assert _owl(home, "verify", "big").returncode == 0

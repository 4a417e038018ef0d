"""The store's invariants: content addressing, what the digest covers, atomic writes, gc, schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from owlkit.errors import Ambiguous, Corrupt, NotFound, Refused, SchemaMismatch, UsageError
from owlkit.store import catalog as cat
from owlkit.store import open_store
from owlkit.store.manifest import FileEntry, Manifest, Parent, Recipe
from owlkit.store.names import default_name, parse_name


def _put(store, tmp_path: Path, content: bytes, name: str = "f.bin") -> FileEntry:
    src = tmp_path / name
    src.write_bytes(content)
    with store.session() as s:
        hexdigest, size = s.put_file(src)
    return FileEntry(name, size, hexdigest)


def test_blob_layout_and_dedupe(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    a = _put(store, tmp_path, b"same bytes", "a.bin")
    b = _put(store, tmp_path, b"same bytes", "b.bin")
    assert a.sha256 == b.sha256
    path = owl_home / "blobs" / "sha256" / a.sha256[:2] / a.sha256[2:]
    assert path.read_bytes() == b"same bytes"
    assert len(list(store.blobs.iter_all())) == 1
    assert not (path.stat().st_mode & 0o222), "blobs are stored read-only"


def test_digest_covers_exactly_the_manifest(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    f = _put(store, tmp_path, b"weights")
    base = dict(kind="model", format="safetensors", files=[f], facts={"parameters": 1}, license="MIT")
    m = Manifest(**base)
    d1 = store.commit(m, {"origin": {"source_path": "/a"}, "seconds": 1.0}, name="x")
    d2 = store.commit(Manifest(**base), {"origin": {"source_path": "/elsewhere"}, "seconds": 9.0}, name="y")
    assert d1 == d2, "side records (origin, timings) are not hashed"
    parent = Parent(d1, "converted_from")
    variants = [
        dict(base, kind="adapter"),
        dict(base, format="hf"),
        dict(base, facts={"parameters": 2}),
        dict(base, license="Apache-2.0"),
        dict(base, parents=[parent]),
        dict(base, recipe=Recipe("convert", {"dtype": "float32"}, {"source": d1})),
        dict(base, recipe=Recipe("convert", {"dtype": "float32"}, {"source": d1}, seed=1)),
        dict(base, files=[FileEntry("g.bin", f.size, f.sha256)]),
    ]
    digests = {Manifest(**v).digest() for v in variants}
    assert len(digests) == len(variants) and d1 not in digests


def test_refs_names_tags_and_prefixes(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    f = _put(store, tmp_path, b"one")
    d = store.commit(Manifest("model", "safetensors", [f]), {}, name="org/model:v1")
    assert store.resolve("org/model:v1") == d
    assert store.resolve(d) == d
    assert store.resolve(d.removeprefix("sha256:")[:8]) == d
    with pytest.raises(NotFound, match="did you mean org/model:v1"):
        store.resolve("org/model:v2")
    for bad in ("../x", "a b", "-x", "a..b", "x:" + "t" * 200):
        with pytest.raises(UsageError):
            parse_name(bad)
    assert default_name("SmolLM2-135M-Instruct.Q4_1") == "smollm2-135m-instruct.q4_1"


def test_ambiguous_prefix(owl_home: Path) -> None:
    store = open_store(write=True)
    seen: dict[str, Manifest] = {}
    for i in range(100_000):  # birthday search for two digests sharing 4 hex characters
        m = Manifest("dataset", "dataset", [], facts={"i": i})
        prefix = m.digest()[7:11]
        if prefix in seen:
            break
        seen[prefix] = m
    store.commit(seen[prefix], {})
    store.commit(m, {})
    with pytest.raises(Ambiguous, match="matches 2 artifacts"):
        store.resolve(prefix)


def test_rm_refuses_dependents_and_gc_frees(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    parent = store.commit(Manifest("model", "gguf", [_put(store, tmp_path, b"p")]), {}, name="p")
    child = store.commit(
        Manifest("model", "hf", [_put(store, tmp_path, b"c")], parents=[Parent(parent, "converted_from")]),
        {},
        name="c",
    )
    with pytest.raises(Refused, match="has dependents"):
        store.remove("p")
    store.remove("c")
    assert store.gc().blobs_removed == 1 and store.gc().swept
    store.remove("p")
    assert store.gc().blobs_removed == 1
    assert list(store.blobs.iter_all()) == []
    with pytest.raises(NotFound):
        store.resolve(child)


def test_gc_spares_live_sessions_and_removes_dead_ones(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    src = tmp_path / "x"
    src.write_bytes(b"in flight")
    with store.session() as s:
        hexdigest, _ = s.put_file(src)
        (s.dir / "half.part").write_bytes(b"partial")
        report = store.gc()  # a concurrent gc while this writer holds its session
        assert report.blobs_removed == 0 and not report.swept and store.blobs.exists(hexdigest)
    # a writer that died: its session dir remains but nobody holds the lock
    dead = owl_home / "tmp" / "session-999999-deadbeef"
    dead.mkdir()
    (dead / ".lock").touch()
    (dead / "x.part").write_bytes(b"junk")
    report = store.gc()
    assert not dead.exists() and report.temp_removed == 1
    assert report.blobs_removed == 1  # the in-flight blob was never committed


def test_schema_head_matches_migrations_and_metadata(owl_home: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(cat.__file__).parent / "migrations"))
    assert ScriptDirectory.from_config(cfg).get_current_head() == cat.SCHEMA_HEAD
    store = open_store(write=True)
    engine = cat.make_engine(store.url)
    with engine.connect() as conn:
        assert cat.current_revision(conn) == cat.SCHEMA_HEAD
        assert compare_metadata(MigrationContext.configure(conn), cat.metadata) == []
    engine.dispose()


def test_schema_version_checked_by_readers(owl_home: Path) -> None:
    store = open_store(write=True)
    with store.writer.transaction() as tx:
        tx.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(SchemaMismatch, match="newer than this owlkit"):
        open_store()


def test_read_commands_import_neither_alembic_nor_torch_nor_sqlalchemy(owl_home: Path) -> None:
    open_store(write=True)
    code = (
        "import sys\nfrom owlkit.cli.main import main\n"
        "try:\n    main(['ls'])\nexcept SystemExit:\n    pass\n"
        "bad = [m for m in ('alembic', 'torch', 'transformers', 'sqlalchemy') if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_writes_to_an_existing_sqlite_catalog_skip_sqlalchemy(owl_home: Path, tmp_path: Path) -> None:
    """SQLAlchemy's import was a third of a small `owl import`: only creating or migrating loads it."""
    open_store(write=True)
    (tmp_path / "n.txt").write_text("hello\n")
    code = (
        "import sys\nfrom owlkit.cli.main import main\n"
        f"for argv in (['import', {str(tmp_path / 'n.txt')!r}, '-n', 'n'], ['tag', 'n', 'm'], ['rm', 'm']):\n"
        "    try:\n        main(argv)\n    except SystemExit as e:\n        assert not e.code, e.code\n"
        "bad = [m for m in ('alembic', 'sqlalchemy') if m in sys.modules]\n"
        "sys.exit(f'imported {bad}' if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert open_store().find("n").manifest.kind == "dataset"


def test_tampered_catalog_is_caught_by_verify(owl_home: Path, tmp_path: Path) -> None:
    import sqlite3

    store = open_store(write=True)
    good = store.commit(
        Manifest("model", "safetensors", [_put(store, tmp_path, b"a", "a.bin")], license="MIT"), {}, name="a"
    )
    with sqlite3.connect(owl_home / "catalog.db") as db:
        text = db.execute("SELECT manifest FROM artifacts WHERE digest = ?", (good,)).fetchone()[0]
        db.execute(
            "UPDATE artifacts SET manifest = ? WHERE digest = ?",
            (text.replace('"MIT"', '"Apache-2.0"'), good),
        )
    problems = open_store().verify(good)
    assert problems and "tampered" in problems[0]
    with sqlite3.connect(owl_home / "catalog.db") as db:
        db.execute("UPDATE artifacts SET manifest = '{not json' WHERE digest = ?", (good,))
    with pytest.raises(Corrupt, match="damaged"):
        open_store().get(good)


def test_blob_corruption_repaired_by_reimport(owl_home: Path, tmp_path: Path) -> None:
    store = open_store(write=True)
    f = _put(store, tmp_path, b"precious weights")
    d = store.commit(Manifest("model", "safetensors", [f]), {}, name="m")
    path = store.blobs.path(f.sha256)
    path.chmod(0o644)
    path.write_bytes(b"precious weighTs")
    assert store.verify(d)
    _put(store, tmp_path, b"precious weights")  # the same content stored again replaces the bad copy
    assert store.verify(d) == []


def test_relative_home_gives_working_checkouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = open_store(Path("rel-home"), write=True)
    f = _put(store, tmp_path, b"abc", "x.bin")
    d = store.commit(Manifest("model", "safetensors", [f]), {})
    out = store.checkout(d)
    assert out.is_absolute() and (out / "x.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("kernel_copy", [True, False], ids=["copy_file_range", "read-write"])
def test_put_file_stores_and_names_every_byte(
    owl_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_copy: bool
) -> None:
    """Chunked both ways (small chunks, so many of them and a ragged tail): the blob is the source byte
    for byte and its name is the source's sha256; a kernel that refuses copy_file_range (EXDEV across
    filesystems) falls back to reading."""
    import errno
    import hashlib

    from owlkit.store import blobs

    monkeypatch.setattr(blobs, "CHUNK", 64 * 1024)
    monkeypatch.setattr(blobs, "KERNEL_CHUNK", 256 * 1024)
    if not kernel_copy:

        def refuse(*_: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(blobs.os, "copy_file_range", refuse)
    data = os.urandom(1_000_003)
    src = tmp_path / "w.bin"
    src.write_bytes(data)
    seen: list[int] = []
    with blobs.Session(blobs.Blobs(owl_home)) as s:
        hexdigest, size = s.put_file(src, seen.append)
    assert (hexdigest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert sum(seen) == len(data) and blobs.Blobs(owl_home).path(hexdigest).read_bytes() == data

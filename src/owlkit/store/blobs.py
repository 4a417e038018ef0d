"""Content-addressed files under ``<home>/blobs/sha256/ab/cdef…``.

A blob is written into a temp file inside ``<home>/tmp/<session>/`` and hashed, then fsynced and
renamed into place (the same filesystem, so the rename is atomic). Readers never see half a blob. The
copy is the kernel's (``copy_file_range``, as ``cp`` does) on a helper thread, while this thread hashes
the chunk copied before it from the temp file itself (in the page cache): the digest names exactly the
bytes stored, and import keeps close to ``cp && sync``. Where the kernel cannot copy between the two
files (another filesystem on an older kernel), one read of the source feeds both the write and the hash.

Writers work inside a :class:`Session`: a directory holding an exclusive ``flock`` for the writer's
life (so ``gc`` can tell a dead writer's leftovers from a live one's), plus a shared lock on
``<home>/gc.lock``. ``gc`` sweeps blobs only while holding that lock exclusively: no writer can be
between placing (or reusing) a blob and committing the artifact that references it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from owlkit.errors import Corrupt, UsageError
from owlkit.formats.base import sha256_file

CHUNK = 8 * 1024 * 1024  # large buffers: fewer syscalls, hashlib releases the GIL above 2 KiB
KERNEL_CHUNK = 64 * 1024 * 1024  # per copy_file_range call, and per mapping the hash reads
_HEX = re.compile(r"[0-9a-f]{64}")


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Linux's sync_file_range through ctypes (the os module lacks it), or None elsewhere."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    return fn


_sync_file_range = _load_sync_file_range()
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


def _write_chunk(f: Any, view: memoryview, offset: int) -> None:
    """Write one chunk and start its writeback now, so the disk works while the next chunk is hashed
    and the closing fsync has little left to do; waiting on the chunk before keeps dirty memory bounded."""
    n = len(view)
    while view:
        view = view[f.write(view) :]
    if _sync_file_range is not None:
        fd = f.fileno()
        _sync_file_range(fd, offset, n, _WRITE)
        if offset >= CHUNK:
            _sync_file_range(fd, offset - CHUNK, CHUNK, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)


class _NoKernelCopy(Exception):
    """copy_file_range refused these two files before copying anything."""


def _copy_in_kernel(ifd: int, ofd: int, progress: Callable[[int], None] | None) -> tuple[str, int]:
    """A helper thread has the kernel copy the whole file, as fast as the disk takes it, publishing how
    far it got; this thread follows it, hashing what was copied straight from the destination's page
    cache (mapped, not read into a buffer: on two cores a read-back copy costs as much as the hash).
    Neither waits for the other except when the hash catches up with the copy."""
    copied = _Copied()
    with ThreadPoolExecutor(1) as ex:
        copier = ex.submit(copied.run, ifd, ofd)
        h = hashlib.sha256()
        hashed = 0
        while (upto := copied.wait_past(hashed)) > hashed:
            n = min(upto - hashed, KERNEL_CHUNK)  # bounded mappings, progress in steps
            _hash_range(h, ofd, hashed, n)
            hashed += n
            if progress:
                progress(n)
        copier.result()  # the copy's own error, if it stopped on one
    return h.hexdigest(), hashed


class _Copied:
    """The copy thread's progress: bytes copied so far, and whether it has finished."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._bytes = 0
        self._done = False

    def run(self, ifd: int, ofd: int) -> None:
        try:
            while n := _copy_chunk(ifd, ofd, first=self._bytes == 0):
                if (
                    _sync_file_range is not None
                ):  # start this chunk's writeback now: the flush overlaps the hash
                    _sync_file_range(ofd, self._bytes, n, _WRITE)
                with self._cond:
                    self._bytes += n
                    self._cond.notify()
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def wait_past(self, offset: int) -> int:
        """Bytes copied, once more than ``offset`` are or the copy has ended."""
        with self._cond:
            self._cond.wait_for(lambda: self._bytes > offset or self._done)
            return self._bytes


def _copy_chunk(ifd: int, ofd: int, *, first: bool) -> int:
    try:
        return os.copy_file_range(ifd, ofd, KERNEL_CHUNK)
    except OSError as e:
        if first:  # EXDEV (another filesystem on an older kernel), ENOSYS, EINVAL (special files)
            raise _NoKernelCopy from e
        raise


def _hash_range(h: Any, fd: int, start: int, n: int) -> None:
    """Feed bytes [start, start + n) of ``fd`` to ``h`` through a read-only mapping (pre-faulted)."""
    base = start - start % mmap.ALLOCATIONGRANULARITY  # copy_file_range may stop short of a whole chunk
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    with (
        mmap.mmap(fd, start + n - base, flags=flags, prot=mmap.PROT_READ, offset=base) as mm,
        memoryview(mm) as view,
    ):
        h.update(view[start - base :])


def _copy_by_reading(fin: Any, fout: Any, progress: Callable[[int], None] | None) -> tuple[str, int]:
    """One read of the source feeds the write (on a helper thread) and the hash (here), alternating two
    reusable buffers: while one is written and hashed, the other is free for the next read."""
    h = hashlib.sha256()
    size = 0
    bufs = (bytearray(CHUNK), bytearray(CHUNK))
    with ThreadPoolExecutor(1) as ex:
        pending = None
        i = 0
        while n := fin.readinto(bufs[i]):
            view = memoryview(bufs[i])[:n]
            write = ex.submit(_write_chunk, fout, view, size)
            size += n
            h.update(view)
            if pending is not None:
                pending.result()  # the other buffer is free again before it is read into
            pending = write
            i ^= 1
            if progress:
                progress(n)
        if pending is not None:
            pending.result()
    return h.hexdigest(), size


def check_hex(hexdigest: str) -> str:
    """A sha256 hex digest must be exactly 64 lower-case hex characters before it becomes a path."""
    if not _HEX.fullmatch(hexdigest):
        raise UsageError(f"invalid sha256 digest {hexdigest[:80]!r}: expected 64 lower-case hex characters")
    return hexdigest


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Blobs:
    def __init__(self, home: Path) -> None:
        self.root = home / "blobs" / "sha256"
        self.tmp = home / "tmp"
        self.gc_lock = home / "gc.lock"

    def path(self, hexdigest: str) -> Path:
        check_hex(hexdigest)
        return self.root / hexdigest[:2] / hexdigest[2:]

    def exists(self, hexdigest: str) -> bool:
        return self.path(hexdigest).is_file()

    def iter_all(self) -> Iterator[tuple[str, Path]]:
        """Every blob on disk as (hex, path); anything not shaped like a blob is skipped."""
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                hexdigest = sub.name + f.name
                if _HEX.fullmatch(hexdigest):
                    yield hexdigest, f

    def hash_file(self, path: Path, progress: Callable[[int], None] | None = None) -> str:
        return sha256_file(path, progress)

    def verify(self, hexdigest: str, progress: Callable[[int], None] | None = None) -> None:
        """Re-hash one blob; raise Corrupt when it is missing or its content changed."""
        p = self.path(hexdigest)
        if not p.is_file():
            raise Corrupt(f"blob sha256:{hexdigest} is missing from {p.parent}")
        got = self.hash_file(p, progress)
        if got != hexdigest:
            raise Corrupt(f"blob sha256:{hexdigest} is corrupt (content hashes to {got[:12]}…)")


class Session:
    """One writer's workspace: temp files, a held lock, and a shared hold on the store's gc lock."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        blobs.tmp.mkdir(parents=True, exist_ok=True)
        self._gc_fd = os.open(blobs.gc_lock, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._gc_fd, fcntl.LOCK_SH)  # waits only while a gc sweep runs (seconds)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Lock first under a name gc leaves alone, then rename: gc never sees an unlocked live session.
        new = blobs.tmp / f".new-{name}"
        new.mkdir(parents=True, exist_ok=False)
        self._lock_fd = os.open(new / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self.dir = blobs.tmp / f"session-{name}"
        os.rename(new, self.dir)
        self._open = True

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)
        os.close(self._gc_fd)  # last: the artifact is committed (or abandoned) by now

    def temp_path(self, suffix: str = ".part") -> Path:
        return self.dir / f"{uuid.uuid4().hex}{suffix}"

    def put_file(self, src: Path, progress: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Copy ``src`` into the store and hash what was stored. Returns (hex, size)."""
        tmp = self.temp_path()
        with open(src, "rb", buffering=0) as fin, open(tmp, "wb+", buffering=0) as fout:
            with contextlib.suppress(OSError):  # a hint only
                os.posix_fadvise(fin.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            try:
                hexdigest, size = _copy_in_kernel(fin.fileno(), fout.fileno(), progress)
            except _NoKernelCopy:
                hexdigest, size = _copy_by_reading(fin, fout, progress)
            os.fsync(fout.fileno())
        return self._place(tmp, hexdigest), size

    def put_bytes(self, data: bytes) -> str:
        tmp = self.temp_path()
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self._place(tmp, hashlib.sha256(data).hexdigest())

    def adopt(self, tmp: Path, hexdigest: str | None = None) -> str:
        """Move a finished temp file (written by a converter inside this session) into the store."""
        if hexdigest is None:
            hexdigest = self.blobs.hash_file(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return self._place(tmp, hexdigest)

    def _place(self, tmp: Path, hexdigest: str) -> str:
        dest = self.blobs.path(hexdigest)
        if not dest.parent.is_dir():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsync_dir(dest.parent.parent)  # the new fan-out folder itself must survive a crash
        os.chmod(tmp, 0o444)  # blobs are immutable: a stray write fails for non-root users
        # Identical content is stored once. Replacing an existing blob with this freshly hashed copy is
        # atomic and harmless when it was intact, and repairs it when it had been corrupted.
        os.replace(tmp, dest)
        fsync_dir(dest.parent)
        return hexdigest


NEW_SESSION_GRACE_S = 600


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def dead_sessions(blobs: Blobs) -> list[Path]:
    """Session dirs whose writer is gone (their lock is free): leftovers of killed processes."""
    dead: list[Path] = []
    if not blobs.tmp.is_dir():
        return dead
    now = time.time()
    for d in blobs.tmp.iterdir():
        if d.name.startswith(".new-"):
            # a session being born; only one left behind long ago by a killed writer is dead
            if now - _mtime(d) > NEW_SESSION_GRACE_S:
                dead.append(d)
            continue
        lock = d / ".lock"
        if not d.is_dir() or not lock.exists():
            dead.append(d)
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue  # the writer finished between listing and opening
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # alive
        else:
            dead.append(d)
        finally:
            os.close(fd)
    return dead


@contextlib.contextmanager
def exclusive_gc(blobs: Blobs) -> Iterator[bool]:
    """Hold the store's gc lock exclusively if no writer is active; yields whether it was acquired."""
    blobs.tmp.mkdir(parents=True, exist_ok=True)
    fd = os.open(blobs.gc_lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)

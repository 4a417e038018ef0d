"""Pickle checkpoints (.bin .pt .pth .ckpt): recognised, statically scanned, never unpickled by default.

A pickle is a program, not data: loading one can run any code it names. owlkit therefore refuses pickle
checkpoints unless the user asks for ``--convert-pickle``, and even then it loads one only after two
independent checks pass:

1. ``scan_pickle``: a static walk of every opcode (``pickletools.genops``, never ``pickle.load``) that
   simulates the unpickler's stack and memo *symbolically* (strings, ints, tuples, lists; everything else
   opaque; nothing is ever called or imported), so a ``STACK_GLOBAL`` whose operands come through the memo
   resolves exactly as the real unpickler would. Every global must be in a small **allowlist** of what
   ``torch.save`` emits for (nested dicts of) tensors. Denylist scanners keep being bypassed (see
   docs/model-file-security.md); an allowlist fails closed.
2. picklescan, a second opinion with its own parser: its default (denylist) mode must find nothing and
   its strict mode nothing outside owlkit's allowlist (see ``_picklescan_check`` for why not bare strict).

Only then ``torch.load(..., weights_only=True)`` (torch's own restricted unpickler) reads the tensors, and
the result is stored as safetensors. picklescan is the scanner the field trusts, but it is a denylist with
known bypasses, so the allowlist walk is written here by hand.

Containers, decided by content the way torch decides (first four bytes ``PK\\x03\\x04`` = zip archive):

- zip archive (torch >= 1.6): every member ending in ``.pkl`` is scanned; names escaping the archive,
  duplicates, CRC errors and TorchScript archives are refused.
- raw stream: the legacy torch format is five pickles back to back (magic number, protocol version,
  system info, the object, the storage keys) followed by the raw storages, whose layout is checked to the
  last byte; any other raw file is scanned pickle after pickle to its end. Anything that does not parse,
  including trailing garbage, is ``InvalidFile``, never "clean".
- 7z, tar, gzip and other archives: ``InvalidFile`` (unsupported container).
"""

from __future__ import annotations

import logging
import mmap
import os
import pickletools
import reprlib
import struct
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from owlkit.errors import InvalidFile, OwlError, Refused, missing_extra
from owlkit.formats.base import sha256_file

if TYPE_CHECKING:
    import torch

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")

# torch's legacy format opens with this number pickled on its own (torch/serialization.py MAGIC_NUMBER),
# followed by the protocol version 1001.
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL_VERSION = 1001
_TORCH_MAGIC_LONG1 = b"\x8a\x0a" + _TORCH_MAGIC.to_bytes(10, "little")
_TORCH_MAGIC_TEXT = b"L%dL\n" % _TORCH_MAGIC  # the same number at pickle protocol 0/1

ZIP_MAGIC = b"PK\x03\x04"
SEVEN_Z_MAGIC = b"7z\xbc\xaf\x27\x1c"
# Other containers a checkpoint could be wrapped in; none is unpacked here (unpacking is how scanners
# were bypassed), so they are recognised only to give a clear error.
OTHER_CONTAINERS = (
    (SEVEN_Z_MAGIC, "7z"),
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"Rar!\x1a\x07", "rar"),
    (b"PK\x05\x06", "empty zip"),
    (b"PK\x07\x08", "spanned zip"),
)

# Everything torch.save needs for a state_dict, or nested dicts of tensors. Compared as exact
# (module, name) pairs: the unpickler resolves a dotted name by attribute walk, so "torch" +
# "_utils._rebuild_tensor_v2" is not accepted as a spelling of the real entry.
# Left out on purpose: _rebuild_qtensor (needs qscheme globals), _rebuild_from_type_v2 (tensor
# subclasses), sparse/nested/meta rebuilders, numpy scalars, builtins (set, getattr...), complex and
# float8 storages. A checkpoint needing them is refused; convert it with the tool that wrote it.
_STORAGE_ELEMENT_SIZES = {
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "DoubleStorage": 8,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
}
_DTYPES = (
    "float32", "float", "float16", "half", "bfloat16", "float64", "double",
    "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool",
)  # fmt: skip
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch", "Size"),
    }
    | {("torch", storage) for storage in _STORAGE_ELEMENT_SIZES}
    | {("torch", dtype) for dtype in _DTYPES}
)

_MAX_MEMBER_BYTES = 1 << 30  # a data.pkl is kilobytes to megabytes; more is a zip bomb or not torch


@dataclass
class PickleScan:
    """What a static scan of a pickle checkpoint found. ``ok`` only when nothing is outside the allowlist."""

    path: Path
    globals: list[str] = field(default_factory=list)  # "module.name", sorted, unique
    disallowed: list[str] = field(default_factory=list)  # globals outside the allowlist, and "<...>" findings
    pickles: list[str] = field(default_factory=list)  # zip members, or "pickle N at byte B" for raw files

    @property
    def ok(self) -> bool:
        return not self.disallowed and bool(self.pickles)


# --------------------------------------------------------------------------------------------------
# Recognising a pickle


def looks_like_pickle(path: Path) -> bool:
    """True when ``path`` is (or may be) a pickle checkpoint, judged by content first, suffix second.

    Content: a zip archive with a ``data.pkl`` member (torch's format), a stream opening with a protocol
    2..5 PROTO opcode or the legacy torch magic number, or a 7z archive (a known wrapper for payloads).
    Files whose content is clearly another format (safetensors, GGUF) are not pickles whatever their
    name; anything else falls back to the suffix.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return path.suffix.lower() in PICKLE_SUFFIXES
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                if any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist()):
                    return True
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            pass
        return path.suffix.lower() in PICKLE_SUFFIXES
    # Before the PROTO test: a safetensors header length of 0x280 (640 bytes) also starts b"\x80\x02".
    # Routing a file to a validating reader is safe; nothing but this module ever unpickles.
    if head.startswith(b"GGUF") or looks_like_safetensors(head):
        return False
    proto = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    legacy = _TORCH_MAGIC_LONG1 in head or head.startswith(_TORCH_MAGIC_TEXT)
    if proto or legacy or head.startswith(SEVEN_Z_MAGIC):
        return True
    return path.suffix.lower() in PICKLE_SUFFIXES


def looks_like_safetensors(head: bytes) -> bool:
    return len(head) >= 9 and head[8:9] in (b"{", b" ") and struct.unpack("<Q", head[:8])[0] < 100_000_000


# --------------------------------------------------------------------------------------------------
# The symbolic unpickler


class _Opaque:
    """A value the scan does not model (an object built by a call, a dict, bytes...)."""

    __slots__ = ()


_OPAQUE = _Opaque()


@dataclass(frozen=True)
class _Global:
    module: str
    name: str


@dataclass
class _Walk:
    """The result of walking one pickle: its top value and what it referenced."""

    value: Any
    end: int  # offset just past STOP
    globals: set[tuple[str, str]]
    findings: set[str]  # "<...>" things that are disallowed whatever the allowlist says
    persistent_ids: list[Any]


class _Reader:
    """A bounded file-like view over bytes or an mmap: ``read(n)`` never allocates more than is left,
    so a forged 2**62-byte length cannot exhaust memory inside ``pickletools``."""

    def __init__(self, buf: Any, start: int = 0, end: int | None = None) -> None:
        self.buf, self.pos, self.end = buf, start, len(buf) if end is None else end

    def read(self, n: int = -1) -> bytes:
        stop = self.end if n is None or n < 0 else min(self.end, self.pos + n)
        data = bytes(self.buf[self.pos : stop])
        self.pos = stop
        return data

    def readline(self) -> bytes:
        nl = self.buf.find(b"\n", self.pos, self.end)
        return self.read(self.end - self.pos if nl < 0 else nl + 1 - self.pos)

    def tell(self) -> int:
        return self.pos


class _Broken(Exception):
    """The stream is not a pickle the real unpickler would accept. ``globals`` and ``findings`` hold what
    the walk met before the break: the real unpickler runs opcodes as it reads them, so they count."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.globals: set[tuple[str, str]] = set()
        self.findings: set[str] = set()


_STRING_OPS = {
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
}  # fmt: skip
_LITERAL_OPS = _STRING_OPS | {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
}  # fmt: skip


def _walk(reader: _Reader) -> _Walk:
    """Walk one pickle from ``reader``'s position to its STOP, mirroring the unpickler's stack and memo.

    The model follows CPython's pickle.py (the mark stack is a stack of lists), with strings, numbers,
    tuples and lists kept as values so STACK_GLOBAL and persistent ids resolve as they would for real.
    Raises ``_Broken`` wherever the real unpickler would fail.
    """
    stack: list[Any] = []
    metastack: list[list[Any]] = []
    memo: dict[int, Any] = {}
    found: set[tuple[str, str]] = set()
    findings: set[str] = set()
    pids: list[Any] = []

    def pop() -> Any:
        if not stack:
            raise _Broken("stack underflow")
        return stack.pop()

    def top() -> Any:
        if not stack:
            raise _Broken("stack underflow")
        return stack[-1]

    def pop_mark() -> list[Any]:
        nonlocal stack
        if not metastack:
            raise _Broken("no MARK on the stack")
        items, stack = stack, metastack.pop()
        return items

    def called(target: Any, how: str) -> None:
        # Every callable in a torch state_dict comes straight from a global; calling anything else (the
        # result of another call, a memo slot holding bytes...) is how gadget chains start.
        if not isinstance(target, _Global):
            findings.add(f"<{how} of a non-global value>")

    def raw_global(pos: int, end: int) -> _Global:
        # Re-read GLOBAL/INST operands from the raw bytes: genops undoes backslash escapes the real
        # unpickler does not, so its rendering could differ from what would be imported.
        lines = bytes(reader.buf[pos + 1 : end]).split(b"\n")
        try:
            return _Global(lines[0].decode("utf-8"), lines[1].decode("utf-8"))
        except (IndexError, UnicodeDecodeError) as e:
            raise _Broken(f"bad GLOBAL operand at byte {pos}") from e

    try:
        ops = pickletools.genops(reader)
        for op, arg, pos in ops:
            name = op.name
            end = reader.tell()
            if name in _LITERAL_OPS:
                stack.append(arg)
            elif name in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                stack.append(_OPAQUE)  # bytes can't name a global (STACK_GLOBAL needs str)
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "NEXT_BUFFER":
                findings.add("<out-of-band buffer>")
                stack.append(_OPAQUE)
            elif name == "READONLY_BUFFER":
                top()
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "APPEND":
                value = pop()
                if isinstance(top(), list):
                    top().append(value)
            elif name == "APPENDS":
                items = pop_mark()
                if isinstance(top(), list):
                    top().extend(items)
            elif name == "LIST":
                items = pop_mark()  # before touching `stack`: pop_mark rebinds it
                stack.append(items)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(tuple(items))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise _Broken("stack underflow")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif name in ("EMPTY_DICT", "EMPTY_SET"):
                stack.append(_OPAQUE)
            elif name in ("DICT", "FROZENSET"):
                pop_mark()
                stack.append(_OPAQUE)
            elif name == "SETITEM":
                pop(), pop()
                top()
            elif name in ("SETITEMS", "ADDITEMS"):
                pop_mark()
                top()
            elif name == "POP":
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif name == "DUP":
                stack.append(top())
            elif name == "MARK":
                metastack.append(stack)
                stack = []
            elif name == "POP_MARK":
                pop_mark()
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise _Broken(f"memo slot {arg} read before written")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if arg < 0:
                    raise _Broken("negative memo slot")
                memo[arg] = top()
            elif name == "MEMOIZE":
                memo[len(memo)] = top()
            elif name in ("EXT1", "EXT2", "EXT4"):
                findings.add(f"<extension registry code {arg}>")
                stack.append(_OPAQUE)
            elif name == "GLOBAL":
                g = raw_global(pos, end)
                found.add((g.module, g.name))
                stack.append(g)
            elif name == "STACK_GLOBAL":
                gname, gmodule = pop(), pop()
                if type(gmodule) is str and type(gname) is str:
                    found.add((gmodule, gname))
                    stack.append(_Global(gmodule, gname))
                else:
                    findings.add("<unresolved>")
                    stack.append(_OPAQUE)
            elif name == "REDUCE":
                pop()
                called(pop(), "call")
                stack.append(_OPAQUE)
            elif name == "BUILD":
                pop()
                top()
            elif name == "INST":
                g = raw_global(pos, end)
                found.add((g.module, g.name))
                pop_mark()
                stack.append(_OPAQUE)
            elif name == "OBJ":
                items = pop_mark()
                if not items:
                    raise _Broken("OBJ without a class")
                called(items[0], "OBJ")
                stack.append(_OPAQUE)
            elif name == "NEWOBJ":
                pop()
                called(pop(), "NEWOBJ")
                stack.append(_OPAQUE)
            elif name == "NEWOBJ_EX":
                pop(), pop()
                called(pop(), "NEWOBJ_EX")
                stack.append(_OPAQUE)
            elif name == "PERSID":
                pids.append(arg)
                stack.append(_OPAQUE)
            elif name == "BINPERSID":
                pids.append(pop())
                stack.append(_OPAQUE)
            elif name == "PROTO":
                if not 0 <= arg <= 5:
                    raise _Broken(f"unsupported pickle protocol {arg}")
            elif name == "FRAME":
                pass
            elif name == "STOP":
                return _Walk(pop(), reader.tell(), found, findings, pids)
            else:  # an opcode added to pickletools after this was written: don't guess its effect
                raise _Broken(f"unmodelled opcode {name}")
        raise _Broken("pickle exhausted before STOP")
    except _Broken as e:
        e.globals, e.findings = found, findings
        raise
    except Exception as e:  # pickletools raises ValueError, UnicodeDecodeError... on malformed operands
        broken = _Broken(str(e) or type(e).__name__)
        broken.globals, broken.findings = found, findings
        raise broken from e


# --------------------------------------------------------------------------------------------------
# Scanning files


def scan_pickle(path: Path) -> PickleScan:
    """Statically scan every pickle in ``path`` (nothing is loaded or imported).

    Raises ``InvalidFile`` for unreadable, broken or unsupported containers and for streams that do not
    parse to the end, ``Refused`` for TorchScript archives.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise InvalidFile(f"{path.name}: empty file, not a checkpoint")
            if head.startswith(ZIP_MAGIC):
                return _scan_zip(path, f)
            for magic, kind in OTHER_CONTAINERS:
                if head.startswith(magic):
                    raise InvalidFile(
                        f"{path.name}: unsupported container ({kind}); unpack it yourself and import "
                        "the checkpoint inside, preferably as safetensors"
                    )
            if _is_tar_header(head):
                raise InvalidFile(f"{path.name}: unsupported container (tar, the pre-1.0 torch format)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                return _scan_raw(path, mm)
    except OwlError:
        raise
    except (OSError, ValueError) as e:  # unreadable path, a directory, a file mmap refuses
        raise InvalidFile(
            f"{path.name}: cannot read ({getattr(e, 'strerror', None) or e}); check the path"
        ) from e


def _is_tar_header(head: bytes) -> bool:
    # torch.load tries tar before raw pickles, so a file that is also a tar must not be scanned as a pickle.
    if len(head) < 512:
        return False
    if head[257:262] == b"ustar":
        return True
    try:
        stored = int(head[148:156].split(b"\0")[0].strip() or b"x", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 256 + sum(head[156:512])


def _result(path: Path, walks: list[_Walk], names: list[str]) -> PickleScan:
    found: set[tuple[str, str]] = set()
    findings: set[str] = set()
    for w in walks:
        found |= w.globals
        findings |= w.findings
    shown = {f"{m}.{n}" for m, n in found}
    return PickleScan(
        path=path, globals=sorted(shown), disallowed=_disallowed(found, findings), pickles=names
    )


def _disallowed(found: set[tuple[str, str]], findings: set[str]) -> list[str]:
    return sorted({f"{m}.{n}" for m, n in found if (m, n) not in ALLOWED_GLOBALS} | findings)


def member_escapes(name: str) -> bool:
    """True when an archive member name could land outside the folder it is extracted to (or is
    spelled so that tools disagree on where): empty, absolute, drive-lettered, ``..``, backslash, NUL."""
    return (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or "\0" in name
        or ".." in PurePosixPath(name).parts
        or (len(name) > 1 and name[1] == ":")
    )


def _scan_zip(path: Path, f: Any) -> PickleScan:
    try:
        zf = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, ValueError, EOFError, NotImplementedError) as e:
        raise InvalidFile(f"{path.name}: broken zip archive ({e}); re-save the checkpoint") from e
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        for n in names:
            if member_escapes(n):
                raise InvalidFile(f"{path.name}: archive member {n!r} escapes the archive; refusing the file")
        if len(set(names)) != len(names):
            raise InvalidFile(f"{path.name}: archive has duplicate member names; refusing the file")
        if any(n.endswith("constants.pkl") or "/code/" in f"/{n}" for n in names):
            raise Refused(
                f"{path.name}: a TorchScript archive (holds code), not a weights checkpoint; refusing it"
            )
        walks, scanned = [], []
        for info in infos:
            if not info.filename.lower().endswith(".pkl"):
                continue
            if info.file_size > _MAX_MEMBER_BYTES:
                raise InvalidFile(f"{path.name}: member {info.filename} is {info.file_size} bytes; too large")
            try:
                with zf.open(info) as member:
                    data = member.read(_MAX_MEMBER_BYTES + 1)
            except (zipfile.BadZipFile, RuntimeError, ValueError, EOFError, OSError) as e:
                # CRC errors included: torch may load what a scanner could not read (a known bypass).
                # NotImplementedError (unknown compression) is a RuntimeError.
                raise InvalidFile(f"{path.name}: cannot read member {info.filename} ({e}); refusing") from e
            if len(data) > _MAX_MEMBER_BYTES:
                raise InvalidFile(f"{path.name}: member {info.filename} inflates past 1 GiB; refusing")
            reader = _Reader(data)
            try:
                walk = _walk(reader)
            except _Broken as e:
                raise InvalidFile(f"{path.name}: member {info.filename} is not a valid pickle ({e})") from e
            if reader.pos != len(data):
                raise InvalidFile(
                    f"{path.name}: member {info.filename} has {len(data) - reader.pos} bytes after its pickle"
                )
            walks.append(walk)
            scanned.append(info.filename)
    if not scanned:
        raise InvalidFile(f"{path.name}: zip archive holds no .pkl member; not a torch checkpoint")
    return _result(path, walks, scanned)


def _scan_raw(path: Path, buf: Any) -> PickleScan:
    reader = _Reader(buf)
    walks: list[_Walk] = []
    names: list[str] = []

    def next_pickle() -> _Walk:
        start = reader.pos
        try:
            w = _walk(reader)
        except _Broken as e:
            raise InvalidFile(f"{path.name}: broken pickle stream at byte {start} ({e}); refusing") from e
        walks.append(w)
        names.append(f"pickle {len(names)} at byte {start}")
        return w

    first = next_pickle()
    if type(first.value) is int and first.value == _TORCH_MAGIC:
        # Legacy torch: protocol version, system info, the object, the sorted storage keys, then storages.
        version, _info, body, keys = (next_pickle() for _ in range(4))
        scan = _result(path, walks, names)
        if not scan.ok:  # refused anyway: report what it imports rather than how it is malformed
            return scan
        if version.value != _TORCH_PROTOCOL_VERSION:
            raise InvalidFile(
                f"{path.name}: legacy torch file with protocol {_short(version.value)}; unsupported"
            )
        _check_legacy_storages(path, buf, reader.pos, body.persistent_ids, keys.value)
        return scan
    while reader.pos < reader.end:
        next_pickle()
    return _result(path, walks, names)


def stream_prefix_globals(buf: Any) -> list[str]:
    """Walk ``buf`` pickle after pickle as far as it parses: the globals outside the allowlist (and
    ``<...>`` findings) met before the end or the first break. For files ``scan_pickle`` refuses as
    broken: a payload placed before a broken stream still runs under ``pickle.load``, so what precedes
    the break decides how bad the file is."""
    reader = _Reader(buf)
    found: set[tuple[str, str]] = set()
    findings: set[str] = set()
    while reader.pos < reader.end:
        try:
            walk = _walk(reader)
        except _Broken as e:
            found, findings = found | e.globals, findings | e.findings
            break
        found, findings = found | walk.globals, findings | walk.findings
    return _disallowed(found, findings)


def starts_with_pickle(buf: Any) -> bool:
    """True when a whole pickle parses from the first byte of ``buf``, or the stream imports a global
    before it breaks (the unpickler would already have imported it): recognises protocol 0 and 1 streams,
    which open with no PROTO header, by content rather than by name."""
    try:
        _walk(_Reader(buf))
    except _Broken as e:
        return bool(e.globals)
    return True


def _short(value: Any) -> str:
    """A bounded repr for messages about values read from an untrusted file (depth-limited: a pickle can
    nest lists deeper than repr's recursion limit)."""
    text = reprlib.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_legacy_storages(path: Path, buf: Any, pos: int, pids: list[Any], keys: Any) -> None:
    """The bytes after a legacy file's pickles are, per storage key in order, an int64 element count and
    the elements. They must cover the rest of the file exactly: a pickle hidden after them is refused."""
    sizes: dict[str, tuple[int, int]] = {}
    for pid in pids:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise InvalidFile(f"{path.name}: unexpected persistent id {_short(pid)}; not a torch checkpoint")
        cls, key, numel = pid[1], pid[2], pid[4]
        if not (
            isinstance(cls, _Global)
            and cls.module == "torch"
            and cls.name in _STORAGE_ELEMENT_SIZES
            and type(key) is str
            and type(numel) is int
            and numel >= 0
        ):
            raise InvalidFile(f"{path.name}: malformed storage reference {_short(pid)}")
        sizes[key] = (_STORAGE_ELEMENT_SIZES[cls.name], numel)
    if not (isinstance(keys, list) and all(type(k) is str for k in keys)) or set(keys) != set(sizes):
        raise InvalidFile(f"{path.name}: storage key list does not match the storages referenced")
    end = len(buf)
    for key in keys:
        element, numel = sizes[key]
        if pos + 8 > end:
            raise InvalidFile(f"{path.name}: truncated (storage {key} missing)")
        (count,) = struct.unpack("<q", buf[pos : pos + 8])
        if count != numel:
            raise InvalidFile(f"{path.name}: storage {key} holds {count} elements, {numel} declared")
        pos += 8 + count * element
        if pos > end:
            raise InvalidFile(f"{path.name}: truncated (storage {key} runs past the end)")
    if pos != end:
        raise InvalidFile(f"{path.name}: {end - pos} unexpected bytes after the storages; refusing")


# --------------------------------------------------------------------------------------------------
# Loading and converting


def _picklescan_check(path: Path) -> None:
    """The second layer. picklescan's strict mode rates every global off its own short safe list as
    dangerous, including ones owlkit allows on purpose (``_rebuild_parameter``, dtypes, ``torch.Size``),
    so the rule is: its default (denylist) mode finds nothing, and its strict mode finds nothing outside
    owlkit's allowlist. It parses the file with its own code, so a global only it sees still refuses."""
    try:
        from picklescan.scanner import scan_file_path
    except ImportError as e:
        raise missing_extra("picklescan", "ml", "scanning pickle checkpoints") from e
    # picklescan logs every finding as a warning; owlkit reports through its own error instead.
    log = logging.getLogger("picklescan")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        default, strict = scan_file_path(str(path)), scan_file_path(str(path), strict=True)
    except Exception as e:  # its parser failing on a file is a finding, not a crash
        raise Refused(
            f"{path.name}: picklescan could not scan it ({str(e) or type(e).__name__}); refusing to load"
        ) from e
    finally:
        log.setLevel(level)
    flagged = sorted(
        {
            f"{g.module}.{g.name}"
            for r in (default, strict)
            for g in r.globals
            if g.safety.value == "dangerous" and (r is default or (g.module, g.name) not in ALLOWED_GLOBALS)
        }
    )
    if default.issues_count and not flagged:
        flagged = ["an issue"]
    if flagged or strict.scan_err or default.scan_err or strict.scanned_files == 0:
        why = ", ".join(flagged) or ("a parse error" if strict.scan_err or default.scan_err else "nothing")
        raise Refused(f"{path.name}: picklescan flags {why}; refusing to load")


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def load_state_dict_checked(path: Path, notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load the tensors of a pickle checkpoint after both scans pass, as a flat ``name -> tensor`` dict.

    A top-level ``{"state_dict": {...}}`` or ``{"model": {...}}`` (Lightning .ckpt, training scripts) is
    unwrapped when the top level is not all tensors; nested dicts flatten to dotted names. Leaves that are
    not tensors (epoch counters, version strings, lists) are dropped, never stored: they are bookkeeping,
    not weights. Each dropped entry is described in ``notes`` when a list is passed.
    """
    path = Path(path)
    try:
        import torch
    except ImportError as e:
        raise missing_extra("torch", "ml", "converting pickle checkpoints") from e
    before = _file_identity(path)
    scan = scan_pickle(path)
    if not scan.ok:
        raise Refused(
            f"{path.name}: pickle imports {', '.join(scan.disallowed)} outside the tensor allowlist; "
            "refusing to load (re-save it as a plain state_dict of tensors, or as safetensors)"
        )
    _picklescan_check(path)
    with open(path, "rb") as f:
        is_zip = f.read(4) == ZIP_MAGIC
    try:
        # weights_only: torch's own restricted unpickler, a third layer. mmap needs the zip format.
        with warnings.catch_warnings():  # torch warns about pickle protocols; the outcome is what counts
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except Exception as e:
        raise InvalidFile(
            f"{path.name}: torch's weights-only loader could not read it ({_torch_reason(e)}); "
            "re-save it with torch.save defaults, or as safetensors"
        ) from e
    if _file_identity(path) != before:
        raise Refused(f"{path.name}: the file changed while it was being checked; retry the import")
    return _flatten_tensors(path, obj, notes if notes is not None else [])


def _torch_reason(e: Exception) -> str:
    """The useful line of a torch.load error (its first lines are boilerplate about weights_only)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error:" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[1].strip()
            return (rest or (lines[i + 1] if i + 1 < len(lines) else ""))[:160]
    return (lines[0] if lines else type(e).__name__)[:160]


def _flatten_tensors(path: Path, obj: Any, notes: list[str]) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(obj, dict):
        raise InvalidFile(f"{path.name}: holds a {type(obj).__name__}, not a dict of tensors")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                others = sorted(str(k) for k in obj if k != key)
                if others:
                    notes.append(f"used '{key}'; left out top-level entries: {', '.join(others)}")
                obj = obj[key]
                break
    out: dict[str, torch.Tensor] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if prefix in out:
                raise InvalidFile(f"{path.name}: tensor name {prefix!r} occurs twice after flattening")
            if not prefix or "\0" in prefix:
                raise InvalidFile(f"{path.name}: tensor name {prefix!r} is empty or holds NUL bytes")
            out[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                visit(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            notes.append(f"dropped non-tensor entry {prefix!r} ({type(value).__name__})")

    visit("", obj)
    if not out:
        raise InvalidFile(f"{path.name}: holds no tensors")
    return out


def convert_pickle_to_safetensors(path: Path, out: Path) -> dict[str, Any]:
    """Convert a pickle checkpoint to a safetensors file at ``out`` (atomically: temp file, fsync, rename).

    Tensors sharing storage (tied embeddings) are written as separate copies under their own names, since
    safetensors stores no aliasing. Returns ``{"source_sha256", "tensors", "parameters", "notes"}``
    (``notes``: what ``load_state_dict_checked`` left out).
    """
    path, out = Path(path), Path(out)
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise missing_extra("safetensors", "ml", "converting pickle checkpoints") from e
    before = _file_identity(path)
    source_sha = sha256_file(path)
    notes: list[str] = []
    tensors = load_state_dict_checked(path, notes)
    if _file_identity(path) != before:  # the digest must describe the bytes that were loaded
        raise Refused(f"{path.name}: the file changed while it was being converted; retry the import")
    seen: set[int] = set()
    ready = {}
    for name, t in tensors.items():
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in seen:
            t = t.clone()  # a second name on shared memory: safetensors needs its own copy
        elif ptr:
            seen.add(ptr)
        ready[name] = t.contiguous()
    tmp = out.with_name(out.name + ".tmp")
    try:
        save_file(ready, str(tmp), metadata={"format": "pt"})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "source_sha256": source_sha,
        "tensors": len(ready),
        "parameters": sum(t.numel() for t in ready.values()),
        "notes": notes,
    }


__all__ = [
    "ALLOWED_GLOBALS",
    "PICKLE_SUFFIXES",
    "PickleScan",
    "convert_pickle_to_safetensors",
    "load_state_dict_checked",
    "looks_like_pickle",
    "member_escapes",
    "scan_pickle",
    "starts_with_pickle",
    "stream_prefix_globals",
]

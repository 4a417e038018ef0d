"""Datasets: one data file (.json, .jsonl, .parquet, .csv, .txt) or a folder of them, with an optional
README.md card and DATA_LICENSE / LICENSE files.

Every row is read once to count rows, collect columns and recognise the instruction-data format:

- ``alpaca``: ``instruction``, optional ``input``, ``output`` (strings);
- ``sharegpt``: ``conversations``: a list of ``{from, value}``;
- ``openai-messages``: ``messages``: a list of ``{role, content}``;
- ``text``: a ``text`` string column (or a single string column); ``.txt`` files are plain text with
  one row per non-empty line;
- ``unknown``: anything else (still stored; a folder's ``unknown`` files are not counted when other
  files have a known format); ``mixed``: a folder whose files have different known formats.

Memory stays bounded where the format allows: JSON Lines, CSV and text are streamed, Parquet is read
in batches (its row count comes from the footer; the format check samples its first
:data:`PARQUET_SAMPLE_ROWS` rows). A ``.json`` file must be one JSON document, so it is parsed whole
with ``json.load``; files above :data:`MAX_JSON_BYTES` (2 GiB) are refused with a hint to convert
them to JSON Lines. A ``.json`` file that is really JSON Lines (as ``datasets.Dataset.to_json``
writes) is read as JSON Lines.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from owlkit.errors import InvalidFile, NotFound, Refused, missing_extra
from owlkit.formats.base import Inspected
from owlkit.formats.hf_folder import folder_origin, folder_terms, walk_folder

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".txt")
MAX_JSON_BYTES = 2 << 30
MAX_COLUMNS = 10_000  # distinct keys across rows; more means the rows are not a table
PARQUET_SAMPLE_ROWS = 10_000
# Formats in order of preference when several fit every row (an alpaca row may also carry "text").
FORMATS = ("openai-messages", "sharegpt", "alpaca", "text")


def _is_alpaca(row: dict) -> bool:
    return (
        isinstance(row.get("instruction"), str)
        and isinstance(row.get("output"), str)
        and (row.get("input") is None or isinstance(row.get("input"), str))
    )


def _is_sharegpt(row: dict) -> bool:
    turns = row.get("conversations")
    return (
        isinstance(turns, list)
        and len(turns) > 0
        and all(
            isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)
            for t in turns
        )
    )


def _is_messages(row: dict) -> bool:
    # content may be a list of parts (multimodal) or null (an assistant turn with tool calls)
    turns = row.get("messages")
    return (
        isinstance(turns, list)
        and len(turns) > 0
        and all(
            isinstance(t, dict)
            and isinstance(t.get("role"), str)
            and (t.get("content") is None or isinstance(t.get("content"), str | list))
            for t in turns
        )
    )


def _is_text(row: dict) -> bool:
    if "text" in row:
        return isinstance(row["text"], str)
    return len(row) == 1 and isinstance(next(iter(row.values())), str)


CHECKS = {"openai-messages": _is_messages, "sharegpt": _is_sharegpt, "alpaca": _is_alpaca, "text": _is_text}


@dataclass
class DataFile:
    """What one data file holds. ``rows`` is None for a JSON file that is not a list of rows."""

    path: str
    format: str = "unknown"
    rows: int | None = 0
    columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class _Tally:
    """Counts rows, collects columns, and counts how many rows fit each format."""

    def __init__(self, rel: str) -> None:
        self.rel = rel
        self.rows = 0
        self.sampled = 0
        self.columns: set[str] = set()
        self.fits = dict.fromkeys(FORMATS, 0)

    def add(self, row: dict, *, check: bool = True) -> None:
        self.rows += 1
        if len(self.columns) <= MAX_COLUMNS:
            self.columns.update(row)
        if check:
            self.sampled += 1
            for name, fits in CHECKS.items():
                if fits(row):
                    self.fits[name] += 1

    def result(self) -> DataFile:
        out = DataFile(path=self.rel, rows=self.rows, columns=sorted(self.columns))
        if len(self.columns) > MAX_COLUMNS:
            out.warnings.append(
                f"{self.rel}: more than {MAX_COLUMNS} distinct columns; the list is cut short"
            )
        best = max(FORMATS, key=lambda name: self.fits[name])  # ties keep FORMATS order
        if self.fits[best] > 0:
            out.format = best
            if self.fits[best] < self.sampled:
                out.warnings.append(
                    f"{self.rel}: {self.sampled - self.fits[best]} of {self.sampled} rows checked "
                    f"do not fit the {best} format"
                )
        return out


def _json_row(rel: str, value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise InvalidFile(
            f"{rel}: {where} is a JSON {type(value).__name__}, not an object; each row must be an object"
        )
    return value


def _jsonl_rows(path: Path, rel: str) -> Iterator[dict]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except UnicodeDecodeError as e:
                raise InvalidFile(
                    f"{rel}: line {lineno} is not UTF-8 (byte {e.start}); fix the file"
                ) from None
            except json.JSONDecodeError as e:
                raise InvalidFile(
                    f"{rel}: line {lineno} is not valid JSON ({e.msg}); fix or remove it"
                ) from None
            except RecursionError:
                raise InvalidFile(f"{rel}: line {lineno} is nested too deeply; fix or remove it") from None
            yield _json_row(rel, value, f"line {lineno}")


def _read_json(path: Path, rel: str) -> DataFile:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise Refused(
            f"{rel}: {size} bytes is more than the {MAX_JSON_BYTES} bytes owl parses as one JSON document; "
            "convert it to JSON Lines (.jsonl, one object per line)"
        )
    raw = path.read_bytes()
    try:
        value = json.loads(raw)
    except UnicodeDecodeError as e:
        raise InvalidFile(f"{rel}: not UTF-8 text (byte {e.start}); fix the file") from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and raw.lstrip().startswith(b"{"):
            # One object per line under a .json name: JSON Lines.
            del raw
            return _tally(rel, _jsonl_rows(path, rel))
        raise InvalidFile(
            f"{rel}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); fix the file"
        ) from None
    except RecursionError:
        raise InvalidFile(f"{rel}: JSON nested too deeply; fix the file") from None
    if isinstance(value, list):
        return _tally(rel, (_json_row(rel, v, f"item {i}") for i, v in enumerate(value)))
    # A JSON object is metadata (dataset_info.json, state.json), not rows.
    return DataFile(path=rel, rows=None)


def _read_csv(path: Path, rel: str) -> DataFile:
    # Text columns are often longer than the csv module's default 128 KiB field limit.
    csv.field_size_limit(1 << 30)
    tally = _Tally(rel)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                return DataFile(path=rel)
            if len(set(header)) != len(header):
                raise InvalidFile(f"{rel}: the header repeats a column name; rename the columns")
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise InvalidFile(
                        f"{rel}: line {reader.line_num} has {len(record)} fields, the header has {len(header)}; "
                        "fix the quoting"
                    )
                tally.add(dict(zip(header, record, strict=True)))
        except csv.Error as e:
            raise InvalidFile(f"{rel}: line {reader.line_num}: {e}; fix the file") from None
        except UnicodeDecodeError as e:
            raise InvalidFile(f"{rel}: not UTF-8 text (byte {e.start}); re-save it as UTF-8") from None
    tally.columns.update(header)
    return tally.result()


def _read_parquet(path: Path, rel: str) -> DataFile:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "ml", f"reading {rel}") from None
    tally = _Tally(rel)
    try:
        pf = pq.ParquetFile(path)
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                tally.add(row)
            if tally.rows >= PARQUET_SAMPLE_ROWS:
                break
        tally.rows = pf.metadata.num_rows
        tally.columns = set(pf.schema_arrow.names)
    except (pa.ArrowException, OSError) as e:
        raise InvalidFile(
            f"{rel}: not a readable Parquet file ({str(e).splitlines()[0]}); re-export it"
        ) from None
    return tally.result()


def _read_text(path: Path, rel: str) -> DataFile:
    rows = 0
    # Lines are decoded one by one (not by a text-mode reader, which decodes in blocks) so an error
    # names the right line.
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                rows += bool(line.decode("utf-8").strip())
            except UnicodeDecodeError:
                raise InvalidFile(f"{rel}: line {lineno} is not UTF-8 text; re-save it as UTF-8") from None
    return DataFile(path=rel, format="text", rows=rows, columns=["text"])


def _tally(rel: str, rows: Iterable[dict]) -> DataFile:
    tally = _Tally(rel)
    for row in rows:
        tally.add(row)
    return tally.result()


def read_data_file(path: Path, rel: str | None = None) -> DataFile:
    """Read one data file: rows, columns and format. :class:`InvalidFile` names the file (and the line
    for JSON Lines and CSV) when it is malformed."""
    rel = rel or path.name
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _tally(rel, _jsonl_rows(path, rel))
    if suffix == ".json":
        return _read_json(path, rel)
    if suffix == ".csv":
        return _read_csv(path, rel)
    if suffix == ".parquet":
        return _read_parquet(path, rel)
    if suffix == ".txt":
        return _read_text(path, rel)
    raise InvalidFile(f"{rel}: not a data file; owl reads {', '.join(DATA_SUFFIXES)}")


def is_data_file(rel: str) -> bool:
    """A file counted as data: a data suffix, and not a license or notice text."""
    from owlkit.formats.license import is_license_file

    name = rel.rsplit("/", 1)[-1]
    return (
        name.lower().endswith(DATA_SUFFIXES)
        and not is_license_file(name)
        and not name.upper().startswith("NOTICE")
    )


def _summarise(data: list[DataFile]) -> tuple[dict[str, Any], list[str]]:
    tables = [d for d in data if d.rows is not None]
    known = [d for d in tables if d.format != "unknown"]
    formats = sorted({d.format for d in known})
    warnings: list[str] = []
    if not formats:
        data_format, counted = "unknown", tables
    else:
        data_format = formats[0] if len(formats) == 1 else "mixed"
        counted = known
        for d in tables:
            if d.format == "unknown":
                warnings.append(f"{d.path}: rows in no known format; stored, not counted")
    columns = sorted({c for d in counted for c in d.columns})
    facts = {
        "data_format": data_format,
        "rows": sum(d.rows or 0 for d in counted),
        "columns": columns,
        "files": [d.path for d in counted],
    }
    return facts, warnings


def inspect_dataset(path: Path) -> Inspected:
    """A data file or a folder of them as an artifact (kind "dataset", format "dataset").

    facts: ``data_format`` (see the module doc), ``rows`` and ``columns`` over the files counted, and
    ``files`` (those files). Per-file detail goes to side ``data_files``.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"{path}: no such file or folder")
    warnings: list[str] = []
    side: dict[str, Any] = {}
    if path.is_file():
        data = [read_data_file(path)]
        files = [path.name]
        from owlkit.formats.license import detect_license

        license_ = detect_license()
    else:
        files = walk_folder(path, warnings)
        data = [read_data_file(path / rel, rel) for rel in files if is_data_file(rel)]
        if not data:
            raise InvalidFile(f"{path}: no data files ({', '.join(DATA_SUFFIXES)}) in the folder")
        terms = folder_terms(path, files)
        warnings += terms.warnings
        side.update(terms.side)
        license_ = terms.license
    for d in data:
        warnings += d.warnings
    facts, more = _summarise(data)
    warnings += more
    side["data_files"] = [
        {"path": d.path, "format": d.format, "rows": d.rows, "columns": d.columns} for d in data
    ]
    return Inspected(
        kind="dataset",
        format="dataset",
        root=path,
        files=files,
        facts=facts,
        license=license_,
        origin=folder_origin(path),
        warnings=warnings,
        side=side,
    )

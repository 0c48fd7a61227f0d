"""Reading the files of a user's download, with errors that name the file, row and field.

Shared by the EgoIT, EgoBench and EgoClip adapters:

- :func:`find_file` / :func:`read_json` / :func:`read_csv` / :func:`read_lines` open a source's released files;
- :func:`field` and the converters (:func:`text`, :func:`number`, :func:`integer`, :func:`int_list`) pull
  one typed value out of a record or raise :class:`RowError`;
- :class:`BadRows` turns a :class:`RowError` into a counted skip when the user passed ``--skip-bad-rows``;
- :func:`id_digests` / :class:`DigestSet` find duplicate ids in about 8 bytes an id;
- :func:`parse_roots` reads ``--root name=DIR`` / ``--data-root DIR``; :func:`check_videos` counts missing videos;
- :func:`inside_root` refuses a row's path that leaves its root.

The build around the reading (build context, writing the Hub folder, the shared command line) is
:mod:`datasets_scripts.build_command`'s.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import hashlib
import itertools
import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path, PureWindowsPath
from typing import Any

MAX_EXAMPLES = 20  # bad-row messages kept in build_info.json


class SourceFileError(FileNotFoundError):
    """A file the adapter needs is missing or unreadable as a whole (not one bad row)."""


class RowError(ValueError):
    """A source row that cannot be turned into a canonical row; names file, row and field."""

    def __init__(self, file: str | os.PathLike, row: Any, field: str, problem: str):
        self.file, self.row, self.field, self.problem = os.fspath(file), row, field, problem
        super().__init__(f"{self.file}: row {row}: field {field!r}: {problem}")


class PathOutsideRootError(ValueError):
    """A path from a data row that is absolute or climbs out of its root with ``..``."""

    field = "video"


# --------------------------------------------------------------------------------------------- files
def inside_root(path: str, what: str = "video") -> str:
    """``path`` unchanged when it is relative and stays inside its root, else :class:`PathOutsideRootError`.

    Rows store video paths relative to the root of the user's download; an absolute path (``/etc/passwd``,
    ``C:\\x``) or a ``..`` component (also written with backslashes) would point readers and the exported
    Parquet outside it.
    """
    parts = path.replace("\\", "/").split("/")
    # A drive ("C:") needs a colon second when the path does not start with a separator; only then is pathlib
    # asked (it interns every path component for good: memory that grows with the rows).
    if path.startswith(("/", "\\")) or (path[1:2] == ":" and PureWindowsPath(path).drive) or ".." in parts:
        error = PathOutsideRootError(
            f"{what} path {path!r} leaves its root (absolute or with '..'); rows may only "
            "name files under the source root"
        )
        error.field = what
        raise error
    return path


def find_file(root: Path, candidates: Sequence[str], source: str) -> Path:
    """The first of ``candidates`` (paths relative to ``root``) that exists, else :class:`SourceFileError`."""
    for candidate in candidates:
        path = root / candidate
        if path.is_file():
            return path
    tried = ", ".join(str(root / candidate) for candidate in candidates)
    raise SourceFileError(f"{source}: required file not found: {tried}")


def read_json(path: Path) -> Any:
    """Parse a JSON file; a syntax error names the file, line and column, a file that is not UTF-8 text its byte."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError as error:
        raise SourceFileError(f"required file not found: {path}") from error
    except UnicodeDecodeError as error:
        raise SourceFileError(
            f"{path} is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); JSON files "
            "are read as UTF-8"
        ) from error
    except json.JSONDecodeError as error:
        raise RowError(
            path, f"line {error.lineno}", "(json)", f"not valid JSON: {error.msg} at column {error.colno}"
        ) from error


JSON_CHUNK_BYTES = 1 << 16  # bytes read at a time by the streaming JSON readers
_JSON_SPACE = b" \t\n\r"
# A UTF-16 surrogate escape: yajl (ijson's C parser) turns an unpaired one into "?", where json keeps it.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONE_HIGH_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")
_LONE_LOW_SURROGATE = re.compile(rb"(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_CONTEXT = 12  # bytes either side a surrogate check needs: one escape pair


class JsonStreamDiffers(Exception):
    """:func:`stream_json` cannot stand for ``json.load`` on this file (from here on): read it whole instead."""


def _json_stream_ok(text: bytes, start: int, stop: int) -> bool:
    """False when ``text[start:stop]`` holds what yajl and ``json`` read differently: a vertical tab or form feed
    (whitespace to yajl, an error to ``json``), or an unpaired surrogate escape (``text`` has :data:`_CONTEXT`
    bytes of context either side where there are any)."""
    if b"\x0b" in text[start:stop] or b"\x0c" in text[start:stop]:
        return False
    if _SURROGATE_ESCAPE.search(text, max(0, start - 6), stop + 6) is None:
        return True
    for pattern in (_LONE_HIGH_SURROGATE, _LONE_LOW_SURROGATE):
        for match in pattern.finditer(text, start):
            if match.start() >= stop:
                break
            return False
    return True


def stream_json(path: Path, prefix: str, pairs: bool = False) -> Iterator[Any]:
    """The values at ``prefix`` (ijson's prefixes: ``"item"`` = each item of a top-level list, ``"annotations"`` = the
    value of that key of a top-level object), or with ``pairs`` the ``(key, value)`` pairs of the objects there,
    parsed as the file is read: memory holds one value and a 64 KB buffer.

    Values are those ``json.load`` gives (floats as ``float``; duplicate keys inside a value: the last one wins).
    The parser is ijson's (its yajl C backend where installed). Where yajl would read the file otherwise than
    ``json`` (an integer past 64 bits, ``NaN``/``Infinity``, a vertical tab or form feed, an unpaired surrogate
    escape) or fails (a syntax error, bytes that are not UTF-8), :class:`JsonStreamDiffers` is raised before any
    value from those bytes is yielded: the caller then reads the file whole (:func:`read_json`), which gives the
    same values or names the error by line and column.
    """
    import ijson

    values = ijson.sendable_list()
    make = ijson.kvitems_coro if pairs else ijson.items_coro
    parser = make(values, prefix, use_float=True)
    try:
        handle = open(path, "rb")
    except FileNotFoundError as error:
        raise SourceFileError(f"required file not found: {path}") from error
    with handle:
        fed_tail, chunk = b"", handle.read(JSON_CHUNK_BYTES)
        while True:
            following = handle.read(JSON_CHUNK_BYTES)
            # The surrogate check needs a few bytes either side of the chunk it clears.
            if not _json_stream_ok(fed_tail + chunk + following[:_CONTEXT], len(fed_tail), len(fed_tail) + len(chunk)):
                raise JsonStreamDiffers(f"{path}: bytes json reads otherwise than yajl")
            try:
                parser.send(chunk)
                if not following:
                    parser.close()  # end of file: a truncated document raises here
            except ijson.JSONError as error:
                raise JsonStreamDiffers(f"{path}: {error}") from error
            yield from values
            del values[:]
            if not following:
                return
            fed_tail, chunk = (fed_tail + chunk)[-_CONTEXT:], following


def _starts_with(path: Path, token: bytes) -> bool:
    """Whether the first byte of ``path`` after JSON whitespace is ``token``."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError as error:
        raise SourceFileError(f"required file not found: {path}") from error
    with handle:
        while chunk := handle.read(JSON_CHUNK_BYTES):
            stripped = chunk.lstrip(_JSON_SPACE)
            if stripped:
                return stripped.startswith(token)
    return False


def iter_json_array(path: Path, not_a_list: Callable[[Any], Exception] | None = None) -> Iterator[tuple[int, Any]]:
    """``enumerate(read_json(path))``, parsed as a stream (:func:`stream_json`) when the file's top level is a list:
    memory holds one item at a time, not the file.

    Where the stream cannot stand for ``json.load`` (see :func:`stream_json`) the file is read whole from the
    first item not yet yielded: the same items, or the same error naming line and column, as before. A top level
    that is not a list is read whole too; ``not_a_list(payload)`` then gives the error to raise (default:
    enumerate the payload, as the callers of ``read_json`` did).
    """
    done = 0
    if _starts_with(path, b"["):
        try:
            for item in stream_json(path, "item"):
                yield done, item
                done += 1
            return
        except JsonStreamDiffers:
            pass  # from item `done` on, json reads the file (or names its error)
    payload = read_json(path)
    if not isinstance(payload, list) and not_a_list is not None:
        raise not_a_list(payload)
    yield from itertools.islice(enumerate(payload), done, None)


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line number, stripped line)`` for the non-empty lines of a text file."""
    if not path.is_file():
        raise SourceFileError(f"required file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if line.strip():
                yield line_number, line.rstrip("\n").strip()


def read_csv(path: Path, required: Sequence[str], delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, record)`` for each data row of a CSV/TSV file with a header line.

    A header without one of the ``required`` columns raises :class:`RowError` (row 1). A data row with
    the wrong number of fields is yielded as a :class:`RowError` in place of the record; :func:`field`
    raises it, so it is skippable like any bad row.
    """
    if not path.is_file():
        raise SourceFileError(f"required file not found: {path}")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise RowError(path, 1, "(header)", "file is empty")
        header = [name.strip() for name in header]
        missing = [name for name in required if name not in header]
        if missing:
            raise RowError(path, 1, missing[0], f"column missing from the header {header}")
        for values in reader:
            line_number = reader.line_num
            if not any(value.strip() for value in values):
                continue
            if len(values) != len(header):
                # Yielded, not raised: the caller's first field() call raises it inside its bad-row guard.
                yield (
                    line_number,
                    RowError(path, line_number, "(columns)", f"expected {len(header)} fields, got {len(values)}"),
                )
                continue
            yield line_number, dict(zip(header, values))


# --------------------------------------------------------------------------------------------- fields
def text(value: Any) -> str:
    """A non-empty string (surrounding whitespace removed)."""
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise ValueError("empty text")
    return value


def number(value: Any) -> float:
    """A finite float (numbers or numeric strings)."""
    if isinstance(value, bool):
        raise TypeError("expected a number, got a bool")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("not finite")
    return result


def integer(value: Any) -> int:
    """An int (ints, integral floats or digit strings)."""
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a bool")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not an integer")
        return int(value)
    return int(str(value).strip())


def int_list(value: Any) -> list[int]:
    """A list of ints, given as a list or as the stringified Python list the EPIC/EgoClip CSVs use."""
    if isinstance(value, str):
        value = ast.literal_eval(value.strip())  # literals only: never evaluates code
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return [integer(item) for item in value]


def field(
    record: Any,
    name: str,
    file: str | os.PathLike,
    row: Any,
    convert: Callable[[Any], Any] = text,
    *,
    optional: bool = False,
    parent: str | None = None,
) -> Any:
    """``convert(record[name])``; a missing, null or unconvertible value raises :class:`RowError`.

    With ``optional=True`` a missing/null/empty value gives ``None`` instead. ``parent`` prefixes the
    field name in errors for nested records (``"choices.3.clip_text"``).
    """
    label = f"{parent}.{name}" if parent else name
    if type(record) is not dict:  # (a dict, the usual record, passes both checks: the ABC check is slow)
        if isinstance(record, RowError):  # a row read_csv could not split into fields
            raise record
        if not isinstance(record, Mapping):
            raise RowError(file, row, parent or name, f"expected an object, got {type(record).__name__}")
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        if optional:
            return None
        raise RowError(file, row, label, "missing or empty")
    try:
        return convert(value)
    except (TypeError, ValueError, SyntaxError) as error:
        raise RowError(file, row, label, f"bad value {value!r}: {error}") from error


# --------------------------------------------------------------------------------------------- bad rows
@dataclass
class BadRows:
    """Raise on the first bad row, or (``skip=True``, CLI ``--skip-bad-rows``) count and skip it."""

    skip: bool = False
    counts: Counter = dataclass_field(default_factory=Counter)  # "<source>/<field>" -> rows skipped
    examples: list[str] = dataclass_field(default_factory=list)

    @contextlib.contextmanager
    def guard(self, source: str) -> Iterator[None]:
        """Wrap the conversion of one row: a :class:`RowError` (or :class:`PathOutsideRootError`) inside is raised
        or counted."""
        try:
            yield
        except (RowError, PathOutsideRootError) as error:
            if not self.skip:
                raise
            self.counts[f"{source}/{error.field}"] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(str(error))

    def total(self, source: str | None = None) -> int:
        return sum(n for key, n in self.counts.items() if source is None or key.startswith(f"{source}/"))

    def summary(self) -> dict[str, Any]:
        """``{"skipped_rows": n, "by_source_field": {...}, "examples": [...]}`` for build_info.json."""
        return {
            "skipped_rows": self.total(),
            "by_source_field": dict(sorted(self.counts.items())),
            "examples": list(self.examples),
        }


# --------------------------------------------------------------------------------------------- ids
def id_digests(ids: Sequence[str]):
    """8-byte BLAKE2b digests of ``ids`` as a ``numpy.uint64`` array (a false duplicate: about 1 in 10^19 pairs)."""
    import numpy as np

    joined = b"".join(hashlib.blake2b(value.encode(), digest_size=8).digest() for value in ids)
    return np.frombuffer(joined, dtype=np.uint64)


class DigestSet:
    """A set of ``uint64`` id digests in about 8 bytes a member (a Python set of them takes about 90).

    Members are held in sorted runs whose sizes double, merged like the digits of a binary counter, so adding n
    members costs O(n log n) and a lookup one binary search per run. Works on batches (numpy arrays).
    """

    def __init__(self):
        self._runs: list = []  # sorted, unique, disjoint uint64 arrays; sizes decreasing

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def contains(self, keys):
        """A bool array: which of ``keys`` are members."""
        import numpy as np

        found = np.zeros(len(keys), dtype=bool)
        for run in self._runs:
            positions = np.minimum(np.searchsorted(run, keys), len(run) - 1)
            found |= run[positions] == keys
        return found

    def add(self, keys) -> None:
        """Add ``keys`` (unique, and none of them a member yet)."""
        import numpy as np

        run = np.sort(np.asarray(keys, dtype=np.uint64))
        while self._runs and len(self._runs[-1]) <= len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="stable")  # merges two sorted runs
        if len(run):
            self._runs.append(run)

    def first_seen(self, keys):
        """Which of ``keys`` (one batch, in order) are neither members nor equal to an earlier key of the batch; adds
        those. The others are duplicates of an earlier row."""
        import numpy as np

        keys = np.asarray(keys, dtype=np.uint64)
        first = np.zeros(len(keys), dtype=bool)
        unique, positions = np.unique(keys, return_index=True)
        first[positions] = True
        first &= ~self.contains(keys)
        self.add(keys[first])
        return first


# --------------------------------------------------------------------------------------------- roots
def parse_roots(
    root_args: Sequence[str] | None, data_root: str | os.PathLike | None, known: Sequence[str]
) -> tuple[dict[str, Path], list[str]]:
    """Resolve source roots from ``--root name=DIR`` (repeatable) and ``--data-root DIR``.

    ``--data-root`` adds ``DIR/<name>`` for every known source that exists there. Returns
    ``(roots, messages)``; the messages say which sources are skipped because nothing was given or
    found (not downloaded is not an error). An explicit root that does not exist, or an unknown name,
    raises ``ValueError``.
    """
    roots: dict[str, Path] = {}
    for item in root_args or []:
        name, sep, directory = item.partition("=")
        name = name.strip()
        if not sep or not directory:
            raise ValueError(f"--root {item!r}: expected NAME=DIR")
        if name not in known:
            raise ValueError(f"--root {item!r}: unknown source {name!r}; known: {', '.join(known)}")
        path = Path(directory).expanduser()
        if not path.is_dir():
            raise ValueError(f"--root {item!r}: {path} is not a directory")
        roots[name] = path
    messages = []
    for name in known:
        if name in roots:
            continue
        candidate = Path(data_root).expanduser() / name if data_root else None
        if candidate is not None and candidate.is_dir():
            roots[name] = candidate
        else:
            where = f" and {candidate} does not exist" if candidate is not None else ""
            messages.append(f"{name}: skipped (not downloaded: no --root {name}=DIR given{where})")
    return {name: roots[name] for name in known if name in roots}, messages


def check_videos(rows: Sequence[Mapping[str, Any]], root: Path, column: str = "video") -> dict[str, Any]:
    """Count the rows whose ``root/<row[column]>`` (file or frame folder) does not exist."""
    missing = sorted({row[column] for row in rows if row.get(column) and not (root / row[column]).exists()})
    return {
        "checked_videos": len({row[column] for row in rows if row.get(column)}),
        "missing": len(missing),
        "missing_paths": missing,
    }

"""Crash-safe files of an evaluation run: append-only JSONL shards and atomically replaced JSON.

A run folder looks like::

    OUT/run_config.json                               what shapes the records (checked on resume)
    OUT/predictions/<task>/shard-RRRRR-of-WWWWW.jsonl  one record per scored item, appended and flushed
    OUT/results.json                                  written last, atomically (temp file + os.replace)

A killed run leaves at most one partial line at the end of a shard; :func:`repair_jsonl` cuts it off
before the shard is appended to again, and :func:`read_jsonl` ignores it in other shards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def shard_path(out_dir: str | os.PathLike, task: str, shard: int, num_shards: int) -> Path:
    return Path(out_dir) / "predictions" / task / f"shard-{shard:05d}-of-{num_shards:05d}.jsonl"


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a final line without newline or not valid JSON (a killed write) is skipped."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return


def repair_jsonl(path: str | os.PathLike) -> int:
    """Truncate ``path`` after its last complete, valid line; return the number of valid records."""
    path = Path(path)
    if not path.exists():
        return 0
    good_bytes = 0
    count = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except json.JSONDecodeError:
                break
            good_bytes += len(line)
            count += 1
    if good_bytes != path.stat().st_size:
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return count


def located_records(out_dir: str | os.PathLike, task: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """Every finished record of ``task`` over all shard files (of any world size), with its file and line number."""
    folder = Path(out_dir) / "predictions" / task
    for path in sorted(folder.glob("shard-*.jsonl")) if folder.is_dir() else []:
        for line, record in enumerate(read_jsonl(path), start=1):
            yield path, line, record


def task_records(out_dir: str | os.PathLike, task: str) -> dict[str, dict[str, Any]]:
    """Every finished record of ``task`` over all shard files (of any world size), by item id."""
    records: dict[str, dict[str, Any]] = {}
    for _, _, record in located_records(out_dir, task):
        records.setdefault(record["id"], record)
    return records


class JsonlAppender:
    """Appends one JSON record per line, flushing after each so a kill loses at most the current item."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_jsonl(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, sort_keys=True, ensure_ascii=False, allow_nan=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Helpers every area records its results with: package versions, and files written atomically."""

from __future__ import annotations

import contextlib
import importlib.metadata as metadata
import json
import os
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's version and each package's (``"not installed"`` where missing)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name next to ``path``; when the block ends without error the file is synced to
    disk and renamed onto ``path`` (``os.replace``), otherwise it is deleted, so a reader never sees half a file
    and a failed write leaves no temp file. Creates the folder.

    For writers that want a file name (PyAV, ``tarfile``, ``DatasetCard.save``); the temp name is hidden,
    tagged with the process id and keeps the suffix (``.clip.tmp-123.mp4``) for writers that pick the format
    from it. Use :func:`atomic_write` for an open file handle.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left after a failed write


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """``open(path, mode)`` that writes through :func:`atomic_path`: ``path`` appears, complete, only when the
    block ends without error. ``encoding`` applies to text modes."""
    with atomic_path(path) as tmp, open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`); returns ``path``."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``payload`` as indented, key-sorted JSON atomically (see :func:`atomic_path`); creates the folder.
    ``default`` serializes what JSON cannot (as in ``json.dump``)."""
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=True, default=default)
        handle.write("\n")
    return Path(path)

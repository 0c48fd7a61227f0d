"""Two helpers every area records its results with: package versions, and JSON written atomically."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import platform
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Python's version and each package's (``"not installed"`` where missing)."""
    versions = {"python": platform.python_version()}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def write_json_atomic(path: str | os.PathLike, payload: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``payload`` as indented, key-sorted JSON via a temp file and ``os.replace``, so a reader never sees
    half a file; creates the folder. ``default`` serializes what JSON cannot (as in ``json.dump``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=True, default=default)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only left after a failed write
    return path

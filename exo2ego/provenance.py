"""Helpers every area records and publishes its results with: package versions, JSON written atomically, and the
one Hub upload (an explicit list of files in one commit) that model and dataset pushes share."""

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


def push_files_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    paths: Iterable[str],
    *,
    repo_type: str = "model",
    private: bool | None = None,
    token: str | None = None,
    commit_message: str,
    api=None,
):
    """Create the Hub repo ``repo_id`` if needed and upload exactly ``paths`` (relative to ``folder``, nothing else
    that lies there) in ONE commit; returns the ``CommitInfo`` of ``HfApi.create_commit``.

    Raises ``ValueError`` before anything is uploaded for a path that leaves ``folder`` or is not a file.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    root = Path(folder).resolve()
    operations = []
    for relative in sorted(set(paths)):
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or path == root:
            raise ValueError(f"{relative!r} is outside {root}; only files inside the folder are pushed")
        if not path.is_file():
            raise ValueError(f"{path} is listed for the push but is not a file")
        relative_path = path.relative_to(root).as_posix()
        operations.append(CommitOperationAdd(path_in_repo=relative_path, path_or_fileobj=str(path)))
    api = api or HfApi(token=token)
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    return api.create_commit(
        repo_id=repo_id, operations=operations, repo_type=repo_type, commit_message=commit_message
    )

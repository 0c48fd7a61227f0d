"""Helpers every area records and publishes its results with: package versions, files and folders written
atomically, a folder lock for runs that write into one folder over time, and the one Hub upload (an explicit list of
files in one commit) that model and dataset pushes share."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import importlib.metadata as metadata
import json
import os
import platform
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_staging(out: Path) -> None:
    """Delete ``<out>.tmp-<pid>`` folders left by builds that were killed (their process is gone)."""
    for candidate in out.parent.glob(f"{out.name}.tmp-*"):
        suffix = candidate.name.rsplit(".tmp-", 1)[-1]
        if suffix.isdigit() and not _pid_alive(int(suffix)):
            shutil.rmtree(candidate, ignore_errors=True)


def _overlap(out: Path, source: Path) -> str | None:
    """How ``out`` sits relative to ``source`` ("is", "lies inside", "contains"), or None when apart; compared as
    written (absolute, ``..`` removed) and with symlinks resolved."""
    for mine, theirs in (
        (Path(os.path.abspath(out)), Path(os.path.abspath(source))),
        (out.resolve(), source.resolve()),
    ):
        if mine == theirs:
            return "is"
        if mine.is_relative_to(theirs):
            return "lies inside"
        if theirs.is_relative_to(mine):
            return "contains"
    return None


def check_output_apart(
    out: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None],
    error: type[Exception] = ValueError,
    what: str = "output",
) -> None:
    """Raise ``error`` when the output ``out`` (a folder, or a file) is, contains or lies inside one of ``inputs``
    (files or folders; missing ones and None are ignored), so that replacing or clearing ``out`` can never touch
    the data it was made from. Symlinks are followed, and paths are compared as written too. ``what`` names the
    output in the message (``output_dir``)."""
    for item in inputs:
        if item is None or not os.path.lexists(item):
            continue
        source = Path(item)
        relation = _overlap(Path(out), source)
        if relation:
            kind = "folder" if source.is_dir() else "file"
            raise error(
                f"{what} {out} {relation} the input {kind} {source}: writing there could destroy the input; "
                f"choose an {what} outside every input"
            )


def check_output_location(out: str | os.PathLike, error: type[Exception] = ValueError, what: str = "output") -> None:
    """Raise ``error`` when the folder ``out`` cannot be created or written: a file at ``out`` or above it, or a
    folder the process may not write in (``/proc``, read-only mounts). Leaves nothing behind. ``what`` names the
    output in the message."""
    out = Path(os.path.abspath(out))
    existing = next(path for path in (out, *out.parents) if os.path.lexists(path))
    if not existing.is_dir():
        where = "is a file" if existing == out else f"lies under the file {existing}"
        raise error(f"{what} {out} {where}, not a folder; pass a folder path as the {what}")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
    except OSError as problem:
        raise error(f"{what} {out} cannot be created in {existing}: {problem.strerror or problem}") from None


@contextlib.contextmanager
def staged_folder(
    out: str | os.PathLike,
    *,
    marker: str,
    overwrite: bool = False,
    error: type[Exception] = FileExistsError,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> Iterator[Path]:
    """Yield an empty staging folder that replaces ``out`` only if the block finishes without error.

    Args:
        out: the final folder.
        marker: the file the block writes LAST (``build_info.json``, ``exo2ego_stage.json``); a staging
            folder without it is deleted and ``error`` raised, so nothing at ``out`` looks complete unless it is.
        overwrite: replace an existing non-empty ``out``. Without it, an existing non-empty ``out`` (or a
            file at ``out``, always) raises ``error`` before any work is done.
        error: the exception type raised for an existing ``out`` or a missing marker.
        inputs: the files and folders the block reads; an ``out`` that is, contains or lies inside one of them
            raises ``error`` before any work is done, with or without ``overwrite`` (:func:`check_output_apart`).

    The staging folder is ``<out>.tmp-<pid>`` next to ``out`` (same file system, so the final rename is
    atomic); those of killed builds are removed first. On an exception it is deleted and ``out`` is left as
    it was.
    """
    check_output_apart(out, inputs, error)
    check_output_location(out, error)
    out = Path(out).absolute()
    if out.exists() and any(out.iterdir()) and not overwrite:
        state = f"complete: it has {marker}" if (out / marker).is_file() else "not empty"
        raise error(
            f"{out} already exists ({state}); remove it, choose another folder or pass overwrite=True "
            "(CLI: --overwrite) to replace it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(out)
    staging = out.parent / f"{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not (staging / marker).is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise error(f"the build of {out} did not write {marker}, which marks the folder complete (write it last)")
    if out.exists():
        # Move the old folder aside first: a crash between the two renames leaves no half folder at out.
        retired = out.parent / f"{out.name}.old-{os.getpid()}"
        shutil.rmtree(retired, ignore_errors=True)
        os.replace(out, retired)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


class FolderLockedError(RuntimeError):
    """Another process holds the folder's lock."""


class HubPushError(ValueError):
    """An upload the Hub did not take (offline, unreachable, no or a wrong token); the local folder is kept."""


LOCK_NAME = ".exo2ego.lock"
_held_locks: dict[Path, int] = {}  # lock files this process holds, with their nesting depth


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s lock file (``LOCK_NAME``) while the block runs, so that two runs never write into one folder
    at the same time; yields the lock file's path.

    The lock is an exclusive ``flock`` on the file, which the system drops when its process ends, however it ends
    (a killed run leaves no stale lock). The file holds the holder's pid, host and start time; another process
    raises :class:`FolderLockedError` naming them. The same process may nest the lock. The folder is created if
    needed, and removed again on exit when it was created here and holds nothing else.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = (folder / LOCK_NAME).resolve()
    if path in _held_locks:
        _held_locks[path] += 1
        try:
            yield path
        finally:
            _held_locks[path] -= 1
        return
    handle = _lock_file(path, folder)
    _held_locks[path] = 1
    try:
        yield path
    finally:
        del _held_locks[path]
        path.unlink(missing_ok=True)  # while still locked: a process that opened it now sees it was replaced
        handle.close()
        if created and not any(folder.iterdir()):
            folder.rmdir()


def _lock_file(path: Path, folder: Path):
    """Open and lock ``path``, write the holder's record into it and return the open file."""
    for _ in range(10):  # another holder may remove the file between our open and lock: then lock the new one
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read()
            handle.close()
            raise FolderLockedError(f"{folder} is in use by another run ({_describe_holder(holder)})") from None
        if path.exists() and os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
            break
        handle.close()
    else:
        raise FolderLockedError(f"{folder}: could not take {path.name}, which other processes keep replacing")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    handle.truncate(0)
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}) + "\n")
    handle.flush()
    return handle


def _describe_holder(record: str) -> str:
    try:
        holder = json.loads(record)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}"
    except (ValueError, TypeError, KeyError):  # the holder has not written its record yet
        return "a process that is starting"


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

    Raises ``ValueError`` before anything is uploaded for a path that leaves ``folder`` or is not a file, and
    :class:`HubPushError` (a ``ValueError``, one line saying the folder is kept) when the Hub cannot be reached
    (offline mode, no network) or refuses the upload (no token, a wrong one).
    """
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
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        return api.create_commit(
            repo_id=repo_id, operations=operations, repo_type=repo_type, commit_message=commit_message
        )
    except (HTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HubPushError(
            f"could not push to the Hub {repo_type} repo {repo_id} ({type(error).__name__}: {reason}); the built "
            f"folder {root} is kept: push it again once online and logged in (HF_TOKEN or `hf auth login`)"
        ) from error

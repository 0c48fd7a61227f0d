"""The folder a command writes, as that command and every other one sees it: :class:`RunFolder`.

A command that writes a folder (a training stage, an evaluation run, a dataset export) declares it once, as
``RunFolder(path, kind, marker, record=...)``:

- ``kind`` says in words what such a folder is ("a training stage folder"); ``marker`` is the file its command
  writes LAST, so the folder is finished exactly when the marker is in it; ``record`` (optional) is the file of
  arguments written before the work starts, which a resumed run is compared with (:meth:`RunFolder.check_resume`).
- The folder carries its own identity: its kind and its marker's name, in :data:`FOLDER_FILE` (the one file name
  this module knows). Any other command reads from the folder what wrote it (:meth:`RunFolder.refuse_foreign`), so
  no command knows another's marker by name.
- Files are staged before they count: under ``<path>/.staging/`` for a folder written into over time (moved into
  place once complete, :meth:`RunFolder.move_staged`), or as a whole folder ``<path>.tmp-<pid>`` renamed onto
  ``path`` (:meth:`RunFolder.staged`). Neither is ever read as a finished run: only the marker in ``path`` itself
  says finished, and staging left by a killed process is removed by the next run.
- ``--overwrite`` removes what a run of the same kind wrote (:meth:`RunFolder.clear`), and nothing else; a folder of
  another kind is refused with or without it.

A folder without :data:`FOLDER_FILE` (a Hub download, since pushes leave it out, or one an older version wrote)
counts as this kind's when it holds this kind's record or marker, and as nobody's otherwise: commands that must not
write into such a folder name it by a file it holds (`refuse_foreign`'s `others`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exo2ego_base.provenance import check_output_apart, staged_folder, write_json_atomic

# The folder's identity: {"kind": ..., "marker": ...}, written with its first record or marker.
FOLDER_FILE = ".exo2ego_folder.json"
# Files written into a folder over time are put together here first, then moved into place.
STAGING_NAME = ".staging"
# How a difference shows an argument that one of the two runs does not have.
UNSET = "<unset>"


@dataclass(frozen=True)
class FolderIdentity:
    """What wrote a folder: its kind in words, and the file that kind writes last."""

    kind: str
    marker: str


@dataclass(frozen=True)
class Difference:
    """An argument (``group.name``) that differs between the run recorded in a folder and this one."""

    name: str
    before: Any
    now: Any

    def describe(self, line: str) -> str:
        """``line`` with ``{name}``, ``{short}`` (the name without its group), ``{before}`` and ``{now}`` filled in."""
        return line.format(name=self.name, short=self.name.split(".", 1)[-1], before=self.before, now=self.now)


def read_identity(path: str | os.PathLike) -> FolderIdentity | None:
    """The identity ``path`` records in :data:`FOLDER_FILE`, or None (no such file, or not one this module wrote)."""
    try:
        record = json.loads((Path(path) / FOLDER_FILE).read_text(encoding="utf-8"))
        return FolderIdentity(str(record["kind"]), str(record["marker"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def flatten(groups: Mapping[str, Any]) -> dict[str, Any]:
    """``{group: {name: value}}`` as ``{"group.name": value}``; top-level entries that are not mappings are left
    out."""
    return {
        f"{group}.{name}": value
        for group, values in groups.items()
        if isinstance(values, Mapping)
        for name, value in values.items()
    }


def compare_arguments(
    before: Mapping[str, Any],
    now: Mapping[str, Any],
    *,
    may_differ: Iterable[str] = (),
    may_differ_prefixes: Iterable[str] = (),
    optional_prefixes: Iterable[str] = (),
    missing: Any = UNSET,
) -> list[Difference]:
    """The arguments that differ between two runs, by name; both given as ``{group: {name: value}}``.

    Args:
        may_differ, may_differ_prefixes: argument names (without their group) that a resumed run may change, and
            name prefixes of such arguments (``hub_``): the allow-list.
        optional_prefixes: full names (``data.``) compared only where both runs have them: a part the earlier run
            did not cover (a task first evaluated now) has nothing to mix up.
        missing: the value of an argument only one run has.
    """
    allowed, allowed_prefixes = set(may_differ), tuple(may_differ_prefixes)
    optional = tuple(optional_prefixes)
    before, now = flatten(before), flatten(now)
    differences = []
    for name in sorted(before.keys() | now.keys()):
        bare = name.split(".", 1)[-1]
        if bare in allowed or bare.startswith(allowed_prefixes):
            continue
        if name.startswith(optional) and not (name in before and name in now):
            continue
        was, value = before.get(name, missing), now.get(name, missing)
        if was != value:
            differences.append(Difference(name, was, value))
    return differences


class RunFolder:
    """The folder at ``path`` as a command of ``kind`` writes it: see the module docstring.

    Args:
        path: the folder (it need not exist yet).
        kind: what such a folder is, in words, as messages name it ("a training stage folder").
        marker: the file this kind writes last; the folder is finished when it holds it.
        record: the file of arguments written before the work starts (compared on resume), if this kind has one.
        label: how messages name the folder (default: its path), e.g. ``"--out runs/x"``.
        error: the exception type refusals raise.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str,
        marker: str,
        *,
        record: str | None = None,
        label: str | None = None,
        error: type[Exception] = ValueError,
    ):
        self.path = Path(path)
        self.kind, self.marker, self.record_name = kind, marker, record
        self.label = label if label is not None else str(self.path)
        self.error = error

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r}, kind={self.kind!r}, marker={self.marker!r})"

    # ---- who wrote the folder ------------------------------------------------------------------------------------

    @property
    def identity(self) -> FolderIdentity:
        return FolderIdentity(self.kind, self.marker)

    def owner(self) -> FolderIdentity | None:
        """What wrote the folder, as the folder records it; None for a folder that records nothing."""
        return read_identity(self.path)

    def is_mine(self) -> bool:
        """Whether a command of this kind wrote the folder (a folder without identity: whether it holds this kind's
        record or marker)."""
        owner = self.owner()
        if owner is not None:
            return owner.kind == self.kind
        names = [name for name in (self.record_name, self.marker) if name]
        return any((self.path / name).exists() for name in names)

    def foreign(self, others: Mapping[str, str] | None = None) -> str | None:
        """What wrote the folder when it is another command's, as "<kind> (<its marker>)", else None.

        ``others``: ``{file: kind}`` of folders that no command of this project writes (``{"config.json": "a model
        folder"}``), looked for in a folder that records no identity and is not this kind's."""
        owner = self.owner()
        if owner is not None:
            if owner.kind == self.kind:
                return None
            if (self.path / owner.marker).is_file():
                return f"{owner.kind} ({owner.marker})"
            return f"{owner.kind} (unfinished: no {owner.marker} yet)"
        if not others or self.is_mine():
            return None
        return next((f"{kind} ({name})" for name, kind in others.items() if (self.path / name).exists()), None)

    def refuse_foreign(
        self,
        others: Mapping[str, str] | None = None,
        advice: str = "this command never writes into another command's folder: choose another folder",
    ) -> None:
        """Raise ``error`` naming what wrote the folder when another command did (see :meth:`foreign`); with or
        without ``--overwrite``, which only replaces this kind's runs. Changes nothing."""
        description = self.foreign(others)
        if description is not None:
            raise self.error(f"{self.label} is {description}; {advice}")

    # ---- what is in it -------------------------------------------------------------------------------------------

    def is_finished(self) -> bool:
        """Whether this kind finished the folder: its marker is in the folder itself (staging never counts)."""
        return (self.path / self.marker).is_file() and self.foreign() is None

    def _read(self, name: str | None) -> Any:
        if not name or not (self.path / name).is_file():
            return None
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def read_marker(self) -> Any:
        """The marker's JSON content, or None while the folder is unfinished."""
        return self._read(self.marker)

    def read_record(self) -> Any:
        """The recorded arguments' JSON content, or None before the first record."""
        return self._read(self.record_name)

    # ---- writing -------------------------------------------------------------------------------------------------

    def claim(self) -> None:
        """Write the folder's identity (this kind, this marker), unless it records it already; creates the folder."""
        if self.owner() != self.identity:
            write_json_atomic(self.path / FOLDER_FILE, {"kind": self.kind, "marker": self.marker})

    def record(self, arguments: Any) -> Path:
        """Claim the folder and write ``arguments`` (JSON) into the record file, atomically; returns its path."""
        if not self.record_name:
            raise TypeError(f"{self!r} declares no record file")
        self.claim()
        return write_json_atomic(self.path / self.record_name, arguments)

    def finish(self, payload: Any, default=None) -> Path:
        """Claim the folder and write the marker (JSON, ``default`` as in ``json.dump``): call it LAST."""
        self.claim()
        return write_json_atomic(self.path / self.marker, payload, default=default)

    def check_resume(
        self,
        arguments: Mapping[str, Any],
        recorded: Mapping[str, Any] | None = None,
        *,
        may_differ: Iterable[str] = (),
        may_differ_prefixes: Iterable[str] = (),
        optional_prefixes: Iterable[str] = (),
        missing: Any = UNSET,
        reason: str | None = None,
        advice: str = "resume with the same arguments, or start over with --overwrite (or choose another folder)",
        line: str = "{name}: was {before!r}, now {now!r}",
    ) -> None:
        """Raise ``error`` listing every argument that differs from the run recorded in the folder, unless it is
        allowed to (:func:`compare_arguments`); the exception's ``differences`` holds them. ``recorded`` defaults to
        the record file's content (no record: nothing to compare). Both are ``{group: {name: value}}``.

        The message is ``"<reason> (<line>; <line>...); <advice>"``, one ``line`` per difference
        (:meth:`Difference.describe`)."""
        if recorded is None:
            recorded = self.read_record()
            if recorded is None:
                return
        differences = compare_arguments(
            recorded,
            arguments,
            may_differ=may_differ,
            may_differ_prefixes=may_differ_prefixes,
            optional_prefixes=optional_prefixes,
            missing=missing,
        )
        if differences:
            reason = reason or f"cannot resume the run in {self.path}: it was run with other arguments"
            listed = "; ".join(difference.describe(line) for difference in differences)
            error = self.error(f"{reason} ({listed}); {advice}")
            error.differences = differences
            raise error

    # ---- staging and overwriting ---------------------------------------------------------------------------------

    @property
    def staging_dir(self) -> Path:
        """Where files are put together before they are moved into the folder (never read as part of it)."""
        return self.path / STAGING_NAME

    def clear_staging(self) -> None:
        """Remove the staging folder, with whatever a killed process left there."""
        shutil.rmtree(self.staging_dir, ignore_errors=True)

    def move_staged(self, staged: str | os.PathLike) -> list[str]:
        """Move every file under ``staged`` into the folder at the same relative path (replacing what is there);
        returns the relative paths moved, sorted, with ``/`` separators."""
        moved = []
        for directory, _, files in os.walk(staged):
            for name in files:
                relative = os.path.relpath(os.path.join(directory, name), staged)
                target = self.path / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(os.path.join(directory, name), target)
                moved.append(relative.replace(os.sep, "/"))
        return sorted(moved)

    def clear(self, paths: Iterable[str] = ()) -> None:
        """Remove what a run of this kind wrote (``--overwrite``): the marker first, so that a clear cut short never
        leaves a folder that looks finished, then the record, ``paths`` (relative to the folder), the staging folder
        and the identity. Files it did not write stay; paths that lead outside the folder are skipped."""
        root = os.path.realpath(self.path)
        for relative in (self.marker, self.record_name, *paths, STAGING_NAME, FOLDER_FILE):
            if not relative:
                continue
            path = os.path.realpath(os.path.join(self.path, relative))
            if os.path.commonpath([root, path]) != root or path == root:
                continue  # a file list naming paths outside the folder is not ours to delete
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)

    @contextlib.contextmanager
    def staged(self, overwrite: bool = False, inputs: Iterable[str | os.PathLike | None] = ()) -> Iterator[Path]:
        """Yield an empty staging folder that becomes the folder, whole, once the block has written the marker
        (:func:`exo2ego_base.provenance.staged_folder`: ``<path>.tmp-<pid>``, renamed into place; those of killed
        processes are removed first). A folder of another kind is refused, with or without ``overwrite``; an
        existing non-empty folder without ``overwrite``; an output on an input (``inputs``), always."""
        check_output_apart(self.path, inputs, self.error)
        self.refuse_foreign()
        with staged_folder(
            self.path, marker=self.marker, overwrite=overwrite, error=self.error, inputs=inputs
        ) as staging:
            yield staging
            if (staging / self.marker).is_file():
                RunFolder(staging, self.kind, self.marker).claim()

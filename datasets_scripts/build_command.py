"""The source builders' build and command-line plumbing: what every builder does around reading its sources.

Reading the source files themselves is :mod:`datasets_scripts.source_io`'s job; this module holds what a build does
around it:

- :class:`BuildContext` carries the bad-row policy, notes and seed through a build;
- :func:`write_hub_folder` writes tables + card + build_info.json atomically (through ``hub_export``);
- :class:`SourceArguments` / :func:`run_cli_build` / :func:`recorded_args`: the builders' shared command line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, make_dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, ClassVar

from datasets_scripts import hub_export
from datasets_scripts.source_io import BadRows, RowError, SourceFileError, parse_roots

logger = logging.getLogger(__name__)


@dataclass
class BuildContext:
    """What every adapter gets besides its root: the bad-row policy, a place for notes, the seed."""

    bad_rows: BadRows = dataclass_field(default_factory=BadRows)
    notes: list[str] = dataclass_field(default_factory=list)  # logged and stored in build_info.json
    seed: int = 0

    def note(self, message: str) -> None:
        self.notes.append(message)
        logger.info(message)


def write_hub_folder(
    out: str | os.PathLike,
    tables: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]]]],
    features: Mapping[str, Any],
    *,
    card: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    build_info: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    overwrite: bool = False,
    extra_configs: Mapping[str, Sequence[str]] | None = None,
    extra_files: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    max_rows_per_shard: int | None = None,
    inputs: Sequence[str | os.PathLike] = (),
) -> dict:
    """Write tables, dataset card, extra text files and build_info.json atomically (see ``hub_export``).

    Args:
        tables: ``{config: {split: rows}}``; rows may be any iterable of dicts (a generator is written as it
            yields, one row group at a time, so a builder need not hold its rows: see
            ``hub_export.write_parquet_configs``).
        features: ``{config: datasets.Features}``.
        card: keyword arguments of ``hub_export.make_dataset_card`` (pretty_name, license, sections, ...).
        extra_configs: ``{new config: [existing configs]}``: a config reading the files of several
            configs (e.g. EgoIT's ``all``), split by split.
        extra_files: ``{relative path: text}`` written next to the tables (reports, id lists).
        inputs: the roots and files the build read; ``out`` may not be, contain or lie inside one of them.

    ``extra_files``, ``card`` and ``build_info`` may be callables, called (in that order) once the tables are
    written: what they report (counts, notes) may come from reading the tables' rows.

    Returns ``{config: {split: [parquet paths]}}``.
    """
    with hub_export.staged_folder(out, overwrite=overwrite, inputs=inputs) as staging:
        data_files = hub_export.write_parquet_configs(staging, tables, features, max_rows_per_shard=max_rows_per_shard)
        for name, members in (extra_configs or {}).items():
            merged: dict[str, list[str]] = {}
            for member in members:
                for split, paths in data_files.get(member, {}).items():
                    merged.setdefault(split, []).extend(paths)
            if merged:
                data_files = {name: merged, **data_files}
        for relative, content in ((extra_files() if callable(extra_files) else extra_files) or {}).items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        card = card() if callable(card) else card
        hub_export.make_dataset_card(data_files, **card).save(staging / hub_export.CARD_NAME)
        hub_export.write_build_info(staging, build_info() if callable(build_info) else build_info)
    return data_files


# --------------------------------------------------------------------------------------------- CLI
@dataclass
class SourceArguments:
    """What every source builder takes: the output folder, where the downloaded sources are, the seed and the
    bad-row and video-check policies. A command lists the class :meth:`for_sources` makes for its sources."""

    out: str = dataclass_field(metadata={"help": "output folder (Hub-ready: Parquet, README.md, build_info.json)"})
    root: list[str] = dataclass_field(
        default_factory=list,
        metadata={
            "help": "root of one downloaded source (repeatable); NAME is one of the command's sources",
            "metavar": "NAME=DIR",
            "action": "extend",
        },
    )
    data_root: str | None = dataclass_field(
        default=None,
        metadata={
            "help": "folder holding one sub-folder per source (DIR/<name>); missing ones are skipped",
            "metavar": "DIR",
        },
    )
    seed: int = dataclass_field(default=0, metadata={"help": "seed of every hashed choice (templates, option order)"})
    skip_bad_rows: bool = dataclass_field(
        default=False,
        metadata={"help": "skip malformed rows instead of failing; skips are counted in build_info.json"},
    )
    check_videos: bool = dataclass_field(
        default=False,
        metadata={"help": "count (and list under missing_videos/) the videos not found under each root"},
    )

    sources: ClassVar[tuple[str, ...]] = ()  # the names --root takes

    @classmethod
    def for_sources(cls, sources: Sequence[str]) -> type[SourceArguments]:
        """This class for a command reading ``sources``: ``--root`` names them in its help."""
        root = next(entry for entry in fields(cls) if entry.name == "root")
        metadata = {
            **root.metadata,
            "help": f"root of one downloaded source (repeatable); NAME is one of: {', '.join(sources)}",
        }
        return make_dataclass(
            cls.__name__,
            [("root", list[str], dataclass_field(default_factory=list, metadata=metadata))],
            bases=(cls,),
            namespace={"sources": tuple(sources), "__doc__": cls.__doc__, "__module__": cls.__module__},
        )

    def roots(self) -> tuple[dict[str, Path], list[str]]:
        """:func:`parse_roots` of ``--root`` and ``--data-root`` over this command's sources."""
        return parse_roots(self.root, self.data_root, self.sources)


def run_cli_build(build: Callable[[], Any], out: str | os.PathLike, push: hub_export.HubPushArguments) -> int:
    """Run a build; input errors print one line naming file/row/field and return 2; push on success."""
    try:
        build()
    except (SourceFileError, RowError, ValueError, hub_export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    hub_export.maybe_push_to_hub(push, out)
    return 0


PATH_ARGUMENTS = ("leakage_against", "ego4d_metadata", "encoder", "egomcq_pool", "llava_json")


def recorded_args(source: SourceArguments, *others: Any) -> dict[str, Any]:
    """A command's arguments (its dataclasses) for build_info.json: root names and file names only (no local
    paths)."""
    recorded = {key: value for key, value in asdict(source).items() if key not in ("root", "data_root", "out")}
    for values in others:
        recorded.update(asdict(values))
    recorded["root_names"] = sorted(item.partition("=")[0] for item in source.root)
    for key in PATH_ARGUMENTS:
        value = recorded.get(key)
        if isinstance(value, list):
            recorded[key] = [Path(item).name for item in value]
        elif value:
            recorded[key] = Path(value).name
    return recorded

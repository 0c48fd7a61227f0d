"""Write Hub-ready dataset folders atomically, and push them to the Hub in one commit.

Every builder (Ego-ExoClip, EgoIT, EgoBench, the synthetic world) ends with the same layout::

    <out>/
      README.md                                        dataset card, YAML ``configs:`` -> data_files
      build_info.json                                  counts, skips by reason, versions, seeds, args
      .exo2ego_folder.json                             what wrote the folder (``exo2ego_base.run_folder``; not pushed)
      data/<config>/<split>-00000-of-00001.parquet     one Parquet file per config and split
      ...                                              builder extras (uid lists, plots)

``load_dataset(<out>, "<config>", split="<split>")`` reads it back, locally or from its Hub repo. For local
folders that get rebuilt, prefer :func:`load_folder` (``load_dataset`` may serve a stale cache for them).

Typical use::

    from datasets_scripts import hub_export

    with hub_export.staged_folder(out, overwrite=push.overwrite) as staging:
        data_files = hub_export.write_parquet_configs(staging, {"clips": {"train": rows}}, {"clips": features})
        card = hub_export.make_dataset_card(data_files, pretty_name="Ego-ExoClip", license="other",
                                            sections={"Loading": "..."})
        card.save(staging / "README.md")
        hub_export.write_build_info(staging, {"counts": {...}, "args": {...}})
    # <out> now exists, complete; before the ``with`` block ends nothing is at <out>.
    hub_export.maybe_push_to_hub(push, out)     # push: the command's hub_export.HubPushArguments

Nothing half-written ever sits at ``<out>``: the folder is built in ``<out>.tmp-<pid>`` and renamed into
place only when the ``with`` block finishes without an error. An export folder is an
``exo2ego_base.run_folder.RunFolder`` of kind "a built dataset folder" whose marker is ``build_info.json``: it
records so in the folder, so other commands (``exo2ego eval``, the stage scripts) refuse to write into it and say
what it is, and a build refuses the folder of another command, with or without ``--overwrite``. Parquet bytes
are deterministic (row order as given, no timestamps in the file metadata), so two builds of the same input are
byte-identical.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from huggingface_hub import DatasetCard, DatasetCardData

from exo2ego_base import provenance
from exo2ego_base.provenance import push_files_to_hub
from exo2ego_base.run_folder import FOLDER_FILE, RunFolder

BUILD_INFO_NAME = "build_info.json"
# What an export folder is, as other commands name it when they refuse to write into it.
DATASET_FOLDER_KIND = "a built dataset folder"
CARD_NAME = "README.md"
# Files a push refuses unless asked: licences forbid uploading source videos, cut clips or packs.
MEDIA_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".tar", ".jpg", ".jpeg", ".npy", ".npz")


class ExportError(RuntimeError):
    """An export folder cannot be written (existing output, bad table) or pushed."""


# --------------------------------------------------------------------------------------------- folders
def dataset_folder(path: str | os.PathLike, marker: str = BUILD_INFO_NAME) -> RunFolder:
    """The export folder ``path`` as a run folder (kind ``DATASET_FOLDER_KIND``, ``marker`` written last); its
    refusals raise :class:`ExportError`."""
    return RunFolder(path, DATASET_FOLDER_KIND, marker, error=ExportError)


def is_complete_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished export (it has ``build_info.json``, written last)."""
    return dataset_folder(path).is_finished()


def staged_folder(
    out: str | os.PathLike,
    overwrite: bool = False,
    marker: str = BUILD_INFO_NAME,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> contextlib.AbstractContextManager[Path]:
    """Yield an empty staging folder that replaces ``out`` only if the block finishes without error and wrote
    ``marker`` (:meth:`exo2ego_base.run_folder.RunFolder.staged`; its failures raise :class:`ExportError`).

    Args:
        out: the final folder.
        overwrite: replace an existing non-empty ``out``. Without it, an existing non-empty ``out``
            raises :class:`ExportError` before any work is done.
        marker: the file the block writes last (``build_info.json`` for exports, see :func:`write_build_info`).
        inputs: the source roots and files the build reads; an ``out`` that is, contains or lies inside one of
            them raises :class:`ExportError`, with or without ``overwrite``.

    A folder another command wrote (a training stage, an eval run: the folder records it) raises
    :class:`ExportError` naming it, with or without ``overwrite``.
    """
    return dataset_folder(out, marker).staged(overwrite=overwrite, inputs=inputs)


# --------------------------------------------------------------------------------------------- parquet
def parquet_relpath(config: str, split: str, shard: int = 0, num_shards: int = 1) -> str:
    """``data/<config>/<split>-SSSSS-of-NNNNN.parquet`` (the Hub's conventional shard naming)."""
    return f"data/{config}/{split}-{shard:05d}-of-{num_shards:05d}.parquet"


ROW_GROUP_ROWS = 10_000  # rows per Parquet row group (fixed, so the bytes do not depend on how rows arrive)
PARQUET_OPTIONS = {"compression": "zstd", "write_statistics": True}
BATCH_ROWS = 1_000  # rows a streaming writer holds as Python dicts before turning them into Arrow columns


def write_parquet_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], features=None) -> int:
    """Write ``rows`` (in the given order) to one Parquet file; return the row count.

    Args:
        rows: list of dicts, or a ``datasets.Dataset``.
        features: ``datasets.Features`` for the schema (stored in the file's ``huggingface`` metadata so
            ``load_dataset`` restores the exact types). Inferred from the rows when None.
    """
    if isinstance(rows, datasets.Dataset):
        dataset = rows if features is None else rows.cast(features)
    else:
        dataset = datasets.Dataset.from_list(list(rows), features=features)
    if dataset._indices is not None:  # a selected/shuffled Dataset: materialise its row order
        dataset = dataset.flatten_indices()
    table = dataset.data.table
    table = table.replace_schema_metadata(dataset.features.arrow_schema.metadata)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # No timestamps are written by pyarrow; fixed row-group size and compression keep bytes stable.
    pq.write_table(table, str(path), row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
    return table.num_rows


def _plain_feature(feature) -> bool:
    """A ``Value`` of a string, number or bool type, or a list of one: features whose encoding leaves such Python
    values as they are, so Arrow can take the values directly."""
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return _plain_feature(feature.feature)
    if type(feature) is not datasets.Value:
        return False
    kind = feature.pa_type
    return any(
        check(kind) for check in (pa.types.is_string, pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
    )


def rows_to_table(rows: Sequence[Mapping[str, Any]], features, keys: Sequence[str] | None = None):
    """The Arrow table ``datasets.Dataset.from_list(rows, features)`` holds, with the features' schema metadata.

    ``keys``: the columns, in order (``from_list`` takes the first row's keys; a writer that converts a file's rows
    batch by batch passes the keys of the file's first row). Rows whose keys are the features' and whose values
    already have their column's Python type (what the builders' row constructors give) go straight to Arrow, about
    15 times faster; anything else (other keys, a value that needs ``datasets``' encoding or that Arrow refuses)
    goes through ``datasets``.
    """
    keys = list(keys if keys is not None else rows[0] if rows else [])
    if keys and set(keys) == set(features) and all(_plain_feature(features[key]) for key in keys):
        schema = features.arrow_schema
        schema = pa.schema([schema.field(key) for key in keys], metadata=schema.metadata)
        try:
            columns = [pa.array([row.get(key) for row in rows], type=field.type) for key, field in zip(keys, schema)]
            if all(_python_types_kept(column, rows, key) for column, key in zip(columns, keys)):
                return pa.Table.from_arrays(columns, schema=schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            pass
    dataset = datasets.Dataset.from_dict({key: [row.get(key) for row in rows] for key in keys}, features=features)
    return dataset.data.table.replace_schema_metadata(dataset.features.arrow_schema.metadata)


def _python_types_kept(column, rows, key) -> bool:
    """False when Arrow converted a value that ``datasets`` would have encoded otherwise (a bool or an int in a
    float column, a float in an int column: rare, so checked only for number columns)."""
    kind = column.type
    if pa.types.is_floating(kind):
        return all(type(row.get(key)) in (float, type(None)) for row in rows)
    if pa.types.is_integer(kind):
        return all(type(row.get(key)) in (int, type(None)) for row in rows)
    return True


def write_parquet_configs(
    folder: str | os.PathLike,
    tables: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]] | Iterable[Mapping[str, Any]]]],
    features: Mapping[str, Any] | None = None,
    max_rows_per_shard: int | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Write ``tables[config][split] = rows`` as Parquet under ``folder/data/``.

    ``rows`` is a list of dicts, a ``datasets.Dataset``, or (with features and without ``max_rows_per_shard``) any
    iterable of dicts, written as it is read. Lists with features are written row group by row group
    (:class:`ShardedParquetWriter`), so no second copy of a whole table is made; the bytes are those of
    :func:`write_parquet_table`. Empty splits are skipped (the Hub's loader rejects a split with no rows). Returns
    ``{config: {split: [relative parquet paths]}}`` for :func:`make_dataset_card`.
    """
    data_files: dict[str, dict[str, list[str]]] = {}
    for config, splits in tables.items():
        config_features = (features or {}).get(config)
        for split, rows in splits.items():
            if config_features is not None and not isinstance(rows, datasets.Dataset):
                if isinstance(rows, Sequence):
                    if not rows:
                        continue
                    shard_rows = len(rows)
                    if max_rows_per_shard:
                        shard_rows = math.ceil(len(rows) / max(1, math.ceil(len(rows) / max_rows_per_shard)))
                elif max_rows_per_shard:
                    raise ValueError("max_rows_per_shard needs rows as a list (their count sets the shard sizes)")
                else:
                    shard_rows = None
                writer = ShardedParquetWriter(folder, config, split, config_features, shard_rows)
                for row in rows:
                    writer.add(row)
                if writer.count:
                    data_files.setdefault(config, {})[split] = writer.finish()
                else:
                    writer.discard()
                continue
            num_rows = len(rows)
            if num_rows == 0:
                continue
            num_shards = max(1, math.ceil(num_rows / max_rows_per_shard)) if max_rows_per_shard else 1
            shard_size = math.ceil(num_rows / num_shards)
            for shard in range(num_shards):
                relpath = parquet_relpath(config, split, shard, num_shards)
                bounds = range(shard * shard_size, min(num_rows, (shard + 1) * shard_size))
                # A datasets.Dataset slices to a dict of columns, so select rows instead.
                shard_rows = rows.select(bounds) if hasattr(rows, "select") else rows[bounds.start : bounds.stop]
                write_parquet_table(Path(folder) / relpath, shard_rows, config_features)
                data_files.setdefault(config, {}).setdefault(split, []).append(relpath)
    return data_files


class ShardedParquetWriter:
    """Stream rows of one config/split into Parquet shards of ``shard_rows`` rows inside a staging folder.

    Memory does not grow with the rows: ``add`` keeps at most :data:`BATCH_ROWS` rows as Python dicts, turns them
    into Arrow columns and writes each :data:`ROW_GROUP_ROWS` rows as one row group of the open shard, so the files
    are byte for byte those :func:`write_parquet_table` writes from each shard's whole list. ``finish`` renames the
    shards to their final ``parquet_relpath`` names (which need the shard count) and returns those paths for
    :func:`make_dataset_card`. ``shard_rows=None``: one shard, however many rows.
    """

    def __init__(
        self, staging: str | os.PathLike, config: str, split: str, features, shard_rows: int | None = 500_000
    ):
        if shard_rows is not None and shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.staging, self.config, self.split = Path(staging), config, split
        self.features, self.shard_rows = features, shard_rows
        self.count = 0
        self._keys: list[str] | None = None  # the columns, in the order of the open shard's first row's keys
        self._pending: list[Mapping[str, Any]] = []  # rows not yet in Arrow form
        self._group: list = []  # Arrow tables of the row group being filled
        self._group_rows = 0  # rows in _group and _pending
        self._shard_rows_written = 0  # rows of the open shard, in row groups and in the group being filled
        self._writer = None  # pyarrow.parquet.ParquetWriter of the open shard
        self._shards: list[Path] = []

    def add(self, row: Mapping[str, Any]) -> None:
        if self._keys is None:
            self._keys = list(row)
        self._pending.append(row)
        self.count += 1
        self._group_rows += 1
        self._shard_rows_written += 1
        if len(self._pending) >= BATCH_ROWS:
            self._convert()
        if self._group_rows >= ROW_GROUP_ROWS or self._shard_rows_written == self.shard_rows:
            self._write_group()
        if self._shard_rows_written == self.shard_rows:
            self._close_shard()

    def _convert(self) -> None:
        if self._pending:
            self._group.append(rows_to_table(self._pending, self.features, self._keys))
            self._pending = []

    def _write_group(self) -> None:
        self._convert()
        if not self._group:
            return
        table = pa.concat_tables(self._group).combine_chunks() if len(self._group) > 1 else self._group[0]
        if self._writer is None:
            shard = self.staging / f"{self.config}-{self.split}-{len(self._shards):05d}.tmp.parquet"
            self._shards.append(shard)
            shard.parent.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(str(shard), table.schema, **PARQUET_OPTIONS)
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        pa.default_memory_pool().release_unused()  # mimalloc keeps freed pages otherwise: RSS grows with rows
        self._group, self._group_rows = [], 0

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._shard_rows_written = 0
        self._keys = None

    def finish(self) -> list[str]:
        """Write the last row group (an empty split still gets one file, so the config loads) and name the shards."""
        self._write_group()
        self._close_shard()
        if not self._shards:
            shard = self.staging / f"{self.config}-{self.split}-00000.tmp.parquet"
            write_parquet_table(shard, [], self.features)
            self._shards.append(shard)
        paths = []
        for index, shard in enumerate(self._shards):
            relative = parquet_relpath(self.config, self.split, index, len(self._shards))
            (self.staging / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(shard, self.staging / relative)
            paths.append(relative)
        return paths

    def discard(self) -> None:
        """Close and remove what was written (a split that turned out empty, or a failed build's leftovers)."""
        self._pending, self._group, self._group_rows = [], [], 0
        self._close_shard()
        for shard in self._shards:
            shard.unlink(missing_ok=True)
        self._shards = []


# --------------------------------------------------------------------------------------------- card
def make_dataset_card(
    data_files: Mapping[str, Mapping[str, Sequence[str]]],
    *,
    pretty_name: str,
    license: str,
    sections: Mapping[str, str],
    default_config: str | None = None,
    summary: str = "",
    **card_data_kwargs: Any,
):
    """Build a ``huggingface_hub.DatasetCard`` whose YAML ``configs:`` maps each config to its files.

    Args:
        data_files: ``{config: {split: [paths relative to the folder]}}`` (from write_parquet_configs).
        pretty_name, license: card metadata (``license="other"`` with ``license_name``/``license_link``
            in ``card_data_kwargs`` for custom licences).
        sections: ``{heading: markdown}``, rendered in order as ``## heading`` blocks (licence notes,
            download commands, how to load, ...).
        default_config: the config ``load_dataset(folder)`` picks without a name (first one if None).
        card_data_kwargs: any other ``DatasetCardData`` field (task_categories, tags, language, ...).
    """
    default_config = default_config or next(iter(data_files), None)
    configs = []
    for config, splits in data_files.items():
        entry: dict[str, Any] = {"config_name": config}
        if config == default_config:
            entry["default"] = True
        entry["data_files"] = [{"split": split, "path": list(paths)} for split, paths in splits.items()]
        configs.append(entry)
    card_data = DatasetCardData(pretty_name=pretty_name, license=license, configs=configs, **card_data_kwargs)
    return render_card(DatasetCard, card_data, pretty_name, sections, summary)


def render_card(card_class, card_data, title: str, sections: Mapping[str, str], summary: str = ""):
    """A Hub card (``card_class``: ``huggingface_hub.DatasetCard`` or ``ModelCard``) with ``card_data`` as its
    YAML header, then ``# title``, an optional summary paragraph and one ``## heading`` block per section."""
    body = [f"# {title}", ""]
    if summary:
        body += [summary.strip(), ""]
    for heading, text in sections.items():
        body += [f"## {heading}", "", text.strip(), ""]
    return card_class(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(body))


def load_folder(folder: str | os.PathLike, config: str | None = None, split: str | None = None, **kwargs):
    """``load_dataset`` for a LOCAL export folder that always reads the files as they are now.

    ``datasets.load_dataset(folder, config)`` caches local folders under the folder's name and config
    without looking at the files' contents or times, so after rebuilding a folder (or building another
    folder of the same name elsewhere) it can return the OLD rows. Loading the config's Parquet files
    through the ``parquet`` builder keys the cache on their modification times instead. ``config``
    defaults to the card's default config; ``kwargs`` go to ``load_dataset``.
    """
    folder = Path(folder)
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise ExportError(f"{folder} has no {CARD_NAME}; not an export folder")
    configs = DatasetCard.load(card_path).data.to_dict().get("configs") or []
    by_name = {entry["config_name"]: entry for entry in configs}
    if config is None:
        config = next((entry["config_name"] for entry in configs if entry.get("default")), next(iter(by_name), None))
    if config not in by_name:
        raise ExportError(f"{folder}: no config {config!r} in {CARD_NAME} (configs: {sorted(by_name)})")
    data_files = {}
    for entry in by_name[config]["data_files"]:
        paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
        data_files[entry["split"]] = [str(folder / path) for path in paths]
    return datasets.load_dataset("parquet", data_files=data_files, split=split, **kwargs)


# --------------------------------------------------------------------------------------------- build info
def environment_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the exported bytes."""
    return provenance.package_versions(("exo2ego", "datasets", "pyarrow", "huggingface_hub", "numpy", "av", "pillow"))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = sorted(value) if isinstance(value, set) else value
        return [_jsonable(item) for item in items]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if callable(value):  # argparse's func default
        return getattr(value, "__qualname__", repr(value))
    return value


def write_build_info(folder: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Write ``build_info.json`` (sorted keys, versions added under ``versions``); call it LAST. The folder then
    records that it is a built dataset folder (:meth:`exo2ego_base.run_folder.RunFolder.finish`).

    Put counts, ``skips`` ({reason: count}), seeds and the builder's arguments in ``info``. No
    timestamp is added, so identical builds give identical folders.
    """
    payload = dict(_jsonable(info))
    payload.setdefault("versions", environment_versions())
    return dataset_folder(folder).finish(payload)


# --------------------------------------------------------------------------------------------- hub push
def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    allow_media: bool = False,
    api=None,
):
    """Upload every file of an export folder to the dataset repo ``repo_id`` in ONE commit (its run-folder
    identity, ``exo2ego_base.run_folder.FOLDER_FILE``, stays local).

    Creates the repo if needed. Refuses incomplete folders (no ``build_info.json``) and, unless
    ``allow_media``, folders holding video/frame/pack files (``MEDIA_SUFFIXES``): licences forbid
    re-hosting source videos. Returns the ``CommitInfo`` of ``HfApi.create_commit``.
    """
    folder = Path(folder)
    if not is_complete_folder(folder):
        raise ExportError(f"{folder} is not a complete export folder (no {BUILD_INFO_NAME}); nothing pushed")
    files = sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != FOLDER_FILE
    )
    media = [path for path in files if Path(path).suffix.lower() in MEDIA_SUFFIXES]
    if media and not allow_media:
        raise ExportError(
            f"{folder} holds media files {media[:5]} (... {len(media)} in all); refusing to upload "
            "videos or frames (pass allow_media=True only for data you may redistribute)"
        )
    return push_files_to_hub(
        folder,
        repo_id,
        files,
        repo_type="dataset",
        private=private,
        token=token,
        api=api,
        commit_message=commit_message or f"Upload {folder.name} ({len(files)} files)",
    )


@dataclass
class HubPushArguments:
    """What a builder takes about its finished output folder: whether an existing one is replaced, and the Hub
    dataset repo it is uploaded to in one commit. The token comes from ``HF_TOKEN`` or ``huggingface-cli login``,
    never from the command line."""

    push_to_hub: str | None = field(
        default=None,
        metadata={
            "help": "after building, upload the folder to this Hub dataset repo in one commit",
            "metavar": "REPO",
        },
    )
    private: bool = field(default=False, metadata={"help": "create the Hub repo as private"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output folder"})


def maybe_push_to_hub(push: HubPushArguments, folder: str | os.PathLike):
    """Push ``folder`` when the command got ``--push-to-hub``; print and return the commit, else None."""
    if not push.push_to_hub:
        return None
    repo_id = push.push_to_hub
    commit = push_folder_to_hub(folder, repo_id, private=push.private)
    print(f"pushed {folder} to https://huggingface.co/datasets/{repo_id} ({getattr(commit, 'commit_url', commit)})")
    return commit

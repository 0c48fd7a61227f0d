"""Write Hub-ready dataset folders atomically, and push them to the Hub in one commit.

Every builder (Ego-ExoClip, EgoIT, EgoBench, the synthetic world) ends with the same layout::

    <out>/
      README.md                                        dataset card, YAML ``configs:`` -> data_files
      build_info.json                                  counts, skips by reason, versions, seeds, args
      data/<config>/<split>-00000-of-00001.parquet     one Parquet file per config and split
      ...                                              builder extras (uid lists, plots)

``load_dataset(<out>, "<config>", split="<split>")`` reads it back, locally or from its Hub repo. For local
folders that get rebuilt, prefer :func:`load_folder` (``load_dataset`` may serve a stale cache for them).

Typical use::

    from datasets_scripts import hub_export

    with hub_export.staged_folder(out, overwrite=args.overwrite) as staging:
        data_files = hub_export.write_parquet_configs(staging, {"clips": {"train": rows}}, {"clips": features})
        card = hub_export.make_dataset_card(data_files, pretty_name="Ego-ExoClip", license="other",
                                            sections={"Loading": "..."})
        card.save(staging / "README.md")
        hub_export.write_build_info(staging, {"counts": {...}, "args": vars(args)})
    # <out> now exists, complete; before the ``with`` block ends nothing is at <out>.
    hub_export.maybe_push_to_hub(args, out)     # after add_push_to_hub_arguments(parser)

Nothing half-written ever sits at ``<out>``: the folder is built in ``<out>.tmp-<pid>`` and renamed into
place only when the ``with`` block finishes without an error. Parquet bytes are deterministic (row order
as given, no timestamps in the file metadata), so two builds of the same input are byte-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from exo2ego_base import provenance
from exo2ego_base.provenance import push_files_to_hub

BUILD_INFO_NAME = "build_info.json"
CARD_NAME = "README.md"
# Files a push refuses unless asked: licences forbid uploading source videos, cut clips or packs.
MEDIA_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".tar", ".jpg", ".jpeg", ".npy", ".npz")


class ExportError(RuntimeError):
    """An export folder cannot be written (existing output, bad table) or pushed."""


# --------------------------------------------------------------------------------------------- folders
def is_complete_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a finished export (it has ``build_info.json``, written last)."""
    return (Path(path) / BUILD_INFO_NAME).is_file()


def staged_folder(
    out: str | os.PathLike,
    overwrite: bool = False,
    marker: str = BUILD_INFO_NAME,
    inputs: Iterable[str | os.PathLike | None] = (),
) -> contextlib.AbstractContextManager[Path]:
    """Yield an empty staging folder that replaces ``out`` only if the block finishes without error and wrote
    ``marker`` (:func:`exo2ego_base.provenance.staged_folder`; its failures raise :class:`ExportError`).

    Args:
        out: the final folder.
        overwrite: replace an existing non-empty ``out``. Without it, an existing non-empty ``out``
            raises :class:`ExportError` before any work is done.
        marker: the file the block writes last (``build_info.json`` for exports, see :func:`write_build_info`).
        inputs: the source roots and files the build reads; an ``out`` that is, contains or lies inside one of
            them raises :class:`ExportError`, with or without ``overwrite``.
    """
    return provenance.staged_folder(out, marker=marker, overwrite=overwrite, error=ExportError, inputs=inputs)


# --------------------------------------------------------------------------------------------- parquet
def parquet_relpath(config: str, split: str, shard: int = 0, num_shards: int = 1) -> str:
    """``data/<config>/<split>-SSSSS-of-NNNNN.parquet`` (the Hub's conventional shard naming)."""
    return f"data/{config}/{split}-{shard:05d}-of-{num_shards:05d}.parquet"


def write_parquet_table(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], features=None) -> int:
    """Write ``rows`` (in the given order) to one Parquet file; return the row count.

    Args:
        rows: list of dicts, or a ``datasets.Dataset``.
        features: ``datasets.Features`` for the schema (stored in the file's ``huggingface`` metadata so
            ``load_dataset`` restores the exact types). Inferred from the rows when None.
    """
    import datasets
    import pyarrow.parquet as pq

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
    pq.write_table(table, str(path), row_group_size=10_000, compression="zstd", write_statistics=True)
    return table.num_rows


def write_parquet_configs(
    folder: str | os.PathLike,
    tables: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
    features: Mapping[str, Any] | None = None,
    max_rows_per_shard: int | None = None,
) -> dict[str, dict[str, list[str]]]:
    """Write ``tables[config][split] = rows`` as Parquet under ``folder/data/``.

    Empty splits are skipped (the Hub's loader rejects a split with no rows). Returns
    ``{config: {split: [relative parquet paths]}}`` for :func:`make_dataset_card`.
    """
    data_files: dict[str, dict[str, list[str]]] = {}
    for config, splits in tables.items():
        config_features = (features or {}).get(config)
        for split, rows in splits.items():
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

    For builders whose sources are too large to hold in memory (EgoClip's 3.8M rows, web pretraining sets): rows
    go to ``add``; ``finish`` renames the shards to their final ``parquet_relpath`` names (which need the shard
    count) and returns those paths for :func:`make_dataset_card`.
    """

    def __init__(self, staging: str | os.PathLike, config: str, split: str, features, shard_rows: int = 500_000):
        if shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
        self.staging, self.config, self.split = Path(staging), config, split
        self.features, self.shard_rows = features, shard_rows
        self.count = 0
        self._buffer: list[Mapping[str, Any]] = []
        self._shards: list[Path] = []

    def add(self, row: Mapping[str, Any]) -> None:
        self._buffer.append(row)
        self.count += 1
        if len(self._buffer) >= self.shard_rows:
            self._flush()

    def _flush(self) -> None:
        shard = self.staging / f"{self.config}-{self.split}-{len(self._shards):05d}.tmp.parquet"
        write_parquet_table(shard, self._buffer, self.features)
        self._shards.append(shard)
        self._buffer = []

    def finish(self) -> list[str]:
        """Write the last shard (an empty split still gets one file, so the config loads) and name the shards."""
        if self._buffer or not self._shards:
            self._flush()
        paths = []
        for index, shard in enumerate(self._shards):
            relative = parquet_relpath(self.config, self.split, index, len(self._shards))
            (self.staging / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(shard, self.staging / relative)
            paths.append(relative)
        return paths


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
    from huggingface_hub import DatasetCard, DatasetCardData

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
    import datasets
    from huggingface_hub import DatasetCard

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
    """Write ``build_info.json`` (sorted keys, versions added under ``versions``); call it LAST.

    Put counts, ``skips`` ({reason: count}), seeds and the builder's arguments in ``info``. No
    timestamp is added, so identical builds give identical folders.
    """
    payload = dict(_jsonable(info))
    payload.setdefault("versions", environment_versions())
    return provenance.write_json_atomic(Path(folder) / BUILD_INFO_NAME, payload)


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
    """Upload every file of an export folder to the dataset repo ``repo_id`` in ONE commit.

    Creates the repo if needed. Refuses incomplete folders (no ``build_info.json``) and, unless
    ``allow_media``, folders holding video/frame/pack files (``MEDIA_SUFFIXES``): licences forbid
    re-hosting source videos. Returns the ``CommitInfo`` of ``HfApi.create_commit``.
    """
    folder = Path(folder)
    if not is_complete_folder(folder):
        raise ExportError(f"{folder} is not a complete export folder (no {BUILD_INFO_NAME}); nothing pushed")
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
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


def add_push_to_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--push-to-hub REPO``, ``--private`` and ``--overwrite`` to a builder's CLI parser.

    The token comes from ``HF_TOKEN`` or ``huggingface-cli login``, never from the command line.
    """
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        default=None,
        help="after building, upload the folder to this Hub dataset repo in one commit",
    )
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")


def maybe_push_to_hub(args: argparse.Namespace, folder: str | os.PathLike):
    """Push ``folder`` when the CLI got ``--push-to-hub``; print and return the commit, else None."""
    repo_id = getattr(args, "push_to_hub", None)
    if not repo_id:
        return None
    commit = push_folder_to_hub(folder, repo_id, private=getattr(args, "private", False))
    print(f"pushed {folder} to https://huggingface.co/datasets/{repo_id} ({getattr(commit, 'commit_url', commit)})")
    return commit

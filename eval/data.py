"""Load and check EgoBench task tables before any scoring starts.

An EgoBench folder (or Hub dataset repo) holds one Parquet config per task with the canonical rows
``{sample_id, task, subset, video, start_sec, end_sec, question, options, answer_idx, answer_text, meta}``
plus side tables for Charades-Ego (labels, class names) and EK-100 MIR (sentences, relevance). Every
problem found here raises :class:`EvalDataError` naming the config, its files, the row and the field;
nothing is scored until all requested tasks have passed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.parquet as pq

from datasets_scripts.hub_export import BUILD_INFO_NAME, load_folder
from datasets_scripts.schema import (
    CHARADES_CLASS_FEATURES,
    CHARADES_LABEL_FEATURES,
    EGOBENCH_FEATURES,
    MIR_RELEVANCE_FEATURES,
    MIR_SENTENCE_FEATURES,
)

from .tasks import TASKS, TaskSpec

# The columns (and types) come from the schema the builders write with: one module for both sides.
REQUIRED_COLUMNS = tuple(EGOBENCH_FEATURES)
LABEL_COLUMNS = ("video_id", "video", "positive_classes")
CLASS_COLUMNS = ("class_idx", "name")
SENTENCE_COLUMNS = ("sentence_index", "sentence")
RELEVANCE_COLUMNS = ("video_index", "sentence_index", "relevance")
SIDE_FEATURES = {
    "labels": CHARADES_LABEL_FEATURES,
    "classes": CHARADES_CLASS_FEATURES,
    "sentences": MIR_SENTENCE_FEATURES,
    "relevance": MIR_RELEVANCE_FEATURES,
}


class EvalDataError(ValueError):
    """An EgoBench table that cannot be evaluated; the message names where and what."""


@dataclass
class TaskData:
    """The checked tables of one task.

    Attributes:
        rows: canonical rows in dataset order (``meta`` parsed to a dict), after ``limit``.
        source: human-readable origin (folder, config, data files) for messages.
        class_videos: Charades-Ego label rows ``{video_id, video, positive_classes}`` (after ``limit``).
        class_names: Charades-Ego class names indexed by class index.
        sentences: EK-100 MIR sentences indexed by sentence index.
        relevance: EK-100 MIR relevance ``(len(rows), len(sentences))`` for the selected video rows.
        fingerprint: SHA-256 of every checked row and side table of the task before ``limit`` (what a
            resumed run must find unchanged).
    """

    spec: TaskSpec
    rows: list[dict[str, Any]]
    source: str
    class_videos: list[dict[str, Any]] = field(default_factory=list)
    class_names: list[str] | None = None
    sentences: list[str] | None = None
    relevance: np.ndarray | None = None
    fingerprint: str = ""

    @property
    def has_class_scores(self) -> bool:
        return self.class_names is not None and bool(self.class_videos)


def available_configs(dataset_dir: str) -> list[str]:
    """Config names of an EgoBench folder or Hub repo (from its dataset card's ``configs:``)."""

    try:
        return list(datasets.get_dataset_config_names(str(dataset_dir)))
    except Exception as error:
        raise EvalDataError(f"cannot read the configs of EgoBench data {dataset_dir!r}: {error}") from error


def _data_file_list(dataset_dir: str, config: str) -> list[str]:

    files = datasets.load_dataset_builder(str(dataset_dir), config).config.data_files or {}
    return [str(path) for paths in files.values() for path in paths]


def _data_files(dataset_dir: str, config: str) -> str:
    try:
        return ", ".join(_data_file_list(dataset_dir, config))
    except Exception:  # the description is best effort; the load error itself is raised elsewhere
        return "?"


def _parquet_rows(dataset_dir: str, config: str) -> int | None:
    """Rows in a local config's Parquet files (from their footers), None when not local Parquet."""

    try:
        files = _data_file_list(dataset_dir, config)
        if not files or not all(path.endswith(".parquet") and os.path.isfile(path) for path in files):
            return None
        return sum(pq.ParquetFile(path).metadata.num_rows for path in files)
    except Exception:  # only used to explain a failed load
        return None


def load_table(dataset_dir: str, config: str, split: str | None = None):
    """``datasets.Dataset`` of one config; ``split=None`` takes the only split, or ``test`` among several."""

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating test split" bars for a few small tables are noise
    try:
        if Path(dataset_dir).is_dir():
            loaded = load_folder(dataset_dir, config, split=split)  # never a stale cache of a rebuilt folder
        else:
            loaded = datasets.load_dataset(str(dataset_dir), config, split=split)
    except Exception as error:
        if _parquet_rows(dataset_dir, config) == 0:  # `datasets` fails on a table without rows
            raise EvalDataError(
                f"{dataset_dir} config {config!r} [{_data_files(dataset_dir, config)}]: no rows "
                "(an empty config); rebuild it, or leave the task out of --tasks"
            ) from None
        raise EvalDataError(f"cannot load config {config!r} of {dataset_dir}: {error}") from error
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if len(names) == 1:
            return loaded[names[0]]
        if "test" in loaded:
            return loaded["test"]
        raise EvalDataError(f"config {config!r} of {dataset_dir} has splits {names}; pass --split")
    return loaded


def _type_kind(feature) -> str:
    """``int``/``float``/``string``/``bool``/``list of ...``: what a column holds, ignoring widths (int32/int64)."""

    if isinstance(feature, (datasets.List, datasets.LargeList, list)):
        inner = feature.feature if not isinstance(feature, list) else feature[0]
        return f"list of {_type_kind(inner)}"
    if isinstance(feature, datasets.Sequence):
        return f"list of {_type_kind(feature.feature)}"
    dtype = getattr(feature, "dtype", "")
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith("float"):
        return "float"
    if dtype in ("string", "large_string"):
        return "string"
    return dtype or type(feature).__name__


def _check_columns(table, required: tuple[str, ...], where: str, schema=None) -> None:
    """Every ``required`` column is present and, when ``schema`` (``datasets.Features``) is given, holds the
    schema's kind of value (a string ``answer_idx`` fails here, naming the column, not in the scorer)."""
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise EvalDataError(f"{where}: missing required column(s) {missing} (has {table.column_names})")
    for column in required:
        if schema is None or column not in schema or getattr(table.features[column], "dtype", None) == "null":
            continue  # an all-null column has no type to check
        expected, found = _type_kind(schema[column]), _type_kind(table.features[column])
        if found != expected:
            raise EvalDataError(
                f"{where}: field {column!r} holds {found} values, the EgoBench schema stores "
                f"{expected} (datasets_scripts/schema.py); rebuild it with the schema's features"
            )


def default_video_root(dataset_dir: str) -> str:
    """Where relative video paths point without ``--video-roots``: the folder's ``build_info.json``
    ``video_root`` (relative to the folder; the synthetic world writes ``".."``), else the folder."""
    build_info = Path(dataset_dir) / BUILD_INFO_NAME
    if build_info.is_file():
        root = json.loads(build_info.read_text(encoding="utf-8")).get("video_root")
        if root:
            return str((Path(dataset_dir) / root).resolve())
    return str(dataset_dir)


def video_root_map(entries: list[str]) -> dict[str, str]:
    """``["DIR", "egoschema=DIR2"]`` (:attr:`eval.config.EvalConfig.video_roots`) -> ``{"": "DIR", "egoschema":
    "DIR2"}``; an entry whose part before ``=`` names no task is a folder for every task (later entries win)."""
    roots: dict[str, str] = {}
    for entry in entries:
        task, separator, folder = entry.partition("=")
        if separator and task in TASKS:
            roots[task] = folder
        else:
            roots[""] = entry
    return roots


def resolve_video(video: str, task: str, fallback_root: str, video_roots: Mapping[str, str] | None) -> str:
    """Absolute video path: ``video`` itself if absolute, else under the task's root, the common root
    (key ``""``), or ``fallback_root`` (:func:`default_video_root`)."""
    if os.path.isabs(video):
        return video
    roots = video_roots or {}
    root = roots.get(task) or roots.get("") or fallback_root
    return str(Path(root) / video)


def _check_row(spec: TaskSpec, row: dict[str, Any], index: int, where: str) -> dict[str, Any]:
    def fail(field_name: str, problem: str):
        raise EvalDataError(
            f"{where}: row {index} (sample_id {row.get('sample_id')!r}): field {field_name!r}: {problem}"
        )

    if not row["sample_id"]:
        fail("sample_id", "empty")
    if row["task"] != spec.name:
        fail("task", f"is {row['task']!r} but the config is task {spec.name!r}")
    if not row["video"]:
        fail("video", "empty")
    try:
        meta = json.loads(row["meta"]) if row["meta"] else {}
    except json.JSONDecodeError as error:
        fail("meta", f"not valid JSON ({error})")
    if not isinstance(meta, dict):
        fail("meta", "must be a JSON object")
    options = list(row["options"] or [])
    answer_idx = row["answer_idx"]
    if spec.retrieval:
        if "video_index" not in meta:
            fail("meta", "EK-100 MIR rows need meta.video_index (their row of the relevance matrix)")
    elif not options:
        if not spec.allow_open:
            fail("options", f"empty, but task {spec.name!r} is multiple choice with {spec.option_counts} options")
        if not row["answer_text"]:
            fail("answer_text", "open-ended rows need a reference answer")
    else:
        if spec.option_counts and len(options) not in spec.option_counts:
            fail(
                "options",
                f"{len(options)} options, but task {spec.name!r} takes {' or '.join(map(str, spec.option_counts))}",
            )
        if len(set(options)) != len(options):
            fail("options", "duplicate option texts")
        if answer_idx is None:
            if not spec.allow_unlabeled:
                fail("answer_idx", f"missing, and task {spec.name!r} has no hidden-label rows")
        elif not 0 <= answer_idx < len(options):
            fail("answer_idx", f"{answer_idx} is outside the {len(options)} options")
    start, end = row["start_sec"], row["end_sec"]
    if start is not None and end is not None and not end > start:
        fail("end_sec", f"{end} is not after start_sec {start}")
    return {**row, "options": options, "meta": meta}


def _check_videos(paths: list[tuple[str, str]], where: str) -> None:
    missing = [(sample_id, path) for sample_id, path in paths if not os.path.isfile(path)]
    if missing:
        listed = "; ".join(f"{sample_id}: {path}" for sample_id, path in missing[:5])
        raise EvalDataError(
            f"{where}: {len(missing)} of {len(paths)} videos not found (first: {listed}); "
            "pass --video-roots DIR or --video-roots TASK=DIR where the source videos live"
        )


def _load_rows_table(spec: TaskSpec, dataset_dir: str, configs: list[str], split: str | None):
    """The task's rows: every present config of its first registered group, concatenated; and a description."""

    names = spec.configs.present_row_configs(configs)
    if not names:
        looked_for = " or ".join("+".join(group) for group in spec.configs.row_configs)
        raise EvalDataError(
            f"{dataset_dir}: task {spec.name!r} has none of its configs ({looked_for}); the folder has {configs}"
        )
    where = f"{dataset_dir} config {'+'.join(names)!r} [{', '.join(_data_files(dataset_dir, name) for name in names)}]"
    tables = []
    for name in names:
        table = load_table(dataset_dir, name, split)
        _check_columns(
            table,
            REQUIRED_COLUMNS,
            f"{dataset_dir} config {name!r} [{_data_files(dataset_dir, name)}]",
            EGOBENCH_FEATURES,
        )
        tables.append(table)
    if len(tables) == 1:
        return tables[0], where
    # Same columns and widths (int32/int64 may differ between configs written by other tools) to concatenate.
    return datasets.concatenate_datasets(
        [table.select_columns(list(REQUIRED_COLUMNS)).cast(EGOBENCH_FEATURES) for table in tables]
    ), where


def load_task(
    spec: TaskSpec,
    dataset_dir: str,
    *,
    split: str | None = None,
    limit: int | None = None,
    video_roots: Mapping[str, str] | None = None,
    check_videos: bool = True,
    configs: list[str] | None = None,
) -> TaskData:
    """Load, check and trim (``limit`` rows / videos) one task. Raises :class:`EvalDataError`."""
    configs = available_configs(dataset_dir) if configs is None else configs
    table, where = _load_rows_table(spec, dataset_dir, configs, split)
    if not len(table):
        raise EvalDataError(f"{where}: no rows (an empty config); rebuild it, or leave the task out of --tasks")
    fallback_root = default_video_root(dataset_dir)
    rows = []
    seen: dict[str, int] = {}
    digest = hashlib.sha256()
    for index, row in enumerate(table):
        checked = _check_row(spec, row, index, where)
        if checked["sample_id"] in seen:
            raise EvalDataError(
                f"{where}: row {index}: field 'sample_id': {checked['sample_id']!r} repeats row "
                f"{seen[checked['sample_id']]}"
            )
        seen[checked["sample_id"]] = index
        digest.update(_canonical_json(checked))
        checked["video_path"] = resolve_video(checked["video"], spec.name, fallback_root, video_roots)
        rows.append(checked)
    rows = rows[:limit] if limit else rows
    data = TaskData(spec=spec, rows=rows, source=where)

    if spec.labels_config and spec.classes_config and spec.labels_config in configs and spec.classes_config in configs:
        _load_class_tables(data, dataset_dir, split, limit, video_roots, fallback_root, digest)
    if spec.retrieval:
        _load_retrieval_tables(data, dataset_dir, split, digest)
    data.fingerprint = digest.hexdigest()
    if check_videos:
        paths = [(row["sample_id"], row["video_path"]) for row in data.rows]
        paths += [(row["video_id"], row["video_path"]) for row in data.class_videos]
        _check_videos(paths, where)
    return data


def _canonical_json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _load_class_tables(
    data: TaskData, dataset_dir: str, split, limit, video_roots, fallback_root: str, digest
) -> None:
    spec = data.spec
    where_classes = f"{dataset_dir} config {spec.classes_config!r}"
    classes = load_table(dataset_dir, spec.classes_config, split)
    _check_columns(classes, CLASS_COLUMNS, where_classes, SIDE_FEATURES["classes"])
    digest.update(_canonical_json(classes.to_list()))
    names: dict[int, str] = {}
    for index, row in enumerate(classes):
        if row["class_idx"] in names:
            raise EvalDataError(f"{where_classes}: row {index}: field 'class_idx': {row['class_idx']} repeats")
        names[int(row["class_idx"])] = row["name"]
    if sorted(names) != list(range(len(names))):
        raise EvalDataError(f"{where_classes}: field 'class_idx' must cover 0..{len(names) - 1} exactly")
    where_labels = f"{dataset_dir} config {spec.labels_config!r}"
    labels = load_table(dataset_dir, spec.labels_config, split)
    _check_columns(labels, LABEL_COLUMNS, where_labels, SIDE_FEATURES["labels"])
    digest.update(_canonical_json(labels.to_list()))
    videos = []
    for index, row in enumerate(labels):
        positives = list(row["positive_classes"] or [])
        bad = [value for value in positives if not 0 <= value < len(names)]
        if bad:
            raise EvalDataError(
                f"{where_labels}: row {index} (video_id {row['video_id']!r}): field 'positive_classes': "
                f"{bad} outside the {len(names)} classes"
            )
        videos.append(
            {
                "video_id": row["video_id"],
                "video": row["video"],
                "video_path": resolve_video(row["video"], spec.name, fallback_root, video_roots),
                "positive_classes": positives,
                "start_sec": row.get("start_sec"),
                "end_sec": row.get("end_sec"),
            }
        )
    data.class_names = [names[index] for index in range(len(names))]
    data.class_videos = videos[:limit] if limit else videos


def _load_retrieval_tables(data: TaskData, dataset_dir: str, split, digest) -> None:
    spec = data.spec
    where_sentences = f"{dataset_dir} config {spec.sentences_config!r}"
    sentences = load_table(dataset_dir, spec.sentences_config, split)
    _check_columns(sentences, SENTENCE_COLUMNS, where_sentences, SIDE_FEATURES["sentences"])
    digest.update(_canonical_json(sentences.to_list()))
    texts: dict[int, str] = {int(row["sentence_index"]): row["sentence"] for row in sentences}
    if sorted(texts) != list(range(len(texts))):
        raise EvalDataError(f"{where_sentences}: field 'sentence_index' must cover 0..{len(texts) - 1} exactly")
    where_relevance = f"{dataset_dir} config {spec.relevance_config!r}"
    relevance_table = load_table(dataset_dir, spec.relevance_config, split)
    _check_columns(relevance_table, RELEVANCE_COLUMNS, where_relevance, SIDE_FEATURES["relevance"])
    digest.update(_canonical_json(relevance_table.to_list()))
    row_of_video = {int(row["meta"]["video_index"]): position for position, row in enumerate(data.rows)}
    relevance = np.zeros((len(data.rows), len(texts)), dtype=np.float32)
    columns = relevance_table.with_format("numpy")[:]
    for video_index, sentence_index, value in zip(
        columns["video_index"], columns["sentence_index"], columns["relevance"]
    ):
        if not 0 <= sentence_index < len(texts):
            raise EvalDataError(
                f"{where_relevance}: field 'sentence_index': {sentence_index} outside {len(texts)} sentences"
            )
        position = row_of_video.get(int(video_index))
        if position is not None:
            relevance[position, sentence_index] = value
    data.sentences = [texts[index] for index in range(len(texts))]
    data.relevance = relevance

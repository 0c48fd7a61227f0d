"""Leakage report: training videos (EgoIT, EgoClip, Ego-ExoClip) that also occur in EgoBench sources.

Ids are compared inside a namespace (``ego4d_video``, ``ego4d_clip``, ``epic``, ``egoexo4d_take``, ...)
so that unrelated numeric ids of different datasets never match. Ego4D clip uids (EgoTimeQA, QAEgo4D)
are also mapped to their video uids when Ego4D's ``ego4d.json`` metadata is given, which catches a
training clip cut from the same long video as a benchmark question (EgoSchema, EgoMCQ, EgoPlan).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from datasets_scripts.egobench.tasks import EGOBENCH_TASKS
from datasets_scripts.schema import loads_meta
from datasets_scripts.source_io import stream_json

# EgoIT/EgoClip ``source`` -> namespace of the id in its ``video`` path stem.
TRAIN_NAMESPACES = {
    "egotimeqa": "ego4d_clip",
    "egoclip": "ego4d_video",
    "egtea": "egtea",
    "ssv2": "ssv2",
    "openeqa": "openeqa",
    "egoexolearn": "egoexolearn",
    "synthetic": "synthetic",
}
# EgoBench ``task`` -> namespace of ``meta["video_id"]``: each task's ``leakage_namespace`` in
# datasets_scripts/egobench/tasks.py (a task without a declaration is an error, never a namespace of its own).
MAX_LISTED = 200  # ids listed per overlapping pair


def train_ids(rows: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """``{namespace: ids}`` of one training table: EgoIT/EgoClip rows or Ego-ExoClip clip rows."""
    ids: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.get("take_uid"):
            ids["egoexo4d_take"].add(row["take_uid"])
        elif row.get("source") and row.get("video"):
            namespace = TRAIN_NAMESPACES.get(row["source"], row["source"])
            stem = _path_name(row["video"])
            ids[namespace].add(stem[: -len("-0.mp4")] if stem.endswith("-0.mp4") else _name_stem(stem))
    return dict(ids)


def _path_name(path: str) -> str:
    """``Path(path).name`` without pathlib (which interns every component of every path it parses for good: memory
    that grows with the rows of a 4M-row table)."""
    parts = [part for part in path.split("/") if part and part != "."]
    return parts[-1] if parts else ""


def _name_stem(name: str) -> str:
    """``Path(name).stem`` of one path component (the rule of ``PurePath.suffix``)."""
    dot = name.rfind(".")
    return name[:dot] if 0 < dot < len(name) - 1 else name


def bench_namespace(task: str | None, meta: Mapping[str, Any]) -> str:
    """The namespace of an EgoBench row's ``meta["video_id"]``, from its task's declaration; ``ValueError`` for a
    task that is not declared (its ids would otherwise land in a namespace no training source uses)."""
    declaration = EGOBENCH_TASKS.get(task or "")
    if declaration is None:
        raise ValueError(
            f"leakage: EgoBench task {task!r} is not declared in datasets_scripts/egobench/tasks.py, so the "
            f"namespace of its video ids is unknown (declared tasks: {', '.join(EGOBENCH_TASKS)})"
        )
    return declaration.namespace(meta)


def bench_ids(rows: Iterable[Mapping[str, Any]]) -> dict[str, set[str]]:
    """``{namespace: ids}`` of one EgoBench table (from ``meta``)."""
    ids: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        meta = loads_meta(row.get("meta"))
        if "video_id" in meta:
            ids[bench_namespace(row.get("task"), meta)].add(str(meta["video_id"]))
        if meta.get("ego4d_video_uid"):  # EgoSchema's uid_to_ego4d.json
            ids["ego4d_video"].add(meta["ego4d_video_uid"])
    return dict(ids)


def read_folder_tables(folder: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """``{config: rows}`` of a Hub-ready export folder (``data/<config>/*.parquet``), only the id columns."""
    return {config: list(rows) for config, rows in iter_folder_tables(folder)}


def iter_folder_tables(folder: str | os.PathLike) -> Iterator[tuple[str, Iterator[dict[str, Any]]]]:
    """``(config, rows)`` of a Hub-ready export folder, the rows (only the id columns) read a batch at a time: a
    training table of millions of rows is never held whole. Consume each config's rows before the next."""

    def rows(config_dir: Path) -> Iterator[dict[str, Any]]:
        for parquet in sorted(config_dir.glob("*.parquet")):
            names = pq.read_schema(parquet).names
            columns = [name for name in ("source", "video", "task", "meta", "take_uid") if name in names]
            if columns:
                for batch in pq.ParquetFile(parquet).iter_batches(batch_size=10_000, columns=columns):
                    yield from batch.to_pylist()

    for config_dir in sorted(path for path in (Path(folder) / "data").iterdir() if path.is_dir()):
        yield config_dir.name, rows(config_dir)


def load_clip_to_video(ego4d_json: str | os.PathLike) -> dict[str, str]:
    """``{clip_uid: video_uid}`` from Ego4D's ``ego4d.json`` (its ``clips`` list), read as a stream (one clip at a
    time: the file is hundreds of MB); read whole, as before, where the stream cannot stand for that (see
    :func:`~datasets_scripts.source_io.stream_json`) or finds no clip."""
    if Path(ego4d_json).is_file():
        try:
            mapping = {
                clip["clip_uid"]: clip["video_uid"]
                for clip in stream_json(Path(ego4d_json), "clips.item")
                if clip.get("clip_uid") and clip.get("video_uid")
            }
            if mapping:
                return mapping
        except Exception:  # JsonStreamDiffers, or a malformed clip: reading the file whole says what to report
            pass
    with open(ego4d_json, encoding="utf-8") as handle:
        payload = json.load(handle)
    return {
        clip["clip_uid"]: clip["video_uid"]
        for clip in payload.get("clips", [])
        if clip.get("clip_uid") and clip.get("video_uid")
    }


def _with_videos(ids: dict[str, set[str]], clip_to_video: Mapping[str, str]) -> dict[str, set[str]]:
    if not clip_to_video or "ego4d_clip" not in ids:
        return ids
    mapped = {clip_to_video[clip] for clip in ids["ego4d_clip"] if clip in clip_to_video}
    return {**ids, "ego4d_video": ids.get("ego4d_video", set()) | mapped}


def leakage_report(
    train: Mapping[str, Mapping[str, set[str]]],
    bench: Mapping[str, Mapping[str, set[str]]],
    clip_to_video: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Overlaps between every training table and every benchmark table, namespace by namespace.

    Args:
        train: ``{"<folder>/<config>": {namespace: ids}}``.
        bench: ``{"<config>": {namespace: ids}}``.
        clip_to_video: Ego4D clip uid -> video uid (adds ``ego4d_video`` ids for clip-keyed tables).
    """
    clip_to_video = clip_to_video or {}
    pairs = []
    for train_name, train_table in sorted(train.items()):
        train_table = _with_videos(dict(train_table), clip_to_video)
        for bench_name, bench_table in sorted(bench.items()):
            bench_table = _with_videos(dict(bench_table), clip_to_video)
            for namespace in sorted(set(train_table) & set(bench_table)):
                shared = sorted(train_table[namespace] & bench_table[namespace])
                if shared:
                    pairs.append(
                        {
                            "train": train_name,
                            "bench": bench_name,
                            "namespace": namespace,
                            "overlap": len(shared),
                            "bench_ids": len(bench_table[namespace]),
                            "ids": shared[:MAX_LISTED],
                        }
                    )
    return {
        "pairs": pairs,
        "clip_to_video_map": len(clip_to_video),
        "train_tables": {
            name: {ns: len(ids) for ns, ids in sorted(table.items())} for name, table in sorted(train.items())
        },
        "bench_tables": {
            name: {ns: len(ids) for ns, ids in sorted(table.items())} for name, table in sorted(bench.items())
        },
    }


def report_markdown(report: Mapping[str, Any]) -> str:
    """A short Markdown table of the overlapping pairs (for the dataset card)."""
    if not report["pairs"]:
        return (
            "No training video id occurs in a benchmark table (namespaces compared: "
            + ", ".join(sorted({ns for table in report["train_tables"].values() for ns in table}))
            + ")."
        )
    lines = [
        "| training table | benchmark table | id namespace | shared ids | benchmark ids |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['train']} | {p['bench']} | {p['namespace']} | {p['overlap']} | {p['bench_ids']} |"
        for p in report["pairs"]
    ]
    return "\n".join(lines) + "\n\nThe shared ids are listed in `leakage_report.json`."


def folder_train_ids(folder: str | os.PathLike) -> dict[str, dict[str, set[str]]]:
    """``{"<folder name>/<config>": {namespace: ids}}`` for every config of a training export folder."""
    name = Path(folder).name
    return {f"{name}/{config}": train_ids(rows) for config, rows in iter_folder_tables(folder)}

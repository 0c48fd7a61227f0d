"""Synchronized multi-view clip reading for training, and an optional local pack of pre-cut clips.

Ego-Exo4D's ``frame_aligned_videos`` show the same instant at frame *i* in every view, so one set of
timestamps serves all views. :func:`read_synced_clip` computes the T segment midpoints of
[start, end] once (:func:`modeling_exo2ego.sample_timestamps`) and decodes exactly those instants
from every view with :func:`modeling_exo2ego.read_video_frames`, which seeks to the keyframe before
the window instead of decoding the take from its start.

:func:`pack_clips` pre-cuts clips of all views at the same seconds into local tar shards
(WebDataset layout: ``<clip_id>.json``, ``<clip_id>.<view>.<frame>.jpg``) for fast sequential reads.
Packs hold licensed video content: they stay on the user's disk and are never uploaded
(:func:`datasets_scripts.hub_export.push_folder_to_hub` refuses ``.tar``/``.jpg`` files).
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from exo2ego_base.provenance import atomic_path, write_json_atomic
from modeling_exo2ego import read_video_frames, sample_timestamps

PACK_INDEX = "pack_index.json"


@dataclass
class SyncedClip:
    """T frames per view, all at ``timestamps`` (seconds, (T,) float64).

    ``ego``: uint8 (T, H, W, 3) or None (exo-only reads); ``exo``: one uint8 (T, H', W', 3) per exo
    view, in the order the paths were given; ``frame_times``: per view (ego first when present) the
    presentation time of each returned frame, (T,).
    """

    timestamps: np.ndarray
    ego: np.ndarray | None
    exo: list[np.ndarray]
    frame_times: list[np.ndarray] = field(default_factory=list)
    clip_id: str | None = None


def _resolve(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    return os.fspath(Path(root) / path) if root is not None and not os.path.isabs(path) else os.fspath(path)


def read_synced_clip(
    ego_path: str | os.PathLike | None,
    exo_paths: Sequence[str | os.PathLike],
    start_sec: float,
    end_sec: float,
    num_frames: int,
    root: str | os.PathLike | None = None,
    seek_gap_sec: float = 2.0,
) -> SyncedClip:
    """Read ``num_frames`` frames of every view at identical timestamps inside [start_sec, end_sec].

    Args:
        ego_path: the ego video (None for exo-only reads, as in stage 1).
        exo_paths: zero or more exo videos of the same take.
        start_sec, end_sec: the clip window (e.g. an Ego-ExoClip row's ``start_sec``/``end_sec``).
        num_frames: T; the timestamps are the midpoints of T equal segments of the window.
        root: prefix for relative paths (the egoexo download root).

    Raises FileNotFoundError (names the path) for a missing file and ValueError for an unreadable one.
    """
    if ego_path is None and not exo_paths:
        raise ValueError("read_synced_clip needs an ego path or at least one exo path")
    timestamps = sample_timestamps(float(start_sec), float(end_sec), num_frames)
    views = ([] if ego_path is None else [ego_path]) + list(exo_paths)
    clips = [
        read_video_frames(_resolve(path, root), num_frames, timestamps=timestamps, seek_gap_sec=seek_gap_sec)
        for path in views
    ]
    ego = None if ego_path is None else clips[0].frames
    exo = [clip.frames for clip in clips[0 if ego_path is None else 1 :]]
    return SyncedClip(timestamps, ego, exo, [clip.frame_times for clip in clips])


def read_clip_row(
    row: Mapping[str, Any], num_frames: int, root: str | os.PathLike | None = None, views: str = "ego+exo"
) -> SyncedClip:
    """:func:`read_synced_clip` for an Ego-ExoClip ``clips`` row; ``views``: "ego+exo", "ego" or "exo"."""
    if views not in ("ego+exo", "ego", "exo"):
        raise ValueError(f"views must be 'ego+exo', 'ego' or 'exo', got {views!r}")
    ego = row["ego_video"] if views != "exo" else None
    exo = list(row["exo_videos"]) if views != "ego" else []
    clip = read_synced_clip(ego, exo, row["start_sec"], row["end_sec"], num_frames, root=root)
    clip.clip_id = row.get("clip_id")
    return clip


# --------------------------------------------------------------------------------------------- pack
@dataclass
class PackConfig:
    """How clips are pre-cut: T frames per view, optional resize (short side), JPEG quality, clips per shard."""

    num_frames: int = 8
    short_side: int | None = None
    jpeg_quality: int = 90
    clips_per_shard: int = 500
    views: str = "ego+exo"


def _jpeg(frame: np.ndarray, short_side: int | None, quality: int) -> bytes:
    image = Image.fromarray(frame)
    if short_side and min(image.size) != short_side:
        scale = short_side / min(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mtime = 0  # deterministic shards
    tar.addfile(info, io.BytesIO(payload))


def _write_shard(path: str, rows: list[dict[str, Any]], root: str, config: PackConfig) -> int:
    with atomic_path(path) as partial, tarfile.open(partial, "w") as tar:
        for row in rows:
            clip = read_clip_row(row, config.num_frames, root=root, views=config.views)
            names = ([row["ego_cam"]] if clip.ego is not None else []) + (list(row["exo_cams"]) if clip.exo else [])
            frames = ([clip.ego] if clip.ego is not None else []) + clip.exo
            meta = {
                "clip_id": row["clip_id"],
                "take_uid": row["take_uid"],
                "text": row.get("text"),
                "start_sec": row["start_sec"],
                "end_sec": row["end_sec"],
                "timestamps": clip.timestamps.tolist(),
                "views": names,
                "ego_view": row["ego_cam"] if clip.ego is not None else None,
            }
            _add(tar, f"{row['clip_id']}.json", json.dumps(meta, sort_keys=True).encode())
            for name, view_frames in zip(names, frames):
                for index, frame in enumerate(view_frames):
                    _add(
                        tar,
                        f"{row['clip_id']}.{name}.{index:03d}.jpg",
                        _jpeg(frame, config.short_side, config.jpeg_quality),
                    )
    return len(rows)


def pack_clips(
    rows: Sequence[Mapping[str, Any]],
    egoexo_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: PackConfig | None = None,
    num_proc: int = 1,
) -> dict[str, Any]:
    """Pre-cut every clip (all views at the same seconds) into ``out_dir/pack-NNNNN.tar`` shards.

    Resumable: shards are fixed slices of ``rows`` and a finished shard (renamed from its temp file)
    is not rewritten, so re-running after an interruption only writes the missing ones. Writes
    ``pack_index.json`` (clip_id -> shard, config) last. Returns that index.
    """
    config = config or PackConfig()
    rows = [dict(row) for row in rows]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    num_shards = max(1, math.ceil(len(rows) / config.clips_per_shard))
    jobs = []
    for shard in range(num_shards):
        path = out_dir / f"pack-{shard:05d}.tar"
        shard_rows = rows[shard * config.clips_per_shard : (shard + 1) * config.clips_per_shard]
        if not path.is_file():
            jobs.append((str(path), shard_rows))
    progress = tqdm(total=num_shards, initial=num_shards - len(jobs), desc="packing clips", unit="shard")
    if num_proc > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(num_proc) as pool:
            futures = [
                pool.submit(_write_shard, path, shard_rows, os.fspath(egoexo_root), config)
                for path, shard_rows in jobs
            ]
            for future in futures:
                future.result()
                progress.update()
    else:
        for path, shard_rows in jobs:
            _write_shard(path, shard_rows, os.fspath(egoexo_root), config)
            progress.update()
    progress.close()
    index = {
        "config": config.__dict__,
        "shards": [f"pack-{s:05d}.tar" for s in range(num_shards)],
        "clips": {row["clip_id"]: f"pack-{i // config.clips_per_shard:05d}.tar" for i, row in enumerate(rows)},
    }
    write_json_atomic(out_dir / PACK_INDEX, index)
    return index


def iter_packed_clips(pack_dir: str | os.PathLike) -> Iterator[SyncedClip]:
    """Read a pack back in order: one :class:`SyncedClip` per clip (decoded JPEG frames)."""
    pack_dir = Path(pack_dir)
    index_path = pack_dir / PACK_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path} not found: the pack is missing or was interrupted (run pack_clips again)"
        )
    index = json.loads(index_path.read_text(encoding="utf-8"))
    for shard in index["shards"]:
        with tarfile.open(pack_dir / shard) as tar:
            members: dict[str, dict[str, bytes]] = {}
            order: list[str] = []
            for member in tar:
                key, _, suffix = member.name.partition(".")
                if key not in members:
                    members[key] = {}
                    order.append(key)
                members[key][suffix] = tar.extractfile(member).read()
            for key in order:
                yield _decode_sample(key, members[key], Image)


def _decode_sample(key: str, files: dict[str, bytes], image_module) -> SyncedClip:
    meta = json.loads(files["json"])
    views = []
    for view in meta["views"]:
        frame_names = sorted(name for name in files if name.startswith(f"{view}.") and name.endswith(".jpg"))
        views.append(
            np.stack([np.asarray(image_module.open(io.BytesIO(files[name])).convert("RGB")) for name in frame_names])
        )
    timestamps = np.asarray(meta["timestamps"], dtype=np.float64)
    has_ego = meta["ego_view"] is not None
    return SyncedClip(timestamps, views[0] if has_ego else None, views[1:] if has_ego else views, [], key)

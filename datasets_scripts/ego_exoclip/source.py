"""Reading an ``egoexo`` download: takes.json, splits.json, atomic descriptions, camera resolution.

Field names and quirks follow the released files (``shared/reference/research-data-formats.md`` §1):
booleans may be strings ("0"/"1", "True"/"False"), split names may differ in case, the ego camera id
is not always ``aria01``, exo ids may be ``camNN`` or ``gpNN``, and ``frame_aligned_videos`` holds the
pseudo-cameras ``collage`` and ``best_exo``. Malformed entries raise :class:`RowError` naming the
file, the entry and the field.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..source_io import (
    BadRows,
    JsonStreamDiffers,
    PathOutsideRootError,
    RowError,
    SourceFileError,
    inside_root,
    read_json,
    stream_json,
)

PSEUDO_CAMERAS = ("collage", "best_exo")
EGO_STREAM = "rgb"
EXO_STREAM = "0"
DOWNSCALED_DIR = "frame_aligned_videos/downscaled/448"


def as_bool(value: Any) -> bool:
    """Ego-Exo4D booleans: real bools, 0/1, and the strings "true"/"false"/"1"/"0" (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise ValueError(f"not a boolean: {value!r}")


@dataclass(frozen=True)
class Description:
    """One atomic description as released (``desc_index`` = its position in the annotation's list)."""

    take_uid: str
    annotation_uid: str
    desc_index: int
    timestamp: float
    text: str
    subject: str | None
    ego_visible: bool | None
    unsure: bool | None
    best_exo_cam: str | None


@dataclass(frozen=True)
class Annotation:
    take_uid: str
    annotation_uid: str
    annotator_id: str | None
    rejected: bool
    descriptions: tuple[Description, ...]


@dataclass(frozen=True)
class TakeCameras:
    """Resolved cameras of a take: ego (Aria rgb stream) and exo (stream "0") relative video paths."""

    ego_cam: str
    exo_cams: tuple[str, ...]
    ego_video: str  # relative to the download root, full resolution
    exo_videos: tuple[str, ...]


def load_json_file(root: Path, relative: str) -> Any:
    path = Path(root) / relative
    if not path.is_file():
        raise SourceFileError(
            f"required Ego-Exo4D file not found: {path} (download it with "
            f"`egoexo -o {root} --parts metadata annotations`)"
        )
    return read_json(path)


def load_takes(root: Path) -> dict[str, dict[str, Any]]:
    """``takes.json`` indexed by ``take_uid`` (entries are checked lazily, when a take is used); a ``take_uid``
    written twice is an error naming both rows (one take's narrations must never meet another's videos)."""
    path = Path(root) / "takes.json"
    takes = load_json_file(root, "takes.json")
    if not isinstance(takes, list):
        raise RowError(path, "(top level)", "(json)", f"expected a list of takes, got {type(takes).__name__}")
    indexed, positions = {}, {}
    for position, take in enumerate(takes):
        if not isinstance(take, Mapping) or not isinstance(take.get("take_uid"), str):
            raise RowError(path, position, "take_uid", "missing, or the entry is not an object")
        uid = take["take_uid"]
        if uid in indexed:
            raise RowError(
                path,
                f"{position} ({take.get('take_name')})",
                "take_uid",
                f"{uid!r} is also the take_uid of row {positions[uid]} ({indexed[uid].get('take_name')}); "
                "each take must be listed once",
            )
        indexed[uid], positions[uid] = take, position
    return indexed


def load_splits(root: Path) -> dict[str, str]:
    """``take_uid -> "train"|"val"|"test"`` from ``annotations/splits.json`` (values lower-cased)."""
    path = Path(root) / "annotations" / "splits.json"
    splits = load_json_file(root, "annotations/splits.json")
    mapping = splits.get("take_uid_to_split") if isinstance(splits, Mapping) else None
    if not isinstance(mapping, Mapping):
        raise RowError(path, "(top level)", "take_uid_to_split", "missing or not an object")
    return {uid: str(split).lower() for uid, split in mapping.items()}


def _optional_bool(record: Mapping, name: str, file, row) -> bool | None:
    if record.get(name) is None:
        return None
    try:
        return as_bool(record[name])
    except ValueError as error:
        raise RowError(file, row, name, str(error)) from error


def parse_annotations(
    path: Path, payload: Any, bad_rows: BadRows | None = None
) -> tuple[dict[str, list[Annotation]], Counter]:
    """``take_uid -> [Annotation]`` from an ``atomic_descriptions_*.json`` payload, and the skip counts.

    A malformed entry (an annotation without ``annotation_uid`` or ``descriptions``, a description
    without a numeric ``timestamp`` or a ``text``) raises :class:`RowError`, or with
    ``bad_rows.skip`` is left out and counted: ``{"annotations": n, "narrations": n}``. A skipped
    description keeps the positions of the others (``desc_index`` is the released list position).
    """
    annotations = payload.get("annotations") if isinstance(payload, Mapping) else None
    if not isinstance(annotations, Mapping):
        raise RowError(path, "(top level)", "annotations", "missing or not an object of take_uid -> annotations")
    return _parse_takes(path, annotations.items(), bad_rows)


class _DuplicateTake(Exception):
    """A take_uid listed twice in a stream of (take_uid, annotations) pairs (``json.load`` keeps the last)."""


def _parse_takes(
    path: Path, takes: Iterable[tuple[str, Any]], bad_rows: BadRows | None
) -> tuple[dict[str, list[Annotation]], Counter]:
    skipped: Counter = Counter()

    def skip_or_raise(error: RowError, kind: str) -> None:
        if bad_rows is None or not bad_rows.skip:
            raise error
        with bad_rows.guard("atomic_descriptions"):
            raise error
        skipped[kind] += 1

    parsed: dict[str, list[Annotation]] = {}
    for take_uid, entries in takes:
        if take_uid in parsed:
            raise _DuplicateTake(take_uid)
        parsed[take_uid] = []
        if not isinstance(entries, list):
            skip_or_raise(
                RowError(path, f"take {take_uid}", "annotations", "expected a list of annotations"), "annotations"
            )
            continue
        for number, entry in enumerate(entries):
            row = f"take {take_uid} annotation {number}"
            try:
                annotation_uid, rejected, items = _annotation_header(path, row, entry)
            except RowError as error:
                skip_or_raise(error, "annotations")
                continue
            descriptions = []
            for index, item in enumerate(items):
                try:
                    descriptions.append(
                        _description(path, f"{row} description {index}", take_uid, annotation_uid, index, item)
                    )
                except RowError as error:
                    skip_or_raise(error, "narrations")
            annotator = entry.get("annotator_id")
            parsed[take_uid].append(
                Annotation(
                    take_uid,
                    annotation_uid,
                    None if annotator is None else str(annotator),
                    rejected,
                    tuple(descriptions),
                )
            )
    return parsed, skipped


def _annotation_header(path: Path, row: str, entry: Any) -> tuple[str, bool, list]:
    if not isinstance(entry, Mapping):
        raise RowError(path, row, "(annotation)", "expected an object")
    annotation_uid = entry.get("annotation_uid")
    if not isinstance(annotation_uid, str) or not annotation_uid:
        raise RowError(path, row, "annotation_uid", "missing or empty")
    descriptions = entry.get("descriptions")
    if not isinstance(descriptions, list):
        raise RowError(path, row, "descriptions", "missing or not a list")
    return annotation_uid, _optional_bool(entry, "rejected", path, row) or False, descriptions


def _description(path: Path, row: str, take_uid: str, annotation_uid: str, index: int, item: Any) -> Description:
    if not isinstance(item, Mapping):
        raise RowError(path, row, "(description)", "expected an object")
    timestamp = item.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, (int, float)) or not math.isfinite(timestamp):
        raise RowError(path, row, "timestamp", f"expected seconds as a number, got {timestamp!r}")
    text = item.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RowError(path, row, "text", "missing or empty")
    best_exo = item.get("best_exo")
    return Description(
        take_uid=take_uid,
        annotation_uid=annotation_uid,
        desc_index=index,
        timestamp=float(timestamp),
        text=text,
        subject=item.get("narration_subject", item.get("subject")),
        ego_visible=_optional_bool(item, "ego_visible", path, row),
        unsure=_optional_bool(item, "unsure", path, row),
        best_exo_cam=best_exo.get("cam_id") if isinstance(best_exo, Mapping) else None,
    )


def load_annotations(
    root: Path, split: str, bad_rows: BadRows | None = None
) -> tuple[dict[str, list[Annotation]], Counter]:
    """Parse ``annotations/atomic_descriptions_<split>.json`` (see :func:`parse_annotations`).

    The file is read as a stream, one take's annotations at a time (:func:`~datasets_scripts.source_io.stream_json`),
    so memory holds the parsed annotations, not the file's JSON as well. Where the stream cannot stand for reading
    the file whole (bytes yajl reads otherwise, no ``annotations`` object, a take listed twice, or a bad row that
    is an error: a syntax error later in the file must be reported first), the file is read whole and parsed as
    before, after the bad-row counts of the streamed attempt are rolled back.
    """
    relative = f"annotations/atomic_descriptions_{split}.json"
    path = Path(root) / relative
    if path.is_file():
        counts = Counter(bad_rows.counts) if bad_rows is not None else None
        examples = list(bad_rows.examples) if bad_rows is not None else None
        try:
            parsed, skipped = _parse_takes(path, stream_json(path, "annotations", pairs=True), bad_rows)
            if parsed:
                return parsed, skipped
        except (JsonStreamDiffers, RowError, _DuplicateTake):
            pass
        if bad_rows is not None:
            bad_rows.counts.clear()
            bad_rows.counts.update(counts)
            bad_rows.examples[:] = examples
    return parse_annotations(path, load_json_file(root, relative), bad_rows)


def resolve_cameras(take: Mapping[str, Any], takes_file: Path) -> TakeCameras | str:
    """The ego and exo cameras of a take, or the drop reason ``"no_ego_camera"``/``"no_exo_camera"``.

    Ego: the ``capture.cameras`` entries with ``is_ego`` true (bool or string) that are keys of
    ``frame_aligned_videos`` and have an ``rgb`` stream; with several, the first whose id contains
    "aria". Without ``capture.cameras``, keys containing "aria". Exo: every other key of
    ``frame_aligned_videos`` except the pseudo-cameras and ego devices, with stream "0", sorted by id.
    """
    row = take.get("take_name", take.get("take_uid"))
    videos = take.get("frame_aligned_videos")
    if not isinstance(videos, Mapping):
        raise RowError(takes_file, row, "frame_aligned_videos", "missing or not an object")
    root_dir = take.get("root_dir") or f"takes/{take.get('take_name')}"
    cameras = (take.get("capture") or {}).get("cameras")
    if isinstance(cameras, list) and cameras:
        ego_devices = []
        for number, camera in enumerate(cameras):
            if not isinstance(camera, Mapping) or "cam_id" not in camera:
                raise RowError(takes_file, row, f"capture.cameras.{number}.cam_id", "missing")
            try:
                if as_bool(camera.get("is_ego", False)):
                    ego_devices.append(str(camera["cam_id"]))
            except ValueError as error:
                raise RowError(takes_file, row, f"capture.cameras.{number}.is_ego", str(error)) from error
    else:
        ego_devices = [cam for cam in videos if "aria" in cam.lower()]
    candidates = [cam for cam in ego_devices if cam in videos and _relative_path(videos[cam], EGO_STREAM)]
    if not candidates:
        return "no_ego_camera"
    ego_cam = next((cam for cam in candidates if "aria" in cam.lower()), candidates[0])
    exo_cams = sorted(
        cam
        for cam in videos
        if cam not in PSEUDO_CAMERAS and cam not in ego_devices and _relative_path(videos[cam], EXO_STREAM)
    )
    if not exo_cams:
        return "no_exo_camera"
    paths = {
        cam: f"{root_dir}/{_relative_path(videos[cam], EGO_STREAM if cam == ego_cam else EXO_STREAM)}"
        for cam in (ego_cam, *exo_cams)
    }
    for cam, path in paths.items():
        try:
            inside_root(path)
        except PathOutsideRootError as error:
            raise RowError(
                takes_file, row, f"root_dir / frame_aligned_videos.{cam}.relative_path", str(error)
            ) from None
    return TakeCameras(ego_cam, tuple(exo_cams), paths[ego_cam], tuple(paths[cam] for cam in exo_cams))


def _relative_path(streams: Any, stream: str) -> str | None:
    entry = streams.get(stream) if isinstance(streams, Mapping) else None
    path = entry.get("relative_path") if isinstance(entry, Mapping) else None
    return path if isinstance(path, str) and path else None


def variant_path(path: str, variant: str) -> str:
    """Map a full-resolution ``takes/<take>/frame_aligned_videos/<file>`` path to ``variant``
    ("full" keeps it; "448" gives ``.../frame_aligned_videos/downscaled/448/<file>``)."""
    if variant == "full":
        return path
    if variant != "448":
        raise ValueError(f"unknown video variant {variant!r} (full or 448)")
    folder, _, name = path.rpartition("/")
    if not folder.endswith("frame_aligned_videos"):
        raise ValueError(f"{path}: not a frame_aligned_videos path, cannot map it to the 448 variant")
    return f"{folder}/downscaled/448/{name}"


def take_duration(take: Mapping[str, Any], takes_file: Path) -> float:
    duration = take.get("duration_sec")
    if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
        raise RowError(
            takes_file,
            take.get("take_name", take.get("take_uid")),
            "duration_sec",
            f"expected a positive number of seconds, got {duration!r}",
        )
    return float(duration)

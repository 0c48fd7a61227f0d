"""From an ``egoexo`` download to Ego-ExoClip rows: take selection, drops by reason, eq. 1, alpha.

:func:`plan_ego_exoclip` does all the work that decides the rows (JSON only, plus optional video
checks); the ``datasets`` builder (:mod:`.builder`) then emits them.

Drop reasons, counted in ``build_info.json`` (takes, annotations and narrations separately):

- takes: ``no_uid_mapping`` (annotated uid absent from takes.json), ``not_in_splits``, ``not_train``,
  ``no_accepted_annotation``, ``no_ego_camera``, ``no_exo_camera``, ``missing_video`` and
  ``unreadable_video`` (only with ``skip_bad``; otherwise an error), ``no_clip_inside_video`` (every clip
  dropped as ``window_outside_video``);
- annotations: ``rejected``, ``malformed`` (``skip_bad``);
- narrations: every narration of a dropped take or annotation under the same reason, plus
  ``duplicate_description`` (same text and timestamp in one sequence), ``timestamp_out_of_range``
  (outside [0, duration_sec]), ``window_outside_video`` (the clip ends after the end of one of its videos,
  as read from the containers when the videos are checked) and ``malformed`` (``skip_bad``).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..source_io import BadRows, RowError, SourceFileError, read_json, stream_json
from . import source
from .clips import DEFAULT_MIN_CLIP_SEC, PAPER_ALPHA_SEC, clip_bounds, estimate_alpha

SEQUENCE_MODES = ("take", "annotation")
VARIANTS = ("full", "448")


@dataclass
class EgoExoClipOptions:
    """Builder options (CLI flags of ``exo2ego data ego-exoclip``)."""

    egoexo_root: str
    alpha: float | str = PAPER_ALPHA_SEC  # seconds, or "auto" = recomputed from the data
    sequence: str = "take"  # "take": both annotators merged per take; "annotation": one per annotator
    variant: str = "full"  # video paths: "full" or the "448" downscaled copies
    annotations_only: bool = False  # text left null (text_sha1 kept), videos not needed
    check_videos: bool = True  # local builds: every kept video must exist and decode
    skip_bad: bool = False  # count and skip malformed entries and bad videos instead of failing
    min_clip_sec: float = DEFAULT_MIN_CLIP_SEC
    num_proc: int = 1

    def __post_init__(self):
        if self.sequence not in SEQUENCE_MODES:
            raise ValueError(f"sequence must be one of {SEQUENCE_MODES}, got {self.sequence!r}")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.alpha != "auto":
            self.alpha = float(self.alpha)
            if not self.alpha > 0:
                raise ValueError(f"alpha must be positive seconds or 'auto', got {self.alpha}")


@dataclass
class Drops:
    takes: Counter = field(default_factory=Counter)
    annotations: Counter = field(default_factory=Counter)
    narrations: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            name: {reason: n for reason, n in sorted(getattr(self, name).items()) if n}
            for name in ("takes", "annotations", "narrations")
        }


@dataclass
class KeptTake:
    take: Mapping[str, Any]
    cameras: source.TakeCameras
    duration: float
    annotations: list[source.Annotation]
    # sequence mode -> list of sequences (each sorted, de-duplicated)
    sequences: dict[str, list[list[source.Description]]]


@dataclass
class BuildPlan:
    clips: list[dict[str, Any]]
    takes: list[dict[str, Any]]
    drops: Drops
    alpha: dict[str, Any]
    counts: dict[str, Any]
    bad_rows: dict[str, Any]
    narration_words: list[int]  # for the statistics (text is not always kept in the rows)


def text_sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _sequences(
    annotations: Sequence[source.Annotation], duration: float, mode: str, drops: Drops | None
) -> list[list[source.Description]]:
    """Sorted, de-duplicated narration sequences of one take in ``mode``; counts drops if given."""
    groups = [list(annotations)] if mode == "take" else [[annotation] for annotation in annotations]
    sequences = []
    for group in groups:
        items = [(d.timestamp, position, d.desc_index, d) for position, a in enumerate(group) for d in a.descriptions]
        items.sort(key=lambda item: item[:3])
        seen, sequence = set(), []
        for timestamp, _, _, description in items:
            if not 0.0 <= timestamp <= duration:
                if drops is not None:
                    drops.narrations["timestamp_out_of_range"] += 1
                continue
            if (description.text, timestamp) in seen:
                if drops is not None:
                    drops.narrations["duplicate_description"] += 1
                continue
            seen.add((description.text, timestamp))
            sequence.append(description)
        if sequence:
            sequences.append(sequence)
    return sequences


@dataclass(frozen=True)
class TakeVideos:
    """What probing the videos of one take found."""

    problem: tuple[str, str] | None = None  # (reason, path) of the first bad video
    end_sec: float | None = None  # clips must end by then: the shortest video's end plus one frame; None: unknown


def _container_end(container, stream) -> float | None:
    """The video's duration plus one frame period (seconds), from the stream's index or the container's header."""
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / 1_000_000  # av.time_base: microseconds
    else:
        return None
    frame = 1 / float(stream.average_rate) if stream.average_rate else 0.0
    return duration + frame


def probe_video(path: str) -> tuple[str | None, float | None]:
    """(problem, end): problem is None if ``path`` exists and decodes at its start and at its end, else
    "missing_video"/"unreadable_video"; end is its duration plus one frame (seconds; None when unknown).

    The end is checked by seeking to the last keyframe and decoding to the last frame the index promises: a
    download cut short with its index at the front (``faststart`` mp4) opens and decodes its first frame, but
    not its last. This reads a few packets at each end, not the whole file.
    """
    # Deferred, heavy: PyAV loads FFmpeg's libraries; exo2ego --help imports this module.
    import av

    if not os.path.isfile(path):
        return "missing_video", None
    try:
        with av.open(path) as container:
            if not container.streams.video:
                return "unreadable_video", None
            stream = container.streams.video[0]
            if next(iter(container.decode(stream)), None) is None:
                return "unreadable_video", None
            end = _container_end(container, stream)
            if not (stream.duration and stream.frames):
                return None, end  # no index to check the end against
            start = stream.start_time or 0
            last_expected = start + stream.duration - stream.duration / stream.frames
            container.seek(start + stream.duration - 1, stream=stream, backward=True)
            last = max((frame.pts for frame in container.decode(stream) if frame.pts is not None), default=None)
            # Half a frame of slack for rounding in the index.
            if last is None or last < last_expected - 0.5 * stream.duration / stream.frames:
                return "unreadable_video", None
    except (av.error.FFmpegError, OSError, ValueError):
        return "unreadable_video", None
    return None, end


def _probe_take(paths: Sequence[str]) -> TakeVideos:
    ends = []
    for path in paths:
        problem, end = probe_video(path)
        if problem:
            return TakeVideos(problem=(problem, path))
        ends.append(end)
    known = [end for end in ends if end is not None]
    return TakeVideos(end_sec=min(known) if known else None)


def check_videos(paths_per_take: Sequence[Sequence[str]], num_proc: int = 1) -> list[TakeVideos]:
    """Probe every take's absolute video paths (:func:`probe_video`); ``num_proc`` processes."""
    progress = dict(total=len(paths_per_take), desc="checking videos", unit="take")
    if num_proc > 1 and len(paths_per_take) > 1:
        with ProcessPoolExecutor(num_proc) as pool:
            return list(tqdm(pool.map(_probe_take, paths_per_take, chunksize=8), **progress))
    return [_probe_take(paths) for paths in tqdm(paths_per_take, **progress)]


def bad_video_message(take_name: str, take_uid: str, reason: str, path: str, variant: str) -> str:
    part = "takes" if variant == "full" else "downscaled_takes/448"
    return (
        f"take {take_name} ({take_uid}): {reason.replace('_', ' ')}: {path} (download it with "
        f"`egoexo --parts {part} --uids {take_uid}`, or pass --skip-bad-rows to skip the take)"
    )


def _select_takes(
    options: EgoExoClipOptions, drops: Drops, bad_rows: BadRows
) -> tuple[list[KeptTake], dict[str, Any]]:
    root = Path(options.egoexo_root)
    takes_file = root / "takes.json"
    takes = source.load_takes(root)
    splits = source.load_splits(root)
    annotations, skipped = source.load_annotations(root, "train", bad_rows)
    drops.annotations["malformed"] += skipped["annotations"]
    drops.narrations["malformed"] += skipped["narrations"]
    kept: list[KeptTake] = []
    for take_uid, take_annotations in annotations.items():
        narrations = sum(len(a.descriptions) for a in take_annotations)

        def drop(reason: str) -> None:
            drops.takes[reason] += 1
            drops.narrations[reason] += narrations

        take = takes.get(take_uid)
        if take is None:
            drop("no_uid_mapping")
            continue
        split = splits.get(take_uid)
        if split is None:
            drop("not_in_splits")
            continue
        if split != "train":
            drop("not_train")
            continue
        accepted = [a for a in take_annotations if not a.rejected]
        for annotation in take_annotations:
            if annotation.rejected:
                drops.annotations["rejected"] += 1
                drops.narrations["rejected_annotation"] += len(annotation.descriptions)
        narrations = sum(len(a.descriptions) for a in accepted)
        if not accepted:
            drop("no_accepted_annotation")
            continue
        try:
            cameras = source.resolve_cameras(take, takes_file)
            duration = source.take_duration(take, takes_file)
        except RowError as error:
            if not bad_rows.skip:
                raise
            with bad_rows.guard("takes.json"):
                raise error
            drop("malformed_take")
            continue
        if isinstance(cameras, str):
            drop(cameras)
            continue
        sequences = {
            mode: _sequences(accepted, duration, mode, drops if mode == options.sequence else None)
            for mode in SEQUENCE_MODES
        }
        kept.append(KeptTake(take, cameras, duration, accepted, sequences))
    val_file = root / "annotations" / "atomic_descriptions_val.json"
    report = {"train_file_takes": len(annotations), "takes_json_takes": len(takes)}
    if val_file.is_file():  # read for reporting only
        report["val_file_takes"], report["val_file_narrations"] = val_file_counts(val_file)
    return sorted(kept, key=lambda k: (k.take.get("take_name", ""), k.take["take_uid"])), report


def val_file_counts(val_file: Path) -> tuple[int, int]:
    """(takes, narrations) of an ``atomic_descriptions_val.json``, counted as the file is read (one take's
    annotations in memory at a time); read whole, as before, where the stream cannot stand for that (see
    :func:`~datasets_scripts.source_io.stream_json`) or finds no take."""
    narrations: dict[str, int] = {}  # json.load keeps a take listed twice once, with its last value
    try:
        for take_uid, entries in stream_json(val_file, "annotations", pairs=True):
            narrations[take_uid] = sum(len(a.get("descriptions", [])) for a in entries)
        if narrations:
            return len(narrations), sum(narrations.values())
    except Exception:  # JsonStreamDiffers, or a malformed entry: reading the file whole says what to report
        pass
    payload = read_json(val_file)
    val = payload.get("annotations", {}) if isinstance(payload, Mapping) else {}
    return len(val), sum(len(a.get("descriptions", [])) for entries in val.values() for a in entries)


def plan_ego_exoclip(options: EgoExoClipOptions) -> BuildPlan:
    """Select takes, resolve cameras, apply eq. 1 and count every drop; see the module docstring."""
    root = Path(options.egoexo_root)
    if not root.is_dir():
        raise SourceFileError(f"Ego-Exo4D root not found: {root}")
    drops = Drops()
    bad_rows = BadRows(skip=options.skip_bad)
    kept, report = _select_takes(options, drops, bad_rows)

    recomputed = {
        mode: estimate_alpha([[d.timestamp for d in seq] for k in kept for seq in k.sequences[mode]])
        for mode in SEQUENCE_MODES
    }
    alpha = recomputed[options.sequence] if options.alpha == "auto" else options.alpha
    if alpha is None:
        raise ValueError("alpha='auto' needs at least one sequence with two narrations")

    video_ends: dict[str, float | None] = {}  # take_uid -> end of its shortest video (checked videos only)
    if options.check_videos and not options.annotations_only:
        probes = check_videos(
            [
                [
                    str(root / source.variant_path(p, options.variant))
                    for p in (k.cameras.ego_video, *k.cameras.exo_videos)
                ]
                for k in kept
            ],
            options.num_proc,
        )
        still = []
        for take, probe in zip(kept, probes):
            if probe.problem is None:
                still.append(take)
                video_ends[take.take["take_uid"]] = probe.end_sec
                continue
            reason, path = probe.problem
            if not options.skip_bad:
                raise SourceFileError(
                    bad_video_message(take.take["take_name"], take.take["take_uid"], reason, path, options.variant)
                )
            drops.takes[reason] += 1
            drops.narrations[reason] += sum(len(seq) for seq in take.sequences[options.sequence])
        kept = still
    if not kept:
        raise _nothing_left(root, drops, bad_rows)

    clips, take_rows, words, widened = [], [], [], 0
    for k in kept:
        take, cameras = k.take, k.cameras
        ego_video = source.variant_path(cameras.ego_video, options.variant)
        exo_videos = [source.variant_path(path, options.variant) for path in cameras.exo_videos]
        take_clips, outside = 0, 0
        video_end = video_ends.get(take["take_uid"])
        for sequence in k.sequences[options.sequence]:
            beta, bounds = clip_bounds([d.timestamp for d in sequence], k.duration, alpha, options.min_clip_sec)
            for description, bound in zip(sequence, bounds):
                if video_end is not None and bound.end_sec > video_end:
                    drops.narrations["window_outside_video"] += 1
                    outside += 1
                    continue
                widened += bound.widened
                words.append(len(description.text.split()))
                take_clips += 1
                clips.append(
                    {
                        "clip_id": (
                            f"{k.take['take_uid'][:8]}_{description.annotation_uid[:8]}_{description.desc_index:04d}"
                        ),
                        "take_uid": k.take["take_uid"],
                        "take_name": take.get("take_name"),
                        "annotation_uid": description.annotation_uid,
                        "desc_index": description.desc_index,
                        "timestamp_sec": description.timestamp,
                        "start_sec": bound.start_sec,
                        "end_sec": bound.end_sec,
                        "beta_sec": beta,
                        "alpha_sec": alpha,
                        "widened": bound.widened,
                        "subject": description.subject,
                        "ego_visible": description.ego_visible,
                        "unsure": description.unsure,
                        "best_exo_cam": description.best_exo_cam,
                        "ego_cam": cameras.ego_cam,
                        "exo_cams": list(cameras.exo_cams),
                        "ego_video": ego_video,
                        "exo_videos": exo_videos,
                        "parent_task_name": take.get("parent_task_name"),
                        "task_name": take.get("task_name"),
                        "split": "train",
                        "duration_sec": k.duration,
                        "text": None if options.annotations_only else description.text,
                        "text_sha1": text_sha1(description.text),
                    }
                )
        if not take_clips and outside:  # every clip ended after its video did
            drops.takes["no_clip_inside_video"] += 1
            continue
        take_rows.append(
            {
                "take_uid": take["take_uid"],
                "take_name": take.get("take_name"),
                "root_dir": take.get("root_dir"),
                "duration_sec": k.duration,
                "parent_task_name": take.get("parent_task_name"),
                "task_name": take.get("task_name"),
                "university_name": take.get("university_name"),
                "best_exo": take.get("best_exo"),
                "ego_cam": cameras.ego_cam,
                "exo_cams": list(cameras.exo_cams),
                "ego_video": ego_video,
                "exo_videos": exo_videos,
                "num_annotations": len(k.annotations),
                "num_clips": take_clips,
                "beta_sec": estimate_alpha([[d.timestamp for d in seq] for seq in k.sequences["take"]]),
                "split": "train",
            }
        )
    if not take_rows:
        raise _nothing_left(root, drops, bad_rows)
    ids = Counter(row["clip_id"] for row in clips)
    duplicated = [clip_id for clip_id, n in ids.items() if n > 1]
    if duplicated:
        raise ValueError(f"clip ids are not unique: {duplicated[:5]} (annotation uids share an 8-character prefix)")
    counts = {
        "takes_kept": len(take_rows),
        "videos_kept": sum(1 + len(row["exo_cams"]) for row in take_rows),
        "narrations_kept": len(clips),
        "ego_exo_pairs": sum(len(row["exo_cams"]) for row in clips),
        "annotations_kept": sum(row["num_annotations"] for row in take_rows),
        "clips_widened_to_min_length": widened,
        **report,
    }
    alpha_info = {
        "used": alpha,
        "requested": options.alpha,
        "paper": PAPER_ALPHA_SEC,
        "sequence_mode": options.sequence,
        "recomputed": recomputed,
    }
    return BuildPlan(clips, take_rows, drops, alpha_info, counts, bad_rows.summary(), words)


def _nothing_left(root: Path, drops: Drops, bad_rows: BadRows) -> ValueError:
    dropped = {reason: n for reason, n in drops.as_dict()["takes"].items() if n}
    return ValueError(
        f"Ego-ExoClip: no take of {root} is left to build (takes dropped by reason: {dropped}; "
        f"skipped rows: {bad_rows.summary()['by_source_field']}); check the download and the options"
    )


def options_dict(options: EgoExoClipOptions) -> dict[str, Any]:
    """Options for build_info.json, without the local path of the user's download."""
    recorded = asdict(options)
    recorded.pop("egoexo_root")
    return recorded

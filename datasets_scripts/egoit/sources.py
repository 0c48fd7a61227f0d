"""One adapter per EgoIT source, each reading the files as released (research-data-formats.md §5).

Every adapter is ``read_<source>(root, context, options) -> iterator of canonical EgoIT rows`` (a generator: the
builder writes rows as they come, so no source is held whole; JSON arrays are parsed as a stream); video paths
are relative to ``root``. A bad row raises :class:`~datasets_scripts.source_io.RowError` (file, row,
field) unless ``--skip-bad-rows``; a missing required file raises
:class:`~datasets_scripts.source_io.SourceFileError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_scripts.build_command import BuildContext
from datasets_scripts.egoit.templates import choose_instruction
from datasets_scripts.schema import egoit_row
from datasets_scripts.source_io import (
    RowError,
    field,
    find_file,
    integer,
    iter_json_array,
    number,
    read_csv,
    read_json,
    read_lines,
    text,
)


@dataclass
class EgoITOptions:
    """Per-source choices (CLI flags of ``exo2ego data egoit``)."""

    egtea_split: int = 1  # EGTEA ships three train/test splits; both halves of one are read
    ssv2_answer: str = "label"  # "label": the filled-in caption; "template": the class template
    egoexolearn_views: tuple[str, ...] = ("ego",)
    egoexolearn_text: str = "narration_en"  # or narration_en_no_hand_prompt / narration_en_hand_prompt
    make_openeqa_videos: bool = False  # encode data/frames/<episode>/*-rgb.png into the video paths
    openeqa_fps: float = 30.0


def _row(source: str, sample_id: str, context: BuildContext, **values: Any) -> dict[str, Any]:
    row_id = f"{source}/{sample_id}"
    instruction_id, instruction = choose_instruction(source, row_id, context.seed)
    return egoit_row(id=row_id, source=source, instruction_id=instruction_id, instruction=instruction, **values)


# --------------------------------------------------------------------------------------------- EGTEA Gaze+
EGTEA_CLIP_NAME = re.compile(
    r"^(?P<session>.+)-(?P<start_ms>\d+)-(?P<end_ms>\d+)-F(?P<start_frame>\d+)-F(?P<end_frame>\d+)$"
)


def read_egtea(root: Path, context: BuildContext, options: EgoITOptions) -> Iterator[dict[str, Any]]:
    """EGTEA Gaze+ action recognition from ``action_annotation/`` and ``cropped_clips/``.

    ``action_idx.txt``: ``"<Action_name> <idx>"`` (1-based). ``{train,test}_split<k>.txt``:
    ``"<clip_name> <action_idx> <verb_idx> <noun_idx...>"``; the clip is
    ``cropped_clips/<session>/<clip_name>.mp4`` (already trimmed, so no start/end).
    """
    annotation_dir = find_file(root, ["action_annotation/action_idx.txt", "action_idx.txt"], "egtea").parent
    actions: dict[int, str] = {}
    action_file = annotation_dir / "action_idx.txt"
    for line_number, line in read_lines(action_file):
        with context.bad_rows.guard("egtea"):
            name, _, index = line.rpartition(" ")
            if not name or not index.isdigit():
                raise RowError(action_file, line_number, "action", f"expected '<Action_name> <index>', got {line!r}")
            actions[int(index)] = name.replace("_", " ").strip()
    for split in ("train", "test"):
        split_file = find_file(annotation_dir, [f"{split}_split{options.egtea_split}.txt"], "egtea")
        for line_number, line in read_lines(split_file):
            with context.bad_rows.guard("egtea"):
                columns = line.split()
                if len(columns) < 2:
                    raise RowError(
                        split_file, line_number, "action_idx", f"expected '<clip> <action> ...', got {line!r}"
                    )
                clip_name = columns[0]
                match = EGTEA_CLIP_NAME.match(clip_name)
                if match is None:
                    raise RowError(
                        split_file,
                        line_number,
                        "clip_name",
                        f"{clip_name!r} is not <session>-<start_ms>-<end_ms>-F<start>-F<end>",
                    )
                action_index = field({"action_idx": columns[1]}, "action_idx", split_file, line_number, integer)
                if action_index not in actions:
                    raise RowError(
                        split_file,
                        line_number,
                        "action_idx",
                        f"{action_index} is not in action_idx.txt (1..{len(actions)}); is column 2 the action?",
                    )
                yield (
                    _row(
                        "egtea",
                        clip_name,
                        context,
                        task="action_recognition",
                        split=split,
                        video=f"cropped_clips/{match['session']}/{clip_name}.mp4",
                        question="",
                        answer=actions[action_index],
                    )
                )


# --------------------------------------------------------------------------------------------- SSv2
SSV2_VIDEO_DIR = "20bn-something-something-v2"  # what the released tar parts extract to


def _ssv2_file(root: Path, name: str, required: bool = True) -> Path | None:
    candidates = [name, f"something-something-v2-{name}", f"labels/{name}", f"labels/something-something-v2-{name}"]
    try:
        return find_file(root, candidates, "ssv2")
    except FileNotFoundError:
        if required:
            raise
        return None


def _strip_brackets(template: str) -> str:
    return template.replace("[", "").replace("]", "")


def read_ssv2(root: Path, context: BuildContext, options: EgoITOptions) -> Iterator[dict[str, Any]]:
    """Something-Something-V2 (all three splits; test labels from ``test-answers.csv``).

    ``labels.json`` maps each class template (brackets removed) to its index; ``train.json`` /
    ``validation.json`` hold ``{id, label, template, placeholders}``; ``test.json`` holds ``{id}`` and
    ``test-answers.csv`` lines ``<id>;<template>``. Videos are ``20bn-something-something-v2/<id>.webm``.
    """
    labels_file = _ssv2_file(root, "labels.json")
    labels = read_json(labels_file)
    if not isinstance(labels, dict):
        raise RowError(labels_file, "-", "(json)", "expected an object mapping template -> class index")
    for split, name in (("train", "train.json"), ("validation", "validation.json")):
        path = _ssv2_file(root, name)
        for index, record in iter_json_array(path):
            with context.bad_rows.guard("ssv2"):
                video_id = field(record, "id", path, index, lambda value: text(str(value)))
                template = _strip_brackets(field(record, "template", path, index))
                if template not in labels:
                    raise RowError(path, index, "template", f"{template!r} is not a class of {labels_file.name}")
                answer = field(record, "label", path, index) if options.ssv2_answer == "label" else template
                yield (
                    _row(
                        "ssv2",
                        video_id,
                        context,
                        task="action_recognition",
                        split=split,
                        video=f"{SSV2_VIDEO_DIR}/{video_id}.webm",
                        question="",
                        answer=_capitalize(answer),
                    )
                )
    test_file = _ssv2_file(root, "test.json", required=False)
    answers_file = _ssv2_file(root, "test-answers.csv", required=False)
    if test_file is None or answers_file is None:
        context.note("ssv2: test split skipped (needs test.json and test-answers.csv)")
        return
    test_templates: dict[str, str] = {}
    for line_number, line in read_lines(answers_file):
        with context.bad_rows.guard("ssv2"):
            video_id, sep, template = line.partition(";")
            if not sep or template.strip() not in labels:
                raise RowError(
                    answers_file, line_number, "template", f"expected '<id>;<class template>', got {line!r}"
                )
            test_templates[video_id.strip()] = template.strip()
    for index, record in iter_json_array(test_file):
        with context.bad_rows.guard("ssv2"):
            video_id = field(record, "id", test_file, index, lambda value: text(str(value)))
            if video_id not in test_templates:
                raise RowError(test_file, index, "id", f"{video_id} has no answer in {answers_file.name}")
            yield (
                _row(
                    "ssv2",
                    video_id,
                    context,
                    task="action_recognition",
                    split="test",
                    video=f"{SSV2_VIDEO_DIR}/{video_id}.webm",
                    question="",
                    answer=_capitalize(test_templates[video_id]),
                )
            )


def _capitalize(value: str) -> str:
    return value[:1].upper() + value[1:]


# --------------------------------------------------------------------------------------------- EgoTimeQA
def read_egotimeqa(root: Path, context: BuildContext, options: EgoITOptions) -> Iterator[dict[str, Any]]:
    """GroundVQA's EgoTimeQA: ``data/unified/annotations.EgoTimeQA.json``, open QA over ``[start_sec, end_sec]``.

    Records ``{video_id, sample_id, question, answer, start_sec, end_sec, ...}``; ``video_id`` is an
    Ego4D clip uid, video ``v1/clips/<video_id>.mp4`` (``ego4d --datasets clips`` layout). The raw
    seconds are used, not the rescaled ``moment_*_frame``.
    """
    path = find_file(
        root,
        [
            "data/unified/annotations.EgoTimeQA.json",
            "unified/annotations.EgoTimeQA.json",
            "annotations.EgoTimeQA.json",
        ],
        "egotimeqa",
    )
    for index, record in iter_json_array(path):
        with context.bad_rows.guard("egotimeqa"):
            video_id = field(record, "video_id", path, index)
            start = field(record, "start_sec", path, index, number)
            end = field(record, "end_sec", path, index, number)
            if not 0 <= start < end:
                raise RowError(path, index, "end_sec", f"interval [{start}, {end}] is empty or negative")
            sample_id = field(record, "sample_id", path, index, lambda value: text(str(value)), optional=True)
            yield (
                _row(
                    "egotimeqa",
                    sample_id or f"{index:07d}",
                    context,
                    task="open_qa",
                    split="train",
                    video=f"v1/clips/{video_id}.mp4",
                    video_start_sec=start,
                    video_end_sec=end,
                    question=field(record, "question", path, index),
                    answer=field(record, "answer", path, index),
                )
            )


# --------------------------------------------------------------------------------------------- OpenEQA
OPENEQA_VIDEO_DIR = "viewer/static/videos"  # where the official data/frames2videos.py writes <episode>-0.mp4


def read_openeqa(root: Path, context: BuildContext, options: EgoITOptions) -> Iterator[dict[str, Any]]:
    """OpenEQA ``data/open-eqa-v0.json``: ``{question, answer, category, question_id, episode_history}``.

    The episode's frames ``data/frames/<episode_history>/*-rgb.png`` become the clip
    ``viewer/static/videos/<episode_history>-0.mp4`` (the official frames2videos.py path); with
    ``make_openeqa_videos`` missing clips are encoded here with PyAV. OpenEQA is a benchmark: training
    on it contaminates any OpenEQA evaluation.
    """
    path = find_file(root, ["data/open-eqa-v0.json", "open-eqa-v0.json"], "openeqa")
    videos: set[str] = set()
    for index, record in iter_json_array(path):
        with context.bad_rows.guard("openeqa"):
            episode = field(record, "episode_history", path, index).strip("/")
            row = _row(
                "openeqa",
                field(record, "question_id", path, index, lambda value: text(str(value))),
                context,
                task="open_qa",
                split="train",
                video=f"{OPENEQA_VIDEO_DIR}/{episode}-0.mp4",
                question=field(record, "question", path, index),
                answer=field(record, "answer", path, index),
            )
            videos.add(row["video"])
            yield row
    if options.make_openeqa_videos:
        make_openeqa_videos(root, videos, context, options.openeqa_fps)


def make_openeqa_videos(root: Path, videos: Iterable[str], context: BuildContext, fps: float) -> int:
    """Encode each episode's ``*-rgb.png`` frames into its video path (``videos``: the rows' paths; skips existing
    videos)."""
    # Deferred, heavy: egoit.frames loads PyAV (FFmpeg's libraries); exo2ego --help imports this module.
    from datasets_scripts.egoit.frames import frames_to_video

    written = 0
    episodes = sorted(set(videos))
    for video in tqdm(episodes, desc="openeqa: frames -> mp4", disable=len(episodes) < 2):
        target = root / video
        if target.exists():
            continue
        episode = video[len(OPENEQA_VIDEO_DIR) + 1 : -len("-0.mp4")]
        frames = sorted((root / "data" / "frames" / episode).glob("*-rgb.png"))
        if not frames:
            context.note(f"openeqa: no frames in {root / 'data' / 'frames' / episode}; {video} not written")
            continue
        frames_to_video(frames, target, fps=fps)
        written += 1
    context.note(f"openeqa: wrote {written} videos from frame folders")
    return written


# --------------------------------------------------------------------------------------------- EgoExoLearn
EGOEXOLEARN_COLUMNS = ("video_uid", "annotation_uid", "subset", "view", "start_sec", "end_sec", "narration_en")


def read_egoexolearn(root: Path, context: BuildContext, options: EgoITOptions) -> Iterator[dict[str, Any]]:
    """EgoExoLearn ``annotations/fine_annotation_trainval_en.csv``: captioning over ``[start_sec, end_sec]``.

    Only rows whose ``view`` is in ``options.egoexolearn_views`` (default ego); the answer is
    ``options.egoexolearn_text`` (default ``narration_en``); video ``<video_uid>.mp4``.
    """
    path = find_file(
        root, ["annotations/fine_annotation_trainval_en.csv", "fine_annotation_trainval_en.csv"], "egoexolearn"
    )
    for line_number, record in read_csv(path, EGOEXOLEARN_COLUMNS + (options.egoexolearn_text,)):
        with context.bad_rows.guard("egoexolearn"):
            view = field(record, "view", path, line_number).lower()
            if view not in options.egoexolearn_views:
                continue
            start = field(record, "start_sec", path, line_number, number)
            end = field(record, "end_sec", path, line_number, number)
            if not 0 <= start < end:
                raise RowError(path, line_number, "end_sec", f"interval [{start}, {end}] is empty or negative")
            yield (
                _row(
                    "egoexolearn",
                    field(record, "annotation_uid", path, line_number),
                    context,
                    task="captioning",
                    split=field(record, "subset", path, line_number).lower(),
                    video=f"{field(record, 'video_uid', path, line_number)}.mp4",
                    video_start_sec=start,
                    video_end_sec=end,
                    question="",
                    answer=field(record, options.egoexolearn_text, path, line_number),
                )
            )


ADAPTERS: dict[str, Callable[[Path, BuildContext, EgoITOptions], Iterator[dict[str, Any]]]] = {
    "egtea": read_egtea,
    "ssv2": read_ssv2,
    "egotimeqa": read_egotimeqa,
    "openeqa": read_openeqa,
    "egoexolearn": read_egoexolearn,
}

LICENCE_NOTES = {
    "egtea": "EGTEA Gaze+ (Georgia Tech): academic download; redistribution terms not published. "
    "The table holds clip names, action names and our instruction text, never video.",
    "ssv2": "Something-Something-V2 (Qualcomm): research licence PDF shipped with the download, manual "
    "download only. Check the licence before publishing the label text.",
    "egotimeqa": "EgoTimeQA (GroundVQA, generated from Ego4D narrations; videos under the Ego4D licence). "
    "Point to `Becomebright/GroundVQA` rather than re-hosting the QA text.",
    "openeqa": "OpenEQA (QA under MIT; frames under HM3D/ScanNet terms: never ship frames or videos). "
    "OpenEQA is a benchmark: training on it contaminates OpenEQA evaluation.",
    "egoexolearn": "EgoExoLearn: code MIT, data licence not stated in the repository (VERIFY before publishing).",
}

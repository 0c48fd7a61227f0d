"""EgoBench tasks whose options come with the source: EgoSchema, QAEgo4D, EgoPlan (val), VLN-QA.

Formats: research-egobench-eval.md §3. Options are stored in their frozen order (seeded hash of the
sample id) with ``meta["source_order"]`` mapping back to the source's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets_scripts.build_command import BuildContext
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables, checked_row
from datasets_scripts.schema import EGOBENCH_FEATURES
from datasets_scripts.source_io import (
    RowError,
    SourceFileError,
    field,
    find_file,
    integer,
    iter_json_array,
    number,
    read_csv,
    read_json,
    text,
)

EGO4D_CLIP_DIR = "v1/clips"  # `ego4d --datasets clips` layout: <dir>/v1/clips/<clip_uid>.mp4
EGO4D_VIDEO_DIR = "v1/full_scale"  # `ego4d --datasets full_scale`: <dir>/v1/full_scale/<video_uid>.mp4


def _any_id(value: Any) -> str:
    return text(str(value))


# --------------------------------------------------------------------------------------------- EgoSchema
def read_egoschema(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """EgoSchema ``questions.json`` (+ ``subset_answers.json``, optional ``uid_to_ego4d.json``).

    Configs: ``egoschema_subset`` (the 500 questions with public answers) and ``egoschema_full`` (all
    questions; ``answer_idx`` is None where the answer is withheld, for prediction export).
    Videos are ``videos/<q_uid>.mp4`` (the official download script's layout).
    """
    questions_file = find_file(root, ["questions.json"], "egoschema")
    answers_file = root / "subset_answers.json"
    answers = read_json(answers_file) if answers_file.is_file() else {}
    if not answers:
        context.note("egoschema: no subset_answers.json; only egoschema_full (answers unknown) is built")
    ego4d_file = root / "uid_to_ego4d.json"
    ego4d = read_json(ego4d_file) if ego4d_file.is_file() else {}
    questions = iter_json_array(
        questions_file,
        not_a_list=lambda payload: RowError(
            questions_file,
            "(json)",
            "(top level)",
            f"expected the list of questions, got {type(payload).__name__} {str(payload)[:40]}",
        ),
    )
    full, subset = [], []
    for index, record in questions:
        with context.bad_rows.guard("egoschema"):
            q_uid = field(record, "q_uid", questions_file, index)
            choices = [field(record, f"option {k}", questions_file, index) for k in range(5)]
            answer_idx = None
            if q_uid in answers:
                answer_idx = field(answers, q_uid, answers_file, q_uid, integer)
                if not 0 <= answer_idx < 5:
                    raise RowError(answers_file, q_uid, q_uid, f"answer {answer_idx} outside 0..4")
            meta = {"video_id": q_uid, "source_file": questions_file.name, "source_row": index}
            if q_uid in ego4d:
                meta.update(
                    ego4d_video_uid=ego4d[q_uid].get("video_uid"),
                    ego4d_start_sec=ego4d[q_uid].get("starting_sec"),
                    ego4d_end_sec=ego4d[q_uid].get("ending_sec"),
                )
            row = checked_row(
                questions_file,
                index,
                sample_id=f"egoschema/{q_uid}",
                task="egoschema",
                subset="full",
                video=f"videos/{q_uid}.mp4",
                question=field(record, "question", questions_file, index),
                options=choices,
                answer_idx=answer_idx,
                meta=meta,
                shuffle_seed=options.shuffle_seed,
            )
            full.append(row)
            if answer_idx is not None:
                subset.append({**row, "subset": "subset"})
    tables: TaskTables = {"egoschema_full": (EGOBENCH_FEATURES, full)}
    if subset:
        tables["egoschema_subset"] = (EGOBENCH_FEATURES, subset)
    return tables


# --------------------------------------------------------------------------------------------- QAEgo4D
def read_qaego4d(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """QAEgo4D from GroundVQA's ``data/unified/annotations.QaEgo4D_<split>{,_close}.json``.

    ``qaego4d_closed``: 4-way (answer + the three ``wrong_answers``); ``qaego4d_open``: open-ended
    (``options=[]``, reference in ``answer_text``). The question is about the whole Ego4D clip
    ``v1/clips/<video_id>.mp4``; the grounding moment (30 fps frames) is kept in ``meta``.
    """
    split = options.qaego4d_split
    candidates = {"closed": f"annotations.QaEgo4D_{split}_close.json", "open": f"annotations.QaEgo4D_{split}.json"}
    tables: TaskTables = {}
    for subset, name in candidates.items():
        path = next(
            (root / prefix / name for prefix in ("data/unified", "unified", ".") if (root / prefix / name).is_file()),
            None,
        )
        if path is None:
            context.note(f"qaego4d: {name} not found under {root}; qaego4d_{subset} skipped")
            continue
        rows = []
        for index, record in iter_json_array(path):
            with context.bad_rows.guard("qaego4d"):
                video_id = field(record, "video_id", path, index)
                answer = field(record, "answer", path, index)
                sample_key = field(record, "sample_id", path, index, _any_id, optional=True) or f"{index:05d}"
                meta = {"video_id": video_id, "source_file": path.name, "source_row": index, "split": split}
                for key in ("moment_start_frame", "moment_end_frame"):
                    value = field(record, key, path, index, number, optional=True)
                    if value is not None:
                        meta[key] = value
                        meta[key.replace("_frame", "_sec")] = round(value / 30.0, 3)
                if subset == "closed":
                    wrong = record.get("wrong_answers") if isinstance(record, dict) else None
                    if (
                        not isinstance(wrong, list)
                        or len(wrong) != 3
                        or not all(isinstance(item, str) and item.strip() for item in wrong)
                    ):
                        raise RowError(
                            path, index, "wrong_answers", f"expected a list of 3 non-empty strings, got {wrong!r}"
                        )
                    choices = [answer] + [item.strip() for item in wrong]
                    meta["distractors"] = {
                        "rule": "the release's wrong_answers (generated by Llama-2-13B-chat in GroundVQA)"
                    }
                    if len({choice.casefold() for choice in choices}) != 4:
                        raise RowError(
                            path, index, "wrong_answers", "a wrong answer repeats the answer or another wrong answer"
                        )
                    row = checked_row(
                        path,
                        index,
                        sample_id=f"qaego4d/closed/{sample_key}",
                        task="qaego4d",
                        subset="closed",
                        video=f"{EGO4D_CLIP_DIR}/{video_id}.mp4",
                        question=field(record, "question", path, index),
                        options=choices,
                        answer_idx=0,
                        meta=meta,
                        shuffle_seed=options.shuffle_seed,
                    )
                else:
                    row = checked_row(
                        path,
                        index,
                        sample_id=f"qaego4d/open/{sample_key}",
                        task="qaego4d",
                        subset="open",
                        video=f"{EGO4D_CLIP_DIR}/{video_id}.mp4",
                        question=field(record, "question", path, index),
                        options=[],
                        answer_idx=None,
                        answer_text=answer,
                        meta=meta,
                    )
                rows.append(row)
        tables[f"qaego4d_{subset}"] = (EGOBENCH_FEATURES, rows)
    if not tables:
        raise SourceFileError(f"qaego4d: neither {' nor '.join(candidates.values())} found under {root}")
    return tables


# --------------------------------------------------------------------------------------------- EgoPlan
EGOPLAN_DEFAULT_FPS = {"EpicKitchens": 50.0, "Ego4D": 30.0}
LETTERS = "ABCD"


def egoplan_video_path(video_source: str, video_id: str) -> str:
    """EPIC-KITCHENS: ``EPIC-KITCHENS/<participant>/videos/<video_id>.MP4``; Ego4D: ``v1/full_scale/<uid>.mp4``."""
    if video_source == "EpicKitchens":
        return f"EPIC-KITCHENS/{video_id.split('_')[0]}/videos/{video_id}.MP4"
    return f"{EGO4D_VIDEO_DIR}/{video_id}.mp4"


def _epic_video_fps(root: Path) -> dict[str, float]:
    """``EPIC_100_video_info.csv`` (video_id, duration, fps, resolution) when the user has it."""
    path = next(
        (
            root / name
            for name in ("EPIC_100_video_info.csv", "epic-kitchens-100-annotations/EPIC_100_video_info.csv")
            if (root / name).is_file()
        ),
        None,
    )
    if path is None:
        return {}
    return {
        field(record, "video_id", path, line): field(record, "fps", path, line, number)
        for line, record in read_csv(path, ("video_id", "fps"))
    }


def _probe_fps(path: Path) -> float | None:
    """Average frame rate of a local video (PyAV), or None when it is absent or unreadable."""
    if not path.is_file():
        return None
    # Deferred, heavy: PyAV loads FFmpeg's libraries; exo2ego --help imports this module.
    import av

    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else None
    except (av.error.FFmpegError, IndexError):
        return None


def read_egoplan(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """EgoPlan-Bench validation ``EgoPlan_validation.json`` (4-way next-action MCQ).

    No frame after ``current_observation_frame`` may be seen. Frame numbers are 1-based (frame f spans
    ``[(f-1)/fps, f/fps)``), so ``end_sec = current_observation_frame / fps`` and the clip starts at the
    first task-progress action that ends by then (or at the current frame if there is none). fps comes
    from ``EPIC_100_video_info.csv`` or the local video when present, else 50 (EPIC) / 30 (Ego4D);
    ``meta["fps_source"]`` says which.
    """
    path = find_file(root, ["EgoPlan_validation.json", "annotations/EgoPlan_validation.json"], "egoplan")
    epic_fps = _epic_video_fps(root)
    rows = []
    for index, record in iter_json_array(path):
        with context.bad_rows.guard("egoplan"):
            sample_id = field(record, "sample_id", path, index, _any_id)
            video_source = field(record, "video_source", path, index)
            if video_source not in EGOPLAN_DEFAULT_FPS:
                raise RowError(
                    path, index, "video_source", f"{video_source!r} is not one of {sorted(EGOPLAN_DEFAULT_FPS)}"
                )
            video_id = field(record, "video_id", path, index)
            video = egoplan_video_path(video_source, video_id)
            current = field(record, "current_observation_frame", path, index, integer)
            if current < 1:
                raise RowError(path, index, "current_observation_frame", f"{current} is not a 1-based frame number")
            choices = [field(record, f"choice_{letter.lower()}", path, index) for letter in LETTERS]
            golden = field(record, "golden_choice_idx", path, index).upper()
            if golden not in LETTERS:
                raise RowError(path, index, "golden_choice_idx", f"{golden!r} is not one of A-D")
            progress = record.get("task_progress_metadata") or []
            if not isinstance(progress, list):
                raise RowError(path, index, "task_progress_metadata", "expected a list")
            done = []
            for action in progress:
                stop = field(action, "stop_frame", path, index, integer, parent="task_progress_metadata")
                if stop <= current:  # actions that end after the current frame are future information
                    done.append(
                        {
                            "narration_text": field(
                                action, "narration_text", path, index, parent="task_progress_metadata"
                            ),
                            "start_frame": field(
                                action, "start_frame", path, index, integer, parent="task_progress_metadata"
                            ),
                            "stop_frame": stop,
                        }
                    )
            fps, fps_source = epic_fps.get(video_id), "EPIC_100_video_info.csv"
            if fps is None:
                fps, fps_source = _probe_fps(root / video), "video"
            if fps is None:
                fps, fps_source = EGOPLAN_DEFAULT_FPS[video_source], "default"
            start_frame = min((action["start_frame"] for action in done), default=current)
            meta = {
                "video_id": video_id,
                "video_source": video_source,
                "task_goal": field(record, "task_goal", path, index, optional=True),
                "current_observation_frame": current,
                "task_start_frame": start_frame,
                "frame_base": 1,
                "fps": fps,
                "fps_source": fps_source,
                "task_progress": done,
                "source_file": path.name,
                "source_row": index,
            }
            rows.append(
                checked_row(
                    path,
                    index,
                    sample_id=f"egoplan/{sample_id}",
                    task="egoplan",
                    subset="validation",
                    video=video,
                    start_sec=round((start_frame - 1) / fps, 6),
                    end_sec=round(current / fps, 6),
                    question=field(record, "question", path, index),
                    options=choices,
                    answer_idx=LETTERS.index(golden),
                    meta=meta,
                    shuffle_seed=options.shuffle_seed,
                )
            )
    return {"egoplan": (EGOBENCH_FEATURES, rows)}


# --------------------------------------------------------------------------------------------- VLN-QA
def read_vlnqa(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """VLN-QA as MVBench ships it: ``json/egocentric_navigation.json`` ``[{video, question, candidates, answer}]``,
    videos under ``video/vlnqa/``; the answer is the candidate equal to ``answer``."""
    path = find_file(root, ["json/egocentric_navigation.json", "egocentric_navigation.json"], "vlnqa")
    rows = []
    for index, record in iter_json_array(path):
        with context.bad_rows.guard("vlnqa"):
            video = field(record, "video", path, index)
            candidates = record.get("candidates") if isinstance(record, dict) else None
            if (
                not isinstance(candidates, list)
                or len(candidates) < 2
                or not all(isinstance(c, str) and c.strip() for c in candidates)
            ):
                raise RowError(path, index, "candidates", f"expected a list of at least 2 strings, got {candidates!r}")
            answer = field(record, "answer", path, index)
            if answer not in candidates:
                raise RowError(path, index, "answer", f"{answer!r} is not one of the candidates {candidates}")
            rows.append(
                checked_row(
                    path,
                    index,
                    sample_id=f"vlnqa/{index:04d}",
                    task="vlnqa",
                    subset="test",
                    video=f"video/vlnqa/{video}",
                    question=field(record, "question", path, index),
                    options=candidates,
                    answer_idx=candidates.index(answer),
                    meta={"video_id": Path(video).stem, "source_file": path.name, "source_row": index},
                    shuffle_seed=options.shuffle_seed,
                )
            )
    return {"vlnqa": (EGOBENCH_FEATURES, rows)}

"""EgoBench tasks whose distractors we mine with SentenceBERT: EgoTaskQA, Charades-Ego, EgoMCQ.

Rules (research-egobench-eval.md §2.3, §2.4, §6; DESIGN §4):

- EgoTaskQA: 5-way, the answer + the 4 wrong answers of ``answer_set.txt`` most similar to it. Yes/no
  questions stay 2-way (``["yes", "no"]``): mined distractors would be unrelated nouns and make the
  question trivial, so we keep them binary and mark ``meta["binary"]``.
- Charades-Ego: 5-way per video, answer = the video's positive class with the longest annotated time
  (ties: lowest class index), distractors = the 4 most similar other class names, never any positive
  class of the video. A side table holds each video's multi-hot labels over the 157 classes for mAP.
- EgoMCQ: the query clip is the video; options = its narration + the texts of the 4 original
  candidates + narrations mined by similarity until there are 10, with no near duplicate of the answer
  (or of one another) and nothing from the answer's own clip. ``types`` 1 = inter-video,
  2 = intra-video, mapped explicitly (EgoVLP's metric code swaps the labels).

Every mined option is recorded in ``meta["distractors"]`` (encoder, rule, similarities, exclusions).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_scripts.build_command import BuildContext
from datasets_scripts.distractors import mine_distractors, normalize_text, provenance
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables, checked_row, clean_narration
from datasets_scripts.schema import CHARADES_CLASS_FEATURES, CHARADES_LABEL_FEATURES, EGOBENCH_FEATURES
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
    read_lines,
    text,
)

BINARY_ANSWERS = ("yes", "no")


def _any_id(value: Any) -> str:
    return text(str(value))


# --------------------------------------------------------------------------------------------- EgoTaskQA
def egotaskqa_clip_path(interval: str) -> tuple[str, dict[str, Any]]:
    """``"<video>|fpv<k>|<start>|<end>"`` -> (clip path, frame info). Frames ``[start, end)`` are the files
    ``videos/<video>/fpv<k>/img_<start+1:05d>.jpg`` .. ``img_<end:05d>.jpg`` (LEMMA layout)."""
    video_name, camera, start, end = interval.split("|")
    camera = f"fpv{camera[-1]}"
    start_frame, end_frame = int(start), int(end)
    if not 0 <= start_frame < end_frame:
        raise ValueError(f"empty frame interval {start_frame}..{end_frame}")
    info = {"frame_dir": f"videos/{video_name}/{camera}", "start_frame": start_frame, "end_frame": end_frame}
    return f"clips/{video_name}_{camera}_{start_frame}_{end_frame}.mp4", info


def read_egotaskqa(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """EgoTaskQA ``{direct,indirect}/<split>_qas.json`` + ``answer_set.txt`` -> ``egotaskqa_direct``/``_indirect``.

    Each question's ``interval`` (LEMMA frames) becomes the clip ``clips/<video>_fpv<k>_<start>_<end>.mp4``,
    written from the frame folder with ``--make-egotaskqa-clips``.
    """
    answer_file = find_file(root, ["answer_set.txt", "direct/answer_set.txt", "data/answer_set.txt"], "egotaskqa")
    answer_pool = [line for _, line in read_lines(answer_file) if normalize_text(line) not in BINARY_ANSWERS]
    encoder = options.text_encoder()
    tables: TaskTables = {}
    clips: dict[str, dict[str, Any]] = {}
    for subset in ("direct", "indirect"):
        path = root / subset / f"{options.egotaskqa_split}_qas.json"
        if not path.is_file():
            context.note(f"egotaskqa: {path} not found; egotaskqa_{subset} skipped")
            continue
        parsed = []
        for index, record in iter_json_array(path):
            with context.bad_rows.guard("egotaskqa"):
                interval = field(record, "interval", path, index)
                try:
                    clip, frames = egotaskqa_clip_path(interval)
                except ValueError as error:
                    raise RowError(
                        path, index, "interval", f"{interval!r} is not '<video>|fpv<k>|<start>|<end>': {error}"
                    ) from error
                clips[clip] = frames
                meta = {
                    "video_id": str(field(record, "video_id", path, index, _any_id)),
                    "interval": interval,
                    **frames,
                    "question_id": field(record, "question_id", path, index, _any_id, optional=True),
                    "source_file": f"{subset}/{path.name}",
                    "source_row": index,
                }
                for key in ("type", "category", "semantic", "structural", "reference", "reasoning_type"):
                    if isinstance(record, dict) and record.get(key) is not None:
                        meta[key] = record[key]
                parsed.append(
                    (index, clip, field(record, "question", path, index), field(record, "answer", path, index), meta)
                )
        mined_for = [item for item in parsed if normalize_text(item[3]) not in BINARY_ANSWERS]
        mined = mine_distractors(
            encoder, [item[3] for item in mined_for], answer_pool, 4, near_duplicate=options.near_duplicate
        )
        mined_by_index = {item[0]: options_ for item, options_ in zip(mined_for, mined)}
        rows = []
        for index, clip, question, answer, meta in parsed:
            with context.bad_rows.guard("egotaskqa"):
                if index in mined_by_index:
                    found = mined_by_index[index]
                    if len(found) < 4:
                        raise RowError(
                            path, index, "answer", f"only {len(found)} distractors found in {answer_file.name}"
                        )
                    choices = [answer] + [option.text for option in found]
                    meta["distractors"] = provenance(
                        encoder.encoder_id,
                        "egotaskqa: 4 most similar wrong answers of answer_set.txt",
                        found,
                        excluded=[answer],
                        near_duplicate=options.near_duplicate,
                    )
                    meta["binary"] = False
                    answer_idx = 0
                else:
                    choices, answer_idx = list(BINARY_ANSWERS), BINARY_ANSWERS.index(normalize_text(answer))
                    meta["binary"] = True
                rows.append(
                    checked_row(
                        path,
                        index,
                        sample_id=f"egotaskqa/{subset}/{meta['question_id'] or index}",
                        task="egotaskqa",
                        subset=subset,
                        video=clip,
                        question=question,
                        options=choices,
                        answer_idx=answer_idx,
                        meta=meta,
                        shuffle_seed=options.shuffle_seed,
                    )
                )
        tables[f"egotaskqa_{subset}"] = (EGOBENCH_FEATURES, rows)
    if not tables:
        raise SourceFileError(f"egotaskqa: no direct/ or indirect/{options.egotaskqa_split}_qas.json under {root}")
    if options.make_egotaskqa_clips:
        _make_egotaskqa_clips(root, clips, context, options.frames_fps)
    return tables


def _make_egotaskqa_clips(root: Path, clips: dict[str, dict[str, Any]], context: BuildContext, fps: float) -> None:
    # Deferred, heavy: egoit.frames loads PyAV (FFmpeg's libraries); exo2ego --help imports this module.
    from datasets_scripts.egoit.frames import frames_to_video

    written = 0
    for clip, info in tqdm(sorted(clips.items()), desc="egotaskqa: frames -> mp4", disable=len(clips) < 2):
        if (root / clip).exists():
            continue
        frame_dir = root / info["frame_dir"]
        frames = [
            frame_dir / f"img_{number:05d}.jpg" for number in range(info["start_frame"] + 1, info["end_frame"] + 1)
        ]
        frames = [frame for frame in frames if frame.is_file()]
        if not frames:
            context.note(f"egotaskqa: no frames for {clip} in {frame_dir}; clip not written")
            continue
        frames_to_video(frames, root / clip, fps=fps)
        written += 1
    context.note(f"egotaskqa: wrote {written} clips from LEMMA frame folders")


# --------------------------------------------------------------------------------------------- Charades-Ego
CHARADES_VIDEO_DIR = "CharadesEgo_v1_480"


def parse_charades_actions(value: str) -> list[tuple[int, float, float]]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> ``[(92, 11.9, 21.2), (147, 0.0, 12.6)]``."""
    actions = []
    for item in value.split(";"):
        if not item.strip():
            continue
        class_id, start, end = item.split()
        if not (class_id.startswith("c") and class_id[1:].isdigit()):
            raise ValueError(f"class {class_id!r} is not cNNN")
        actions.append((int(class_id[1:]), float(start), float(end)))
    return actions


def read_charades_ego(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """Charades-Ego ``CharadesEgo_v1_test_only1st.csv`` + ``Charades_v1_classes.txt``.

    Configs: ``charades_ego`` (5-way MCQ per video), ``charades_ego_labels`` (multi-hot over the
    classes, for mAP), ``charades_ego_classes`` (index, ``cNNN``, name). Videos:
    ``CharadesEgo_v1_480/<id>.mp4``. Videos without any action have no label and are skipped (counted).
    """
    csv_file = find_file(root, [options.charades_csv, f"CharadesEgo/{options.charades_csv}"], "charades_ego")
    classes_file = find_file(
        root,
        ["Charades_v1_classes.txt", "CharadesEgo/Charades_v1_classes.txt", "Charades/Charades_v1_classes.txt"],
        "charades_ego",
    )
    names: list[str] = []
    for line_number, line in read_lines(classes_file):
        class_id, _, name = line.partition(" ")
        if class_id != f"c{len(names):03d}" or not name.strip():
            raise RowError(classes_file, line_number, "class", f"expected 'c{len(names):03d} <name>', got {line!r}")
        names.append(name.strip())
    videos = []
    no_actions = 0
    for line_number, record in read_csv(csv_file, ("id", "actions")):
        with context.bad_rows.guard("charades_ego"):
            video_id = field(record, "id", csv_file, line_number)
            raw = record.get("actions", "") if isinstance(record, dict) else ""
            if isinstance(record, dict) and not raw.strip():
                no_actions += 1
                continue
            try:
                actions = parse_charades_actions(field(record, "actions", csv_file, line_number))
            except ValueError as error:
                raise RowError(csv_file, line_number, "actions", f"{raw!r}: {error}") from error
            if any(class_index >= len(names) for class_index, _, _ in actions):
                raise RowError(csv_file, line_number, "actions", f"class index outside the {len(names)} classes")
            duration: dict[int, float] = defaultdict(float)
            for class_index, start, end in actions:
                duration[class_index] += max(0.0, end - start)
            answer_class = min(duration, key=lambda class_index: (-duration[class_index], class_index))
            videos.append((line_number, video_id, sorted(duration), answer_class))
    if no_actions:
        context.bad_rows.counts["charades_ego/no_actions"] += no_actions
        context.note(f"charades_ego: {no_actions} videos without actions skipped (no label)")
    encoder = options.text_encoder()
    positives = [[names[index] for index in positive] for _, _, positive, _ in videos]
    mined = mine_distractors(
        encoder,
        [names[answer] for *_, answer in videos],
        names,
        4,
        exclude=positives,
        protect=positives,
        near_duplicate=options.near_duplicate,
    )
    mcq, labels = [], []
    for (line_number, video_id, positive, answer_class), found, positive_names in zip(videos, mined, positives):
        with context.bad_rows.guard("charades_ego"):
            if len(found) < 4:
                raise RowError(
                    csv_file, line_number, "actions", f"only {len(found)} non-positive classes to choose from"
                )
            video = f"{CHARADES_VIDEO_DIR}/{video_id}.mp4"
            meta = {
                "video_id": video_id,
                "answer_class": answer_class,
                "positive_classes": positive,
                "answer_rule": "longest annotated positive class",
                "source_file": csv_file.name,
                "source_row": line_number,
                "distractors": provenance(
                    encoder.encoder_id,
                    "charades_ego: 4 most similar other classes, no positive class",
                    found,
                    excluded=positive_names,
                    near_duplicate=options.near_duplicate,
                ),
            }
            mcq.append(
                checked_row(
                    csv_file,
                    line_number,
                    sample_id=f"charades_ego/{video_id}",
                    task="charades_ego",
                    subset="test",
                    video=video,
                    question="Which action does the camera wearer perform in this video?",
                    options=[names[answer_class]] + [option.text for option in found],
                    answer_idx=0,
                    meta=meta,
                    shuffle_seed=options.shuffle_seed,
                )
            )
            labels.append(
                {
                    "video_id": video_id,
                    "video": video,
                    "positive_classes": positive,
                    "multi_hot": [int(index in positive) for index in range(len(names))],
                }
            )
    classes = [{"class_idx": index, "class_id": f"c{index:03d}", "name": name} for index, name in enumerate(names)]
    return {
        "charades_ego": (EGOBENCH_FEATURES, mcq),
        "charades_ego_labels": (CHARADES_LABEL_FEATURES, labels),
        "charades_ego_classes": (CHARADES_CLASS_FEATURES, classes),
    }


# --------------------------------------------------------------------------------------------- EgoMCQ
EGOMCQ_TYPES = {1: "inter", 2: "intra"}  # explicit: EgoVLP's egomcq_accuracy_metrics swaps these labels
EGOCLIP_VIDEO_DIR = "v1/full_scale"


def _clip(record: Any, path: Path, row: Any, name: str | None) -> dict[str, Any]:
    """An EgoClip-style clip ``{video_uid, clip_start, clip_end, text}`` (``name``: where it sits in the record)."""
    if isinstance(record, RowError):  # a CSV line read_csv could not split
        raise record
    if not isinstance(record, dict):
        raise RowError(path, row, name or "(row)", f"expected a clip object, got {record!r}")
    return {
        "video_uid": field(record, "video_uid", path, row, parent=name),
        "clip_start": field(record, "clip_start", path, row, number, parent=name),
        "clip_end": field(record, "clip_end", path, row, number, parent=name),
        "text": field(record, "clip_text", path, row, lambda value: text(clean_narration(text(value))), parent=name),
    }


def _egomcq_pool(
    options: EgoBenchOptions, questions: list[dict[str, Any]], context: BuildContext
) -> list[dict[str, Any]]:
    """Candidate narrations ``{video_uid, clip_start, clip_end, text}``: EgoMCQ's own clips, or an egoclip.csv."""
    if options.egomcq_pool is None:
        return [clip for question in questions for clip in question["choices"]]
    path = Path(options.egomcq_pool)
    pool = []
    for line_number, record in read_csv(path, ("video_uid", "clip_start", "clip_end", "clip_text"), delimiter="\t"):
        with context.bad_rows.guard("egomcq_pool"):
            pool.append(_clip(record, path, line_number, None))
    return pool


def _same_clip_texts(
    pool: list[dict[str, Any]], answer_clip: dict[str, Any], by_video: dict[str, list[int]]
) -> list[str]:
    """Pool narrations of the answer's own video whose window overlaps the answer clip (they may describe it too)."""
    return sorted(
        {
            pool[index]["text"]
            for index in by_video.get(answer_clip["video_uid"], [])
            if pool[index]["clip_start"] < answer_clip["clip_end"]
            and pool[index]["clip_end"] > answer_clip["clip_start"]
        }
    )


def read_egomcq(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """EgoMCQ ``egomcq.json`` -> ``egomcq`` (subset ``inter``/``intra``), a video -> text MCQ with
    ``options.egomcq_candidates`` options. Video: ``v1/full_scale/<video_uid>.mp4`` over the clip window."""
    path = find_file(root, ["egomcq.json", "EgoMCQ/egomcq.json"], "egomcq")
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise RowError(path, "-", "(json)", "expected an object keyed by question index")
    questions = []
    for key in sorted(payload, key=lambda item: (len(item), item)):
        record = payload[key]
        with context.bad_rows.guard("egomcq"):
            types = field(record, "types", path, key, integer)
            if types not in EGOMCQ_TYPES:
                raise RowError(path, key, "types", f"{types} is not 1 (inter-video) or 2 (intra-video)")
            choices_raw = record.get("choices")
            if not isinstance(choices_raw, dict) or not choices_raw:
                raise RowError(path, key, "choices", "expected an object {'0': clip, ...}")
            if not all(str(name).isdigit() for name in choices_raw):
                raise RowError(path, key, "choices", f"keys {sorted(choices_raw)} are not '0', '1', ...")
            choices = [_clip(choices_raw[name], path, key, f"choices.{name}") for name in sorted(choices_raw, key=int)]
            answer = field(record, "answer", path, key, integer)
            if not 0 <= answer < len(choices):
                raise RowError(path, key, "answer", f"{answer} outside the {len(choices)} choices")
            query = _clip(record.get("query"), path, key, "query")
            questions.append({"key": key, "types": types, "choices": choices, "answer": answer, "query": query})
    encoder = options.text_encoder()
    threshold = options.near_duplicate
    encoder.embed([clip["text"] for question in questions for clip in question["choices"]])  # one batched pass
    kept_originals, dropped = [], []
    for question in questions:
        answer_clip = question["choices"][question["answer"]]
        answer_text = answer_clip["text"]
        answer_vector = encoder.embed([answer_text])[0]
        originals: list[str] = []
        removed: list[str] = []
        for index, clip in enumerate(question["choices"]):
            if index == question["answer"]:
                continue
            candidate = clip["text"]
            duplicate = normalize_text(candidate) in {normalize_text(t) for t in [answer_text, *originals]}
            vectors = encoder.embed([candidate, *originals])
            near = float(vectors[0] @ answer_vector) >= threshold or (
                len(originals) > 0 and float((vectors[1:] @ vectors[0]).max()) >= threshold
            )
            (removed if duplicate or near else originals).append(candidate)
        kept_originals.append(originals)
        dropped.append(removed)
    pool = _egomcq_pool(options, questions, context)
    by_video: dict[str, list[int]] = defaultdict(list)
    for index, clip in enumerate(pool):
        by_video[clip["video_uid"]].append(index)
    wanted = [options.egomcq_candidates - 1 - len(originals) for originals in kept_originals]
    answer_clips = [question["choices"][question["answer"]] for question in questions]
    same_clip = [
        sorted({question["query"]["text"], *_same_clip_texts(pool, clip, by_video)})
        for question, clip in zip(questions, answer_clips)
    ]
    mined = mine_distractors(
        encoder,
        [clip["text"] for clip in answer_clips],
        sorted({clip["text"] for clip in pool}),
        wanted,
        exclude=same_clip,
        keep=kept_originals,
        near_duplicate=threshold,
    )
    rows = []
    for question, originals, removed, found, need, excluded in zip(
        questions, kept_originals, dropped, mined, wanted, same_clip
    ):
        with context.bad_rows.guard("egomcq"):
            if len(found) < need:
                raise RowError(path, question["key"], "choices", f"only {len(found)} of {need} extra candidates found")
            answer_clip = question["choices"][question["answer"]]
            subset = EGOMCQ_TYPES[question["types"]]
            meta = {
                "video_id": answer_clip["video_uid"],
                "types": question["types"],
                "mcq_type": subset,
                "query_text": question["query"]["text"],
                "original_candidates": originals,
                "dropped_original": removed,
                "source_file": path.name,
                "source_row": question["key"],
                "distractors": provenance(
                    encoder.encoder_id,
                    "egomcq: original candidates + most similar narrations to the answer, none from the answer's clip",
                    found,
                    excluded=excluded,
                    near_duplicate=threshold,
                    pool="egoclip.csv" if options.egomcq_pool else "egomcq.json texts",
                ),
            }
            rows.append(
                checked_row(
                    path,
                    question["key"],
                    sample_id=f"egomcq/{question['key']}",
                    task="egomcq",
                    subset=subset,
                    video=f"{EGOCLIP_VIDEO_DIR}/{answer_clip['video_uid']}.mp4",
                    start_sec=answer_clip["clip_start"],
                    end_sec=answer_clip["clip_end"],
                    question="Which sentence describes what the camera wearer does in this clip?",
                    options=[answer_clip["text"], *originals, *(option.text for option in found)],
                    answer_idx=0,
                    meta=meta,
                    shuffle_seed=options.shuffle_seed,
                )
            )
    return {"egomcq": (EGOBENCH_FEATURES, rows)}

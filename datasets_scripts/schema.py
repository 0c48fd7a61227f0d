"""Canonical row schemas of EgoIT, EgoBench and the initialization captions, and the helpers builders use to fill them.

The initialization stage reads :data:`CAPTION_FEATURES` rows for each vision tower: web image/video-text pairs
(``exo2ego data pretrain``) for the exo tower and EgoClip (``exo2ego data egoclip``, config ``captions``) for the
ego tower.

Every EgoIT source adapter and the synthetic world write rows of :data:`EGOIT_FEATURES`; every
EgoBench task writes rows of :data:`EGOBENCH_FEATURES`. Video paths are relative to the root the
user gave for that source (``--root <source>=DIR``); nothing here touches a video. The EgoBench tasks, and
the configs each writes, are declared in :mod:`datasets_scripts.egobench.tasks`.

EgoBench ``meta`` is a JSON object serialised as a string (sorted keys, so builds are byte-stable).
Keys used by the builders (all optional unless stated):

- ``video_id`` (always): the source's own video or clip id, used by the leakage report;
- ``source_file``, ``source_row``: where the sample came from in the user's download;
- ``option_seed``, ``source_order``: seed of :func:`frozen_option_order` and, per stored option, its
  index in the source's order (present whenever options were reordered);
- ``distractors``: provenance of mined options, ``{"encoder", "similarities", "excluded",
  "rule", ...}`` (see :mod:`datasets_scripts.distractors`);
- task-specific fields (``types``/``mcq_type`` for EgoMCQ, ``positive_classes`` for Charades-Ego,
  ``current_observation_frame`` for EgoPlan, ``video_index`` for EPIC-KITCHENS-100 MIR, ...).

``answer_idx`` is ``None`` when the answer is not released (EgoSchema full set) or the task is
open-ended (``options == []``, the reference answer is ``answer_text``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from datasets import Features, List, Value

from datasets_scripts.source_io import PathOutsideRootError, inside_root

OPTION_LETTERS = "ABCDEFGHIJ"

EGOIT_FEATURES = Features(
    {
        "id": Value("string"),  # "<source>/<source sample id>", unique over EgoIT
        "source": Value("string"),  # egtea | ssv2 | egotimeqa | openeqa | egoexolearn | egoclip | synthetic
        "task": Value("string"),  # action_recognition | open_qa | captioning | mcq
        "split": Value("string"),  # the source's own split name
        "video": Value("string"),  # path relative to the source root
        "video_start_sec": Value("float64"),  # None: whole file
        "video_end_sec": Value("float64"),
        "instruction_id": Value("int32"),  # index into that source's template list
        "instruction": Value("string"),
        "question": Value("string"),  # may be "" when the instruction is the whole prompt
        "answer": Value("string"),
        "options": List(Value("string")),  # None unless the row is multiple choice
    }
)

CAPTION_FEATURES = Features(
    {
        "id": Value("string"),  # "<source>/<source id>", unique over the folder
        "source": Value("string"),  # videollama2 | llava | egoclip
        "media_type": Value("string"),  # video | image (an image is repeated to every frame, as VideoLLaMA2 does)
        "media": Value("string"),  # path relative to the source root
        "start_sec": Value("float64"),  # None: the whole file
        "end_sec": Value("float64"),
        "prompt": Value("string"),  # the user turn without its media tag; "" = the training's clip_prompt
        "caption": Value("string"),  # the target text
    }
)
CAPTION_MEDIA_TYPES = ("video", "image")

EGOBENCH_FEATURES = Features(
    {
        "sample_id": Value("string"),  # "<task>/<source id>", unique over EgoBench
        "task": Value(
            "string"
        ),  # egoschema | qaego4d | egotaskqa | charades_ego | epic_mir | egoplan | vlnqa | egomcq | synthetic
        "subset": Value("string"),  # e.g. subset/full, closed/open, direct/indirect, inter/intra, video
        "video": Value("string"),  # path relative to the task's source root
        "start_sec": Value("float64"),  # None: from the start of the file
        "end_sec": Value("float64"),  # None: to the end of the file
        "question": Value("string"),
        "options": List(Value("string")),  # frozen order; [] for open-ended and retrieval rows
        "answer_idx": Value("int32"),  # index into options; None when unknown or open-ended
        "answer_text": Value("string"),
        "meta": Value("string"),  # JSON object, see module docstring
    }
)


# Side tables of the EgoBench tasks that are not multiple choice.
CHARADES_LABEL_FEATURES = Features(
    {
        "video_id": Value("string"),
        "video": Value("string"),
        "positive_classes": List(Value("int32")),  # sorted class indices 0..156
        "multi_hot": List(Value("int8")),  # length = number of classes (157)
    }
)
CHARADES_CLASS_FEATURES = Features({"class_idx": Value("int32"), "class_id": Value("string"), "name": Value("string")})
MIR_SENTENCE_FEATURES = Features(
    {
        "sentence_index": Value("int32"),  # column of the relevance matrix
        "narration_id": Value("string"),  # the sentence CSV's index column
        "sentence": Value("string"),
        "verb_class": Value("int32"),
        "noun_classes": List(Value("int32")),
    }
)
# The relevance matrix (videos x sentences) stored sparsely: only entries > 0.
MIR_RELEVANCE_FEATURES = Features(
    {"video_index": Value("int32"), "sentence_index": Value("int32"), "relevance": Value("float32")}
)


def _sort_key(seed: int, sample_id: str, index: int) -> bytes:
    return hashlib.sha256(f"{seed}\x1f{sample_id}\x1f{index}".encode()).digest()


def frozen_option_order(
    sample_id: str, options: Sequence[str], answer_idx: int | None, seed: int = 0
) -> tuple[list[str], int | None]:
    """Reorder ``options`` by a seeded hash of ``sample_id`` and follow the answer.

    The permutation depends only on ``(seed, sample_id, len(options))`` (SHA-256, no RNG state), so
    it is the same on every machine and Python version. Returns ``(reordered options, new answer
    index)``; ``answer_idx=None`` (answer unknown) stays ``None``.
    """
    order = sorted(range(len(options)), key=lambda index: _sort_key(seed, sample_id, index))
    reordered = [options[index] for index in order]
    new_answer_idx = None if answer_idx is None else order.index(answer_idx)
    return reordered, new_answer_idx


def seeded_choice(seed: int, key: str, n: int) -> int:
    """A deterministic index in ``range(n)`` from a seeded hash of ``key`` (e.g. a template id)."""
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n


def dumps_meta(meta: dict[str, Any]) -> str:
    """Serialise ``meta`` the way every builder does (sorted keys, compact, UTF-8 kept)."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def loads_meta(meta: str | None) -> dict[str, Any]:
    """Parse a row's ``meta`` string (``None`` or ``""`` give ``{}``)."""
    return json.loads(meta) if meta else {}


def caption_row(
    *,
    id: str,
    source: str,
    media_type: str,
    media: str,
    caption: str,
    prompt: str = "",
    start_sec: float | None = None,
    end_sec: float | None = None,
) -> dict[str, Any]:
    """One initialization caption row (a dict with exactly the keys of :data:`CAPTION_FEATURES`)."""
    if media_type not in CAPTION_MEDIA_TYPES:
        raise ValueError(f"media_type must be one of {CAPTION_MEDIA_TYPES}, got {media_type!r}")
    return {
        "id": id,
        "source": source,
        "media_type": media_type,
        "media": media,
        "start_sec": None if start_sec is None else float(start_sec),
        "end_sec": None if end_sec is None else float(end_sec),
        "prompt": prompt,
        "caption": caption,
    }


def _check_video_path(row_id: str, video: str) -> None:
    try:
        inside_root(video)
    except PathOutsideRootError as error:
        raise PathOutsideRootError(f"{row_id}: {error}") from None


def egoit_row(
    *,
    id: str,
    source: str,
    task: str,
    split: str,
    video: str,
    instruction_id: int,
    instruction: str,
    question: str,
    answer: str,
    video_start_sec: float | None = None,
    video_end_sec: float | None = None,
    options: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One canonical EgoIT row (a dict with exactly the keys of :data:`EGOIT_FEATURES`); a ``video`` path that
    leaves its root raises :class:`~datasets_scripts.source_io.PathOutsideRootError`."""
    _check_video_path(id, video)
    return {
        "id": id,
        "source": source,
        "task": task,
        "split": split,
        "video": video,
        "video_start_sec": None if video_start_sec is None else float(video_start_sec),
        "video_end_sec": None if video_end_sec is None else float(video_end_sec),
        "instruction_id": int(instruction_id),
        "instruction": instruction,
        "question": question,
        "answer": answer,
        "options": None if options is None else list(options),
    }


def egobench_row(
    *,
    sample_id: str,
    task: str,
    subset: str,
    video: str,
    question: str,
    options: Sequence[str],
    answer_idx: int | None,
    answer_text: str | None = None,
    start_sec: float | None = None,
    end_sec: float | None = None,
    meta: dict[str, Any] | None = None,
    shuffle_seed: int | None = 0,
) -> dict[str, Any]:
    """One canonical EgoBench row; multiple-choice options are put in their frozen order.

    ``options`` are given in source order with the answer at ``answer_idx``; with
    ``shuffle_seed=None`` that order is kept (sources whose order is part of the benchmark).
    ``answer_text`` defaults to ``options[answer_idx]``. A ``video`` path that leaves its root raises
    :class:`~datasets_scripts.source_io.PathOutsideRootError`.
    """
    _check_video_path(sample_id, video)
    options = list(options)
    if answer_idx is not None and options and not 0 <= answer_idx < len(options):
        raise ValueError(f"{sample_id}: answer_idx {answer_idx} outside {len(options)} options")
    if len(set(options)) != len(options):
        raise ValueError(f"{sample_id}: duplicate options {options}")
    if answer_text is None and answer_idx is not None:
        answer_text = options[answer_idx]
    meta = dict(meta or {})
    if options and shuffle_seed is not None:
        source_options = options
        options, answer_idx = frozen_option_order(sample_id, options, answer_idx, shuffle_seed)
        meta["option_seed"] = shuffle_seed
        # Stored option i was option source_order[i] in the source (maps predictions back, e.g. EgoSchema).
        meta["source_order"] = [source_options.index(option) for option in options]
    return {
        "sample_id": sample_id,
        "task": task,
        "subset": subset,
        "video": video,
        "start_sec": None if start_sec is None else float(start_sec),
        "end_sec": None if end_sec is None else float(end_sec),
        "question": question,
        "options": options,
        "answer_idx": answer_idx,
        "answer_text": answer_text,
        "meta": dumps_meta(meta),
    }


def format_options(options: Sequence[str]) -> str:
    """``"A. first\\nB. second..."``: the option block used in prompts."""
    return "\n".join(f"{OPTION_LETTERS[index]}. {option}" for index, option in enumerate(options))

"""EPIC-KITCHENS-100 multi-instance retrieval: video rows, sentence rows and the relevance matrix.

The relevance matrix is computed from the CSVs' classes by the official definition
(``mwray/Joint-Part-of-Speech-Embeddings: src/scripts/create_relevancy_files.py``), never read from
the released ``.pkl`` (downloaded pickles are never unpickled)::

    R[i, j] = (verb_iou + noun_iou) / 2
    verb_iou = 1 if verb_class(video i) == verb_class(sentence j) else 0
    noun_iou = |N_i ∩ N_j| / |N_i ∪ N_j|   over the sets of all_noun_classes

Rows follow ``EPIC_100_retrieval_test.csv`` (videos), columns ``EPIC_100_retrieval_test_sentence.csv``
(one representative ``narration_id`` per unique sentence; its classes come from that narration's video row).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from datasets_scripts.build_command import BuildContext
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables
from datasets_scripts.schema import EGOBENCH_FEATURES, MIR_RELEVANCE_FEATURES, MIR_SENTENCE_FEATURES, egobench_row
from datasets_scripts.source_io import RowError, field, find_file, int_list, integer, read_csv

VIDEO_COLUMNS = (
    "narration_id",
    "participant_id",
    "video_id",
    "start_timestamp",
    "stop_timestamp",
    "narration",
    "verb_class",
    "all_noun_classes",
)


def timestamp_seconds(value: str) -> float:
    """``"HH:MM:SS.ff"`` -> seconds."""
    hours, minutes, seconds = value.strip().split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def relevance_matrix(
    video_verbs: np.ndarray,
    video_nouns: list[frozenset[int]],
    sentence_verbs: np.ndarray,
    sentence_nouns: list[frozenset[int]],
) -> np.ndarray:
    """Official graded relevance, float32 ``(num_videos, num_sentences)`` (see module docstring).

    Noun IoU is computed once per pair of *distinct* noun sets and then expanded, as the official
    script does, so memory stays at one ``(num_videos, num_sentences)`` matrix.
    """
    verb_iou = (np.asarray(video_verbs)[:, None] == np.asarray(sentence_verbs)[None, :]).astype(np.float32)
    video_sets = sorted(set(video_nouns), key=sorted)
    sentence_sets = sorted(set(sentence_nouns), key=sorted)
    pair_iou = np.zeros((len(video_sets), len(sentence_sets)), dtype=np.float32)
    for i, a in enumerate(video_sets):
        for j, b in enumerate(sentence_sets):
            union = len(a | b)
            pair_iou[i, j] = len(a & b) / union if union else 0.0
    video_index = {noun_set: i for i, noun_set in enumerate(video_sets)}
    sentence_index = {noun_set: j for j, noun_set in enumerate(sentence_sets)}
    noun_iou = pair_iou[np.array([video_index[s] for s in video_nouns])][
        :, np.array([sentence_index[s] for s in sentence_nouns])
    ]
    return (verb_iou + noun_iou) / 2


def dense_relevance(relevance_rows, num_videos: int, num_sentences: int) -> np.ndarray:
    """Rebuild the dense matrix from the sparse ``epic_mir_relevance`` rows (entries > 0)."""
    matrix = np.zeros((num_videos, num_sentences), dtype=np.float32)
    for row in relevance_rows:
        matrix[row["video_index"], row["sentence_index"]] = row["relevance"]
    return matrix


def _sentence_columns(path: Path) -> tuple[str, str]:
    """(id column, text column) of the sentence CSV: ids are narration ids, text is ``sentence``/``narration``."""
    with open(path, encoding="utf-8") as handle:
        header = [name.strip() for name in handle.readline().rstrip("\n").split(",")]
    id_column = next((name for name in ("narration_id", "index") if name in header), header[0] if header else "")
    text_column = next((name for name in ("sentence", "narration") if name in header), "")
    if not text_column or not id_column:
        raise RowError(path, 1, "sentence", f"header {header} has no narration id and sentence/narration columns")
    return id_column, text_column


def read_epic_mir(root: Path, context: BuildContext, options: EgoBenchOptions) -> TaskTables:
    """``epic_mir`` (video rows, canonical schema; ``meta["video_index"]`` = matrix row),
    ``epic_mir_sentences`` (``sentence_index`` = matrix column) and ``epic_mir_relevance`` (entries > 0).
    Videos: ``<participant_id>/videos/<video_id>.MP4`` over ``[start_timestamp, stop_timestamp]``."""
    prefixes = ["retrieval_annotations/", "epic-kitchens-100-annotations/retrieval_annotations/", ""]
    video_file = find_file(root, [f"{p}EPIC_100_retrieval_test.csv" for p in prefixes], "epic_mir")
    sentence_file = find_file(root, [f"{p}EPIC_100_retrieval_test_sentence.csv" for p in prefixes], "epic_mir")
    videos, by_narration = [], {}
    for line_number, record in read_csv(video_file, VIDEO_COLUMNS):
        with context.bad_rows.guard("epic_mir"):
            narration_id = field(record, "narration_id", video_file, line_number)
            if narration_id in by_narration:
                raise RowError(video_file, line_number, "narration_id", f"{narration_id} appears twice")
            try:
                start = timestamp_seconds(field(record, "start_timestamp", video_file, line_number))
                end = timestamp_seconds(field(record, "stop_timestamp", video_file, line_number))
            except ValueError as error:
                raise RowError(
                    video_file, line_number, "start_timestamp/stop_timestamp", f"not HH:MM:SS.ff: {error}"
                ) from error
            video = {
                "narration_id": narration_id,
                "participant_id": field(record, "participant_id", video_file, line_number),
                "video_id": field(record, "video_id", video_file, line_number),
                "start": start,
                "end": end,
                "narration": field(record, "narration", video_file, line_number),
                "verb_class": field(record, "verb_class", video_file, line_number, integer),
                "noun_classes": sorted(set(field(record, "all_noun_classes", video_file, line_number, int_list))),
            }
            by_narration[narration_id] = video
            videos.append(video)
    id_column, text_column = _sentence_columns(sentence_file)
    sentences = []
    for line_number, record in read_csv(sentence_file, (id_column, text_column)):
        with context.bad_rows.guard("epic_mir"):
            narration_id = field(record, id_column, sentence_file, line_number)
            if narration_id not in by_narration:
                raise RowError(
                    sentence_file, line_number, id_column, f"{narration_id} is not a narration_id of {video_file.name}"
                )
            source = by_narration[narration_id]
            sentences.append(
                {
                    "sentence_index": len(sentences),
                    "narration_id": narration_id,
                    "sentence": field(record, text_column, sentence_file, line_number),
                    "verb_class": source["verb_class"],
                    "noun_classes": source["noun_classes"],
                }
            )
    relevance = relevance_matrix(
        np.array([v["verb_class"] for v in videos]),
        [frozenset(v["noun_classes"]) for v in videos],
        np.array([s["verb_class"] for s in sentences]),
        [frozenset(s["noun_classes"]) for s in sentences],
    )
    rows = [
        egobench_row(
            sample_id=f"epic_mir/{v['narration_id']}",
            task="epic_mir",
            subset="video",
            video=f"{v['participant_id']}/videos/{v['video_id']}.MP4",
            start_sec=v["start"],
            end_sec=v["end"],
            question="",
            options=[],
            answer_idx=None,
            answer_text=v["narration"],
            meta={
                "video_index": index,
                "video_id": v["video_id"],
                "narration_id": v["narration_id"],
                "verb_class": v["verb_class"],
                "noun_classes": v["noun_classes"],
                "relevance_shape": list(relevance.shape),
                "source_file": video_file.name,
            },
        )
        for index, v in enumerate(videos)
    ]
    video_index, sentence_index = np.nonzero(relevance)  # row-major order: stable bytes
    # Millions of entries: built column-wise, never as a list of dicts.
    sparse = datasets.Dataset.from_dict(
        {
            "video_index": video_index.astype(np.int32),
            "sentence_index": sentence_index.astype(np.int32),
            "relevance": relevance[video_index, sentence_index],
        },
        features=MIR_RELEVANCE_FEATURES,
    )
    context.note(
        f"epic_mir: relevance {relevance.shape[0]} videos x {relevance.shape[1]} sentences, "
        f"{len(sparse)} entries > 0, {int((relevance == 1).sum())} equal to 1"
    )
    return {
        "epic_mir": (EGOBENCH_FEATURES, rows),
        "epic_mir_sentences": (MIR_SENTENCE_FEATURES, sentences),
        "epic_mir_relevance": (MIR_RELEVANCE_FEATURES, sparse),
    }

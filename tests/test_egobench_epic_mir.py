"""EPIC-KITCHENS-100 MIR: video rows, sentence rows and the relevance matrix from the CSVs' classes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from test_egobench import load  # cache-isolated load_dataset (sibling test module)

from datasets_scripts.egobench.build import build_egobench
from datasets_scripts.egobench.epic_mir import dense_relevance, relevance_matrix
from datasets_scripts.schema import loads_meta
from datasets_scripts.source_io import RowError

HEADER = [
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
]
# (narration_id, narration, verb, verb_class, nouns, noun_classes)
CLIPS = [
    ("P01_01_0", "open fridge", "open", 1, ["fridge"], [10]),
    ("P01_01_1", "open fridge door", "open", 1, ["fridge", "door"], [10, 20]),
    ("P01_01_2", "take cup", "take", 2, ["cup"], [30]),
    ("P02_03_7", "take cup and lid", "take", 2, ["cup", "lid"], [30, 40]),
    ("P02_03_8", "wash cup", "wash", 3, ["cup"], [30]),
]
SENTENCES = ["P01_01_0", "P01_01_2", "P02_03_8"]  # one representative narration per unique sentence
# R = (verb match + noun-set IoU) / 2, by hand.
EXPECTED = np.array(
    [[1.0, 0.0, 0.0], [0.75, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.75, 0.25], [0.0, 0.5, 1.0]], dtype=np.float32
)


def write_epic(root: Path, noun_classes_override: str | None = None, extra_sentence: str | None = None) -> None:
    folder = root / "retrieval_annotations"
    folder.mkdir(parents=True)
    with open(folder / "EPIC_100_retrieval_test.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for index, (narration_id, narration, verb, verb_class, nouns, noun_classes) in enumerate(CLIPS):
            participant, video = narration_id.split("_")[0], "_".join(narration_id.split("_")[:2])
            classes = str(noun_classes) if noun_classes_override is None or index != 3 else noun_classes_override
            writer.writerow(
                [
                    narration_id,
                    participant,
                    video,
                    "00:00:01.000",
                    f"00:01:0{index}.50",
                    f"00:01:1{index}.25",
                    100 * index,
                    100 * index + 50,
                    narration,
                    verb,
                    verb_class,
                    nouns[0],
                    noun_classes[0],
                    str(nouns),
                    classes,
                ]
            )
    with open(folder / "EPIC_100_retrieval_test_sentence.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["narration_id", "narration"])
        narrations = {clip[0]: clip[1] for clip in CLIPS}
        for narration_id in SENTENCES + ([extra_sentence] if extra_sentence else []):
            writer.writerow([narration_id, narrations.get(narration_id, "unknown sentence")])


def test_relevance_matrix_shape_and_values(tmp_path):
    root = tmp_path / "epic"
    write_epic(root)
    out = tmp_path / "bench"
    build_egobench({"epic_mir": root}, out)
    videos = load(out, "epic_mir")
    sentences = load(out, "epic_mir_sentences")
    sparse = load(out, "epic_mir_relevance")
    assert (len(videos), len(sentences)) == (5, 3)
    matrix = dense_relevance(sparse, len(videos), len(sentences))
    assert matrix.shape == (5, 3)
    np.testing.assert_allclose(matrix, EXPECTED)
    assert len(sparse) == int((EXPECTED > 0).sum())

    first = videos[3]
    meta = loads_meta(first["meta"])
    assert meta["video_index"] == 3 and meta["noun_classes"] == [30, 40] and meta["relevance_shape"] == [5, 3]
    assert (first["video"], first["start_sec"], first["end_sec"]) == ("P02/videos/P02_03.MP4", 63.5, 73.25)
    assert first["answer_text"] == "take cup and lid" and first["options"] == [] and first["answer_idx"] is None
    assert sentences[1] == {
        "sentence_index": 1,
        "narration_id": "P01_01_2",
        "sentence": "take cup",
        "verb_class": 2,
        "noun_classes": [30],
    }


def test_relevance_matrix_function_matches_official_definition():
    rng = np.random.default_rng(0)
    verbs_v, verbs_s = rng.integers(0, 4, 40), rng.integers(0, 4, 25)
    nouns_v = [frozenset(rng.choice(6, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(40)]
    nouns_s = [frozenset(rng.choice(6, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(25)]
    matrix = relevance_matrix(verbs_v, nouns_v, verbs_s, nouns_s)
    # Element-wise, as the official script's double loop does it.
    for i in range(40):
        for j in range(25):
            iou = len(nouns_v[i] & nouns_s[j]) / len(nouns_v[i] | nouns_s[j])
            assert matrix[i, j] == pytest.approx(((verbs_v[i] == verbs_s[j]) + iou) / 2)


def test_bad_rows_name_file_row_field(tmp_path):
    root = tmp_path / "epic"
    write_epic(root, noun_classes_override="[30, 40")
    with pytest.raises(
        RowError, match=r"EPIC_100_retrieval_test.csv: row 5: field 'all_noun_classes': bad value '\[30, 40'"
    ):
        build_egobench({"epic_mir": root}, tmp_path / "out")
    root2 = tmp_path / "epic2"
    write_epic(root2, extra_sentence="P09_99_1")
    with pytest.raises(
        RowError, match=r"EPIC_100_retrieval_test_sentence.csv: row 5: field 'narration_id': P09_99_1 is not"
    ):
        build_egobench({"epic_mir": root2}, tmp_path / "out")
    info = build_egobench({"epic_mir": root2}, tmp_path / "out", skip_bad_rows=True)
    assert (
        info["skips"]["by_source_field"] == {"epic_mir/narration_id": 1} and info["counts"]["epic_mir_sentences"] == 3
    )

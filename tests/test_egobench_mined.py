"""EgoBench tasks with SentenceBERT-mined distractors (EgoTaskQA, Charades-Ego, EgoMCQ), real MiniLM."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from test_egobench import load  # cache-isolated load_dataset (sibling test module)

from datasets_scripts.distractors import load_text_encoder, normalize_text
from datasets_scripts.egobench.build import build_egobench
from datasets_scripts.egobench.options import EgoBenchOptions, clean_narration
from datasets_scripts.schema import CHARADES_LABEL_FEATURES, loads_meta
from datasets_scripts.source_io import RowError, SourceFileError

ANSWER_SET = [
    "cup",
    "knife",
    "plate",
    "fridge",
    "drawer",
    "table",
    "sink",
    "microwave",
    "open",
    "closed",
    "2",
    "3",
    "pick up cup",
    "put down cup",
    "wash plate",
    "cut apple",
    "open fridge",
    "close drawer",
    "yes",
    "no",
]


@pytest.fixture(scope="session")
def encoder():
    """The bundled all-MiniLM-L6-v2, loaded once per test session (shared with the other test modules)."""
    return load_text_encoder()


def write_egotaskqa(root: Path, frames: bool = False) -> None:
    root.mkdir(parents=True)
    (root / "answer_set.txt").write_text("\n".join(ANSWER_SET) + "\n")
    base = {
        "type": ["descriptive"],
        "category": ["object"],
        "semantic": "object",
        "structural": "query",
        "program": "query([obj], ...)",
        "reasoning_type": "descriptive$object$object$query$direct",
    }
    direct = [
        {
            **base,
            "question": "What did the person pick up first?",
            "answer": "cup",
            "interval": "s1_1|fpv1|10|14",
            "video_id": "s1_1|fpv1|10|14",
            "question_id": "d-1",
            "reference": "direct",
        },
        {
            **base,
            "question": "Is the fridge open after the action?",
            "answer": "yes",
            "interval": "s1_1|fpv1|14|30",
            "video_id": "s1_1|fpv1|14|30",
            "question_id": "d-2",
            "reference": "direct",
        },
        {
            **base,
            "question": "What action did the person do after opening the fridge?",
            "answer": "pick up cup",
            "interval": "s2_3|fpv2|0|50",
            "video_id": "s2_3|fpv2|0|50",
            "question_id": "d-3",
            "reference": "direct",
        },
    ]
    indirect = [
        {
            **base,
            "question": "How many plates are washed?",
            "answer": "2",
            "interval": "s2_3|fpv2|50|90",
            "video_id": "s2_3|fpv2|50|90",
            "question_id": "i-1",
            "reference": "indirect",
        },
        {
            **base,
            "question": "Is the drawer closed at the end?",
            "answer": "no",
            "interval": "s2_3|fpv2|90|99",
            "video_id": "s2_3|fpv2|90|99",
            "question_id": "i-2",
            "reference": "indirect",
        },
    ]
    for subset, records in (("direct", direct), ("indirect", indirect)):
        (root / subset).mkdir()
        (root / subset / "test_qas.json").write_text(json.dumps(records))
    if frames:
        from PIL import Image

        folder = root / "videos" / "s1_1" / "fpv1"
        folder.mkdir(parents=True)
        for number in range(1, 40):
            Image.fromarray(np.full((24, 32, 3), number * 5, dtype=np.uint8)).save(folder / f"img_{number:05d}.jpg")


VERBS = [
    "Holding",
    "Opening",
    "Closing",
    "Putting",
    "Taking",
    "Throwing",
    "Tidying",
    "Washing",
    "Sitting on",
    "Walking through",
    "Pouring",
    "Eating",
    "Drinking from",
]
OBJECTS = [
    "a book",
    "a door",
    "a cup",
    "a laptop",
    "some clothes",
    "a towel",
    "a box",
    "a phone",
    "a blanket",
    "a pillow",
    "a sandwich",
    "a window",
    "a broom",
]
CHARADES_HEADER = [
    "id",
    "subject",
    "scene",
    "quality",
    "relevance",
    "verified",
    "script",
    "objects",
    "descriptions",
    "actions",
    "length",
    "egocentric",
    "charades_video",
]


def charades_names() -> list[str]:
    return [f"{verb} {obj}" for verb in VERBS for obj in OBJECTS][:157]


def write_charades(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "Charades_v1_classes.txt").write_text(
        "".join(f"c{index:03d} {name}\n" for index, name in enumerate(charades_names()))
    )
    rows = [
        [
            "46GP8",
            "HR43",
            "Kitchen",
            "6",
            "7",
            "Yes",
            "A person holds a cup, then drinks.",
            "cup;table",
            "A person is holding a cup, drinking from it.",
            "c002 0.00 3.10;c148 1.00 2.00",
            "30.03",
            "Yes",
            "46GP8",
        ],
        [
            "N11GT",
            "CP09",
            "Bedroom",
            "5",
            "7",
            "Yes",
            "A person opens a door.",
            "door",
            "Opening the door.",
            "c014 2.00 9.50;c001 0.50 2.50;c015 1.0 3.0",
            "12.00",
            "Yes",
            "N11GT",
        ],
        [
            "ZZ0EM",
            "AB12",
            "Garage",
            "7",
            "6",
            "Yes",
            "Nothing happens.",
            "",
            "A still scene.",
            "",
            "8.00",
            "Yes",
            "ZZ0EM",
        ],
    ]
    with open(root / "CharadesEgo_v1_test_only1st.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CHARADES_HEADER)
        writer.writerows(rows)


def clip(video_uid: str, start: float, text: str) -> dict:
    return {
        "video_uid": video_uid,
        "video_dur": 600.0,
        "narration_source": "narration_pass_1",
        "narration_ind": 1,
        "narration_time": start + 0.4,
        "clip_start": start,
        "clip_end": start + 0.8,
        "clip_text": text,
        "tag_verb": "[3]",
        "tag_noun": "[10]",
    }


def write_egomcq(root: Path, bad_type: bool = False) -> None:
    root.mkdir(parents=True)
    inter = {
        "query": clip("vid-a", 10.0, "#C C opens the fridge door"),
        "choices": {
            "0": clip("vid-b", 5.0, "#C C cuts an onion on the board"),
            "1": clip("vid-c", 8.0, "#C C washes a plate in the sink"),
            "2": clip("vid-a", 10.0, "#C C opens the fridge door"),
            "3": clip("vid-d", 3.0, "#C C folds a shirt"),
            "4": clip("vid-e", 7.0, "#O a man walks to the car"),
        },
        "answer": 2,
        "types": 1,
    }
    intra = {
        "query": clip("vid-f", 40.0, "#C C picks the knife from the table"),
        "choices": {
            "0": clip("vid-f", 12.0, "#C C picks the knife from the table"),  # same text, other time
            "1": clip("vid-f", 40.0, "#C C picks the knife from the table"),
            "2": clip("vid-f", 55.0, "#C C puts the knife in the sink"),
            "3": clip("vid-f", 70.0, "#C C stirs the soup"),
            "4": clip("vid-f", 90.0, "#C C opens the tap #unsure"),
        },
        "answer": 1,
        "types": 3 if bad_type else 2,
    }
    (root / "egomcq.json").write_text(json.dumps({"0": inter, "1": intra}))


POOL_TEXTS = [
    "#C C opens the fridge",
    "#C C closes the fridge door",
    "#C C opens the cupboard door",
    "#C C takes milk from the fridge",
    "#C C picks a knife",
    "#C C holds the knife",
    "#C C drops the knife on the table",
    "#C C cuts a tomato",
    "#C C washes the knife",
    "#C C dries a plate",
    "#C C stirs the pot",
    "#C C pours water into a glass",
    "#C C folds a towel",
    "#C C walks to the door",
    "#O a woman picks a cup",
    "#C C turns off the tap",
    "#C C opens a drawer",
    "#C C puts the bowl in the fridge",
    "#C C throws the peel in the bin",
    "#C C picks the spoon from the table",
    "#C C places the knife on the counter",
    "#C C opens the oven",
]


SAME_MOMENT = "#C C takes the knife off the table"


def write_egoclip_pool(path: Path) -> None:
    header = [
        "clip_idx",
        "video_uid",
        "video_dur",
        "narration_source",
        "narration_ind",
        "narration_time",
        "clip_start",
        "clip_end",
        "clip_text",
        "tag_verb",
        "tag_noun",
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(header)
        for index, text in enumerate(POOL_TEXTS):
            writer.writerow(
                [
                    index,
                    f"pool-{index % 5}",
                    900.0,
                    "narration_pass_1",
                    index,
                    3.0 + index,
                    2.5 + index,
                    3.5 + index,
                    text,
                    "[1]",
                    "[2]",
                ]
            )
        # The second narration pass of the intra answer's own moment: it describes the same clip, so never a
        # distractor.
        writer.writerow([99, "vid-f", 900.0, "narration_pass_2", 7, 40.4, 40.1, 40.7, SAME_MOMENT, "[1]", "[2]"])


# --------------------------------------------------------------------------------------------- tests
def test_egotaskqa_five_way_and_binary(tmp_path, encoder):
    root = tmp_path / "egotaskqa"
    write_egotaskqa(root, frames=True)
    out = tmp_path / "bench"
    build_egobench({"egotaskqa": root}, out, options=EgoBenchOptions(encoder=encoder, make_egotaskqa_clips=True))
    direct, indirect = load(out, "egotaskqa_direct"), load(out, "egotaskqa_indirect")
    assert (len(direct), len(indirect)) == (3, 2)
    for row in [*direct, *indirect]:
        meta = loads_meta(row["meta"])
        answer = row["options"][row["answer_idx"]]
        assert answer == row["answer_text"]
        if answer in ("yes", "no"):
            assert meta["binary"] and sorted(row["options"]) == ["no", "yes"]
            continue
        assert len(row["options"]) == 5 and len(set(row["options"])) == 5
        mined = meta["distractors"]["mined"]
        assert sorted(mined) == sorted(option for option in row["options"] if option != answer)
        assert answer not in mined and not {"yes", "no"} & set(mined) and set(mined) <= set(ANSWER_SET)
        sims = meta["distractors"]["similarities"]
        assert sims == sorted(sims, reverse=True) and max(sims) < 0.9
        assert "all-MiniLM-L6-v2" in meta["distractors"]["encoder"]
    first = direct[0]
    assert (
        first["video"] == "clips/s1_1_fpv1_10_14.mp4" and loads_meta(first["meta"])["frame_dir"] == "videos/s1_1/fpv1"
    )
    # The mined distractors are the most similar wrong answers: recompute the ranking independently.
    answer_vector = encoder.embed(["cup"])[0]
    pool = [a for a in ANSWER_SET if a not in ("yes", "no", "cup")]
    expected = [pool[i] for i in np.argsort(-(encoder.embed(pool) @ answer_vector), kind="stable")[:4]]
    assert loads_meta(first["meta"])["distractors"]["mined"] == expected
    import av

    with av.open(str(root / first["video"])) as container:  # frames img_00011..img_00014 -> 4 frames
        assert sum(1 for _ in container.decode(video=0)) == 4


def test_charades_ego_mcq_excludes_all_positives_and_labels(tmp_path, encoder):
    root = tmp_path / "charades"
    write_charades(root)
    out = tmp_path / "bench"
    info = build_egobench({"charades_ego": root}, out, options=EgoBenchOptions(encoder=encoder))
    names = charades_names()
    mcq = {row["sample_id"]: row for row in load(out, "charades_ego")}
    assert sorted(mcq) == ["charades_ego/46GP8", "charades_ego/N11GT"]
    assert info["skips"]["by_source_field"] == {"charades_ego/no_actions": 1}
    row = mcq["charades_ego/N11GT"]
    assert row["options"][row["answer_idx"]] == names[14]  # the longest positive (7.5 s)
    positives = {names[1], names[14], names[15]}
    assert len(row["options"]) == 5 and not positives & (set(row["options"]) - {names[14]})
    assert loads_meta(row["meta"])["distractors"]["excluded"] == sorted(positives)
    for row in mcq.values():
        assert row["video"] == f"CharadesEgo_v1_480/{row['sample_id'].split('/')[1]}.mp4"
        assert len(set(row["options"])) == 5

    labels = {row["video_id"]: row for row in load(out, "charades_ego_labels")}
    assert load(out, "charades_ego_labels").features == CHARADES_LABEL_FEATURES
    assert labels["N11GT"]["positive_classes"] == [1, 14, 15] and labels["46GP8"]["positive_classes"] == [2, 148]
    hot = np.array(labels["N11GT"]["multi_hot"])
    assert hot.shape == (157,) and hot.sum() == 3 and hot[[1, 14, 15]].all()
    classes = load(out, "charades_ego_classes")
    assert len(classes) == 157 and classes[148] == {"class_idx": 148, "class_id": "c148", "name": names[148]}


def test_egomcq_inter_intra_and_ten_candidates(tmp_path, encoder):
    root = tmp_path / "egomcq"
    write_egomcq(root)
    write_egoclip_pool(root / "egoclip.csv")
    out = tmp_path / "bench"
    build_egobench(
        {"egomcq": root}, out, options=EgoBenchOptions(encoder=encoder, egomcq_pool=str(root / "egoclip.csv"))
    )
    rows = {row["sample_id"]: row for row in load(out, "egomcq")}
    inter, intra = rows["egomcq/0"], rows["egomcq/1"]
    assert (inter["subset"], intra["subset"]) == ("inter", "intra")  # types 1 -> inter, 2 -> intra
    assert (loads_meta(inter["meta"])["types"], loads_meta(intra["meta"])["types"]) == (1, 2)
    assert inter["options"][inter["answer_idx"]] == "C opens the fridge door"
    assert intra["options"][intra["answer_idx"]] == "C picks the knife from the table"
    assert (intra["video"], intra["start_sec"], intra["end_sec"]) == ("v1/full_scale/vid-f.mp4", 40.0, 40.8)
    for row in (inter, intra):
        options = row["options"]
        others = [option for index, option in enumerate(options) if index != row["answer_idx"]]
        assert row["answer_text"] == options[row["answer_idx"]] and row["answer_text"] not in others
        assert len(options) == 10 and len({normalize_text(o) for o in options}) == 10
        vectors = encoder.embed(options)
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, 0)
        assert similarity.max() < 0.9  # no near duplicate of the answer, nor among the options
        meta = loads_meta(row["meta"])
        assert set(meta["original_candidates"]) <= set(options) and set(meta["distractors"]["mined"]) <= set(options)
        assert set(meta["distractors"]["mined"]) <= {clean_narration(t) for t in POOL_TEXTS}
        assert 1 + len(meta["original_candidates"]) + len(meta["distractors"]["mined"]) == 10
    assert "C takes the knife off the table" not in intra["options"]
    assert loads_meta(intra["meta"])["distractors"]["excluded"] == [
        "C picks the knife from the table",
        "C takes the knife off the table",
    ]
    # The intra question's original candidate with the answer's own text was dropped, not kept as a duplicate.
    assert loads_meta(intra["meta"])["dropped_original"] == ["C picks the knife from the table"]
    assert "C opens the tap" in loads_meta(intra["meta"])["original_candidates"]  # #unsure tag removed


def test_egomcq_bad_type_and_determinism(tmp_path, encoder):
    root = tmp_path / "egomcq"
    write_egomcq(root, bad_type=True)
    with pytest.raises(RowError, match=r"egomcq.json: row 1: field 'types': 3 is not 1 \(inter-video\) or 2"):
        build_egobench({"egomcq": root}, tmp_path / "bad", options=EgoBenchOptions(encoder=encoder))
    # With --skip-bad-rows the bad question is counted; the default pool (EgoMCQ's own 5 texts) cannot
    # grow the remaining question to 10 candidates, which is a counted skip too, not a short question. With
    # every question skipped there is nothing to build: an error, not an empty config.
    with pytest.raises(SourceFileError, match=r"egomcq: config egomcq would have no rows .*2 bad rows skipped"):
        build_egobench(
            {"egomcq": root}, tmp_path / "skip", options=EgoBenchOptions(encoder=encoder), skip_bad_rows=True
        )
    assert not (tmp_path / "skip").exists()
    # Two builds (mined options included) are byte-identical.
    write_egoclip_pool(root / "egoclip.csv")
    for name in ("a", "b"):
        build_egobench(
            {"egomcq": root},
            tmp_path / name,
            skip_bad_rows=True,
            options=EgoBenchOptions(encoder=encoder, egomcq_pool=str(root / "egoclip.csv")),
        )
    digest = [
        hashlib.sha1((tmp_path / name / "data" / "egomcq" / "test-00000-of-00001.parquet").read_bytes()).hexdigest()
        for name in ("a", "b")
    ]
    assert digest[0] == digest[1]

"""EgoIT adapters on small files written here in each source's released format."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import datasets
import numpy as np

from datasets_scripts.egoit import cli as egoit_cli
from datasets_scripts.egoit.templates import load_templates
from datasets_scripts.schema import EGOIT_FEATURES


# --------------------------------------------------------------------------------------------- fixtures
def write_egtea(root: Path, bad_action: bool = False) -> None:
    annotations = root / "action_annotation"
    annotations.mkdir(parents=True)
    (annotations / "action_idx.txt").write_text("Open_fridge 1\nCut_tomato 2\nInspect/Read_recipe 3\n")
    (annotations / "verb_idx.txt").write_text("Open 1\nCut 2\nInspect/Read 3\n")
    train = [
        "OP01-R01-PastaSalad-66680-68130-F001597-F001639 1 1 4",
        "OP01-R01-PastaSalad-70000-71500-F001680-F001716 2 2 7",
        f"P03-R02-Pizza-1000-2500-F000030-F000075 {99 if bad_action else 3} 3 9",
    ]
    (annotations / "train_split1.txt").write_text("\n".join(train) + "\n")
    (annotations / "test_split1.txt").write_text("OP02-R03-BaconAndEggs-5000-6200-F000150-F000186 2 2 7\n")


def write_ssv2(root: Path, with_test: bool = True) -> None:
    root.mkdir(parents=True)
    labels = {"Holding something next to something": "0", "Pushing something from left to right": "1"}
    (root / "labels.json").write_text(json.dumps(labels))
    train = [
        {
            "id": "78687",
            "label": "holding potato next to vicks vaporub bottle",
            "template": "Holding [something] next to [something]",
            "placeholders": ["potato", "vicks vaporub bottle"],
        },
        {
            "id": "42326",
            "label": "pushing a cup from left to right",
            "template": "Pushing [something] from left to right",
            "placeholders": ["a cup"],
        },
    ]
    validation = [
        {
            "id": "24746",
            "label": "pushing pen from left to right",
            "template": "Pushing [something] from left to right",
            "placeholders": ["pen"],
        }
    ]
    (root / "train.json").write_text(json.dumps(train))
    (root / "validation.json").write_text(json.dumps(validation))
    if with_test:
        (root / "test.json").write_text(json.dumps([{"id": "1420"}, {"id": "1421"}]))
        (root / "test-answers.csv").write_text(
            "1420;Holding something next to something\n1421;Pushing something from left to right\n"
        )


def write_egotimeqa(root: Path) -> None:
    folder = root / "data" / "unified"
    folder.mkdir(parents=True)
    records = [
        {
            "video_id": "0a1b2c3d-clip",
            "sample_id": None,
            "question": "What did I pour into the bowl?",
            "answer": "boiling water",
            "start_sec": 312.4,
            "end_sec": 331.0,
            "moment_start_frame": 9400,
            "moment_end_frame": 9900,
            "narrations": [],
            "wrong_answers": ["milk", "oil", "juice"],
        },
        {
            "video_id": "ffee0011-clip",
            "sample_id": None,
            "question": "Where did I leave the keys?",
            "answer": "on the shelf",
            "start_sec": 10.0,
            "end_sec": 25.5,
            "narrations": [],
            "wrong_answers": [],
        },
    ]
    (folder / "annotations.EgoTimeQA.json").write_text(json.dumps(records))


def write_openeqa(root: Path) -> None:
    from PIL import Image

    (root / "data").mkdir(parents=True)
    records = [
        {
            "question": "What color is the sofa?",
            "answer": "grey",
            "category": "object recognition",
            "question_id": "q-001",
            "episode_history": "hm3d-v0/000-hm3d-BFRyYbPCCPE",
        },
        {
            "question": "Is the oven on?",
            "answer": "no",
            "category": "object state recognition",
            "question_id": "q-002",
            "episode_history": "scannet-v0/002-scannet-scene0709_00",
            "extra_answers": ["it is off"],
        },
    ]
    (root / "data" / "open-eqa-v0.json").write_text(json.dumps(records))
    frames = root / "data" / "frames" / "hm3d-v0" / "000-hm3d-BFRyYbPCCPE"
    frames.mkdir(parents=True)
    for index in range(3):
        Image.fromarray(np.full((30, 42, 3), 60 * index, dtype=np.uint8)).save(frames / f"{index:05d}-rgb.png")


EGOEXOLEARN_HEADER = [
    "video_uid",
    "annotation_uid",
    "subset",
    "view",
    "scene",
    "start_sec",
    "end_sec",
    "narration_en",
    "narration_en_hand_prompt",
    "narration_en_no_hand_prompt",
]


def write_egoexolearn(root: Path, rows: list[list[str]] | None = None) -> None:
    (root / "annotations").mkdir(parents=True)
    rows = rows or [
        [
            "bee9d8dc-ac78-11ee-819f-80615f12b59e",
            "a-001",
            "train",
            "ego",
            "kitchen",
            "1.5",
            "4.0",
            "Pick up the knife with the right hand.",
            "Pick up the knife <hand>.",
            "Pick up the knife.",
        ],
        [
            "bee9d8dc-ac78-11ee-819f-80615f12b59e",
            "a-002",
            "val",
            "ego",
            "kitchen",
            "4.0",
            "9.25",
            "Cut the onion, in halves.",
            "Cut <hand> the onion.",
            "Cut the onion.",
        ],
        ["c1d2-exo-video", "a-003", "train", "exo", "lab", "0", "3", "Pour the liquid.", "Pour <hand>.", "Pour."],
    ]
    with open(root / "annotations" / "fine_annotation_trainval_en.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(EGOEXOLEARN_HEADER)
        writer.writerows(rows)


def write_all(base: Path) -> dict[str, Path]:
    roots = {name: base / name for name in ("egtea", "ssv2", "egotimeqa", "openeqa", "egoexolearn")}
    write_egtea(roots["egtea"])
    write_ssv2(roots["ssv2"])
    write_egotimeqa(roots["egotimeqa"])
    write_openeqa(roots["openeqa"])
    write_egoexolearn(roots["egoexolearn"])
    return roots


def run_cli(argv: list[str]) -> int:
    """``exo2ego data egoit ...`` through this area's own parser."""
    parser = argparse.ArgumentParser()
    egoit_cli.add_parser(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(["egoit", *argv])
    return args.func(args)


def root_args(roots: dict[str, Path]) -> list[str]:
    return [item for name, path in roots.items() for item in ("--root", f"{name}={path}")]


def load(out: Path, config: str, split: str = "train") -> datasets.Dataset:
    """Read one config back; a private cache dir, because datasets' cache key for a local folder is its name
    and YAML patterns (not the file contents), so another folder named like this one would be read instead."""
    return datasets.load_dataset(str(out), config, split=split, cache_dir=str(out.parent / f".hf_cache_{out.name}"))


def parquet_digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.parquet"))
    }


# --------------------------------------------------------------------------------------------- tests
def test_build_all_sources_rows_and_templates(tmp_path, capsys):
    roots = write_all(tmp_path / "src")
    out = tmp_path / "egoit"
    llava = tmp_path / "egoit_llava.json"
    assert (
        run_cli(
            [
                *root_args(roots),
                "--out",
                str(out),
                "--llava-json",
                str(llava),
                "--make-openeqa-videos",
                "--check-videos",
            ]
        )
        == 0
    )

    counts = {source: len(load(out, source)) for source in roots}
    # EGTEA 3 train + 1 test; SSv2 2 train + 1 validation + 2 test; EgoExoLearn ego view only.
    assert counts == {"egtea": 4, "ssv2": 5, "egotimeqa": 2, "openeqa": 2, "egoexolearn": 2}
    everything = load(out, "all")
    assert len(everything) == sum(counts.values()) and everything.features == EGOIT_FEATURES

    templates = load_templates()
    for row in everything:
        assert (
            0 <= row["instruction_id"] < 10 and row["instruction"] == templates[row["source"]][row["instruction_id"]]
        )
    assert len({row["instruction_id"] for row in everything}) > 1  # the seeded hash spreads templates

    egtea = {row["id"]: row for row in load(out, "egtea")}
    row = egtea["egtea/P03-R02-Pizza-1000-2500-F000030-F000075"]
    assert row["answer"] == "Inspect/Read recipe" and row["split"] == "train" and row["task"] == "action_recognition"
    assert row["video"] == "cropped_clips/P03-R02-Pizza/P03-R02-Pizza-1000-2500-F000030-F000075.mp4"
    assert egtea["egtea/OP02-R03-BaconAndEggs-5000-6200-F000150-F000186"]["split"] == "test"

    ssv2 = {row["id"]: row for row in load(out, "ssv2")}
    assert ssv2["ssv2/78687"]["answer"] == "Holding potato next to vicks vaporub bottle"
    assert ssv2["ssv2/1421"] == {
        **ssv2["ssv2/1421"],
        "split": "test",
        "answer": "Pushing something from left to right",
        "video": "20bn-something-something-v2/1421.webm",
    }

    timeqa = load(out, "egotimeqa")[0]
    assert (timeqa["video"], timeqa["video_start_sec"], timeqa["video_end_sec"]) == (
        "v1/clips/0a1b2c3d-clip.mp4",
        312.4,
        331.0,
    )
    learn = load(out, "egoexolearn")
    assert learn["split"] == ["train", "val"] and learn["answer"][1] == "Cut the onion, in halves."

    # OpenEQA: the frame folder became the video the row points to (3 frames, PyAV-readable).
    import av

    openeqa = load(out, "openeqa")[0]
    assert openeqa["video"] == "viewer/static/videos/hm3d-v0/000-hm3d-BFRyYbPCCPE-0.mp4"
    with av.open(str(roots["openeqa"] / openeqa["video"])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3

    info = json.loads((out / "build_info.json").read_text())
    assert info["counts"] == counts and info["skips"]["skipped_rows"] == 0
    assert info["videos"]["openeqa"]["missing"] == 1  # the scannet episode has no frames here
    assert (out / "missing_videos" / "egtea.txt").read_text().count("\n") == 4

    conversations = json.loads(llava.read_text())
    assert len(conversations) == len(everything)
    by_id = {record["id"]: record for record in conversations}
    record = by_id["egotimeqa/0000000"]
    assert record["video"] == "egotimeqa/v1/clips/0a1b2c3d-clip.mp4" and record["video_start_sec"] == 312.4
    human, gpt = record["conversations"]
    assert (
        human["from"] == "human"
        and human["value"].startswith("<video>\n")
        and human["value"].endswith("What did I pour into the bowl?")
    )
    assert gpt == {"from": "gpt", "value": "boiling water"}
    assert "video_start_sec" not in by_id["egtea/P03-R02-Pizza-1000-2500-F000030-F000075"]


def test_two_builds_are_byte_identical(tmp_path):
    roots = write_all(tmp_path / "src")
    for name in ("a", "b"):
        assert run_cli([*root_args(roots), "--out", str(tmp_path / name)]) == 0
    first = parquet_digests(tmp_path / "a")
    assert first and first == parquet_digests(tmp_path / "b")
    assert (tmp_path / "a" / "build_info.json").read_bytes() == (tmp_path / "b" / "build_info.json").read_bytes()


def test_missing_sources_are_skipped_with_a_message(tmp_path, capsys):
    roots = {"egtea": tmp_path / "src" / "egtea"}
    write_egtea(roots["egtea"])
    assert run_cli([*root_args(roots), "--out", str(tmp_path / "out")]) == 0
    output = capsys.readouterr().out
    assert "ssv2: skipped (not downloaded" in output and "egoexolearn: skipped" in output
    # --data-root picks up sources found as sub-folders; absent ones are skipped, not errors.
    write_ssv2(tmp_path / "src" / "ssv2", with_test=False)
    assert run_cli(["--data-root", str(tmp_path / "src"), "--out", str(tmp_path / "out2")]) == 0
    info = json.loads((tmp_path / "out2" / "build_info.json").read_text())
    assert info["counts"] == {"egtea": 4, "ssv2": 3}
    assert "ssv2: test split skipped (needs test.json and test-answers.csv)" in info["notes"]


def test_bad_rows_name_file_row_field_and_can_be_skipped(tmp_path, capsys):
    roots = {"egtea": tmp_path / "egtea"}
    write_egtea(roots["egtea"], bad_action=True)
    assert run_cli([*root_args(roots), "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "train_split1.txt: row 3: field 'action_idx'" in error and "99 is not in action_idx.txt" in error
    assert not (tmp_path / "out").exists()  # nothing half-written

    assert run_cli([*root_args(roots), "--out", str(tmp_path / "out"), "--skip-bad-rows"]) == 0
    info = json.loads((tmp_path / "out" / "build_info.json").read_text())
    assert info["skips"]["skipped_rows"] == 1 and info["skips"]["by_source_field"] == {"egtea/action_idx": 1}
    assert info["counts"]["egtea"] == 3

    # A CSV row with a bad number and one with too few fields (EgoExoLearn).
    learn = tmp_path / "learn"
    write_egoexolearn(
        learn,
        rows=[
            ["v1", "a-1", "train", "ego", "kitchen", "zero", "2", "x", "x", "x"],
            ["v1", "a-2", "train", "ego"],
            ["v1", "a-3", "train", "ego", "kitchen", "1", "2", "Open the lid.", "x", "x"],
        ],
    )
    assert run_cli(["--root", f"egoexolearn={learn}", "--out", str(tmp_path / "learn_out")]) == 2
    assert "fine_annotation_trainval_en.csv: row 2: field 'start_sec': bad value 'zero'" in capsys.readouterr().err
    assert run_cli(["--root", f"egoexolearn={learn}", "--out", str(tmp_path / "learn_out"), "--skip-bad-rows"]) == 0
    info = json.loads((tmp_path / "learn_out" / "build_info.json").read_text())
    assert info["skips"]["by_source_field"] == {"egoexolearn/(columns)": 1, "egoexolearn/start_sec": 1}
    assert info["counts"] == {"egoexolearn": 1}


def test_missing_file_is_an_error_naming_it(tmp_path, capsys):
    root = tmp_path / "ssv2"
    write_ssv2(root)
    (root / "labels.json").unlink()
    assert run_cli(["--root", f"ssv2={root}", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "ssv2: required file not found" in error and str(root / "labels.json") in error
    # Malformed JSON names the file and line.
    (root / "labels.json").write_text('{"Holding something next to something": "0",\n  oops}')
    assert run_cli(["--root", f"ssv2={root}", "--out", str(tmp_path / "out")]) == 2
    assert "labels.json: row line 2: field '(json)': not valid JSON" in capsys.readouterr().err
    # An unknown source name is rejected with the list of known ones.
    assert run_cli(["--root", f"nope={root}", "--out", str(tmp_path / "out")]) == 2
    assert "unknown source 'nope'; known: egtea, ssv2" in capsys.readouterr().err


def test_push_to_hub_uploads_the_folder_in_one_commit(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    roots = {"egtea": tmp_path / "egtea"}
    write_egtea(roots["egtea"])
    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kwargs: (
            commits.append((repo_id, sorted(op.path_in_repo for op in operations))) or "url"
        ),
    )
    assert run_cli([*root_args(roots), "--out", str(tmp_path / "out"), "--push-to-hub", "org/egoit"]) == 0
    assert commits == [("org/egoit", ["README.md", "build_info.json", "data/egtea/train-00000-of-00001.parquet"])]

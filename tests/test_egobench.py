"""EgoBench adapters with released option sets (EgoSchema, QAEgo4D, EgoPlan, VLN-QA) on files written here."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import datasets
import pytest

from datasets_scripts.egobench import cli as egobench_cli
from datasets_scripts.schema import EGOBENCH_FEATURES, frozen_option_order, loads_meta


# --------------------------------------------------------------------------------------------- fixtures
def write_egoschema(root: Path) -> None:
    root.mkdir(parents=True)
    questions = []
    for index, q_uid in enumerate(
        [
            "001934bb-81bd-4cd8-a574-0472ef3f6678",
            "001d2d1b-d2f9-4c39-810e-6e2087ff9d5a",
            "004a7f7e-9e83-431f-bc98-859cf9024e93",
        ]
    ):
        questions.append(
            {
                "q_uid": q_uid,
                "google_drive_id": f"drive{index}",
                "question": f"What is the overall goal of c's actions in video {index}?",
                **{f"option {k}": f"Option {k} of question {index}. It has two sentences." for k in range(5)},
            }
        )
    (root / "questions.json").write_text(json.dumps(questions))
    (root / "subset_answers.json").write_text(json.dumps({questions[0]["q_uid"]: 3, questions[2]["q_uid"]: 0}))
    (root / "uid_to_ego4d.json").write_text(
        json.dumps(
            {
                questions[0]["q_uid"]: {
                    "video_uid": "2fa72a4f-b318-4e04-97b8-efdc3b039258",
                    "starting_sec": 240,
                    "ending_sec": 420,
                }
            }
        )
    )


def write_qaego4d(root: Path) -> None:
    folder = root / "data" / "unified"
    folder.mkdir(parents=True)
    closed = [
        {
            "video_id": "clip-aaa",
            "sample_id": 17,
            "question": "What did I put in the drawer?",
            "answer": "a spoon",
            "wrong_answers": ["a fork", "a plate", "a cup"],
            "moment_start_frame": 300,
            "moment_end_frame": 450,
        },
        {
            "video_id": "clip-bbb",
            "sample_id": 18,
            "question": "Where was the phone?",
            "answer": "on the table",
            "wrong_answers": ["in the bag", "on the sofa", "in my pocket"],
            "moment_start_frame": 30,
            "moment_end_frame": 90,
        },
    ]
    opened = [
        {
            "video_id": "clip-aaa",
            "sample_id": 17,
            "question": "What did I put in the drawer?",
            "answer": "a spoon",
            "moment_start_frame": 300,
            "moment_end_frame": 450,
        }
    ]
    (folder / "annotations.QaEgo4D_test_close.json").write_text(json.dumps(closed))
    (folder / "annotations.QaEgo4D_test.json").write_text(json.dumps(opened))


def write_egoplan(root: Path) -> None:
    root.mkdir(parents=True)
    samples = [
        {
            "sample_id": 1,
            "video_source": "EpicKitchens",
            "video_id": "P01_11",
            "task_goal": "make a coffee",
            "question": "Considering my progress, what should I do next to make a coffee?",
            "choice_a": "pour water",
            "choice_b": "open fridge",
            "choice_c": "wash cup",
            "choice_d": "take spoon",
            "golden_choice_idx": "C",
            "answer": "wash cup",
            "current_observation_frame": 1500,
            "task_progress_metadata": [
                {"narration_text": "take cup", "start_frame": 1000, "stop_frame": 1200},
                {"narration_text": "rinse cup", "start_frame": 1210, "stop_frame": 1490},
                {"narration_text": "dry cup (after the current frame)", "start_frame": 1495, "stop_frame": 1700},
            ],
        },
        {
            "sample_id": "2",
            "video_source": "Ego4D",
            "video_id": "9a8b7c6d-ego4d",
            "task_goal": "fix the bike",
            "question": "What should I do next to fix the bike?",
            "choice_a": "remove wheel",
            "choice_b": "pump tyre",
            "choice_c": "oil chain",
            "choice_d": "tighten bolt",
            "golden_choice_idx": "A",
            "answer": "remove wheel",
            "current_observation_frame": 91,
            "task_progress_metadata": [],
        },
    ]
    (root / "EgoPlan_validation.json").write_text(json.dumps(samples))
    (root / "EPIC_100_video_info.csv").write_text("video_id,duration,fps,resolution\nP01_11,600.0,59.94,1920x1080\n")


def write_vlnqa(root: Path) -> None:
    (root / "json").mkdir(parents=True)
    records = [
        {
            "video": "a1b2.mp4",
            "question": "Which way should I go to reach the kitchen?",
            "candidates": ["turn left", "turn right", "go straight", "stop"],
            "answer": "go straight",
        },
        {
            "video": "c3d4.mp4",
            "question": "What is in front of me?",
            "candidates": ["a door", "stairs", "a sofa", "a window"],
            "answer": "stairs",
        },
    ]
    (root / "json" / "egocentric_navigation.json").write_text(json.dumps(records))


def run_cli(argv: list[str]) -> int:
    """``exo2ego data egobench ...`` through this area's own parser."""
    parser = argparse.ArgumentParser()
    egobench_cli.add_parser(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(["egobench", *argv])
    return args.func(args)


def write_qa_sources(base: Path) -> dict[str, Path]:
    roots = {name: base / name for name in ("egoschema", "qaego4d", "egoplan", "vlnqa")}
    write_egoschema(roots["egoschema"])
    write_qaego4d(roots["qaego4d"])
    write_egoplan(roots["egoplan"])
    write_vlnqa(roots["vlnqa"])
    return roots


def root_args(roots: dict[str, Path]) -> list[str]:
    return [item for name, path in roots.items() for item in ("--root", f"{name}={path}")]


def load(out: Path, config: str, split: str = "test") -> datasets.Dataset:
    """Read one config back; a private cache dir, because datasets' cache key for a local folder is its name
    and YAML patterns (not the file contents), so another folder named like this one would be read instead."""
    return datasets.load_dataset(str(out), config, split=split, cache_dir=str(out.parent / f".hf_cache_{out.name}"))


# --------------------------------------------------------------------------------------------- tests
def test_frozen_option_order_is_a_seeded_permutation():
    options = ["a", "b", "c", "d", "e"]
    reordered, answer = frozen_option_order("egoschema/x", options, 3, seed=0)
    assert sorted(reordered) == options and reordered[answer] == "d"
    assert frozen_option_order("egoschema/x", options, 3, seed=0) == (reordered, answer)
    orders = {tuple(frozen_option_order(f"t/{i}", options, 0, seed=0)[0]) for i in range(30)}
    assert len(orders) > 10  # different ids give different orders
    assert any(
        frozen_option_order(f"t/{i}", options, 0, seed=1) != frozen_option_order(f"t/{i}", options, 0, seed=0)
        for i in range(5)
    )  # the seed matters
    assert frozen_option_order("t/1", options, None)[1] is None


def test_qa_tasks_rows_answers_and_cutoff(tmp_path):
    roots = write_qa_sources(tmp_path / "src")
    out = tmp_path / "bench"
    assert run_cli([*root_args(roots), "--out", str(out)]) == 0

    full, subset = load(out, "egoschema_full"), load(out, "egoschema_subset")
    assert len(full) == 3 and len(subset) == 2 and full.features == EGOBENCH_FEATURES
    questions = {q["q_uid"]: q for q in json.loads((roots["egoschema"] / "questions.json").read_text())}
    answers = json.loads((roots["egoschema"] / "subset_answers.json").read_text())
    for row in subset:
        q_uid = row["sample_id"].split("/")[1]
        meta = loads_meta(row["meta"])
        source = [questions[q_uid][f"option {k}"] for k in range(5)]
        assert row["options"][row["answer_idx"]] == source[answers[q_uid]] == row["answer_text"]
        assert [row["options"][i] for i in range(5)] == [source[k] for k in meta["source_order"]]
        assert row["video"] == f"videos/{q_uid}.mp4"
    assert {
        row["answer_idx"] for row in full if row["sample_id"].endswith("001d2d1b-d2f9-4c39-810e-6e2087ff9d5a")
    } == {None}
    first = loads_meta(subset[0]["meta"])
    assert first["ego4d_video_uid"] == "2fa72a4f-b318-4e04-97b8-efdc3b039258"
    assert any(loads_meta(row["meta"])["source_order"] != list(range(5)) for row in full)  # actually shuffled

    closed = load(out, "qaego4d_closed")
    assert len(closed) == 2
    for row, answer in zip(closed, ["a spoon", "on the table"]):
        assert len(row["options"]) == 4 and row["options"][row["answer_idx"]] == answer
        assert row["video"].startswith("v1/clips/clip-")
    opened = load(out, "qaego4d_open")[0]
    assert opened["options"] == [] and opened["answer_idx"] is None and opened["answer_text"] == "a spoon"
    assert loads_meta(opened["meta"])["moment_start_sec"] == 10.0

    plan = {row["sample_id"]: row for row in load(out, "egoplan")}
    epic = plan["egoplan/1"]
    meta = loads_meta(epic["meta"])
    assert epic["options"][epic["answer_idx"]] == "wash cup"
    assert epic["video"] == "EPIC-KITCHENS/P01/videos/P01_11.MP4"
    assert meta["fps"] == 59.94 and meta["fps_source"] == "EPIC_100_video_info.csv"
    # No frame after the current observation: the clip ends at the end of frame 1500 (1-based).
    assert epic["end_sec"] == pytest.approx(1500 / 59.94, abs=1e-6)
    assert epic["end_sec"] * meta["fps"] <= meta["current_observation_frame"] + 1e-6
    assert epic["start_sec"] == pytest.approx(999 / 59.94, abs=1e-6)
    assert [action["narration_text"] for action in meta["task_progress"]] == ["take cup", "rinse cup"]
    ego4d = plan["egoplan/2"]
    assert (
        ego4d["video"] == "v1/full_scale/9a8b7c6d-ego4d.mp4" and loads_meta(ego4d["meta"])["fps_source"] == "default"
    )
    assert (ego4d["start_sec"], ego4d["end_sec"]) == (pytest.approx(90 / 30), pytest.approx(91 / 30))

    vln = load(out, "vlnqa")
    assert [row["options"][row["answer_idx"]] for row in vln] == ["go straight", "stairs"]
    assert vln[0]["video"] == "video/vlnqa/a1b2.mp4"


def test_keep_source_order_and_task_selection(tmp_path, capsys):
    roots = write_qa_sources(tmp_path / "src")
    out = tmp_path / "bench"
    assert run_cli([*root_args(roots), "--out", str(out), "--tasks", "vlnqa", "qaego4d", "--keep-source-order"]) == 0
    info = json.loads((out / "build_info.json").read_text())
    assert sorted(info["counts"]) == ["qaego4d_closed", "qaego4d_open", "vlnqa"]
    assert load(out, "vlnqa")["answer_idx"] == [2, 1] and load(out, "qaego4d_closed")["answer_idx"] == [0, 0]
    assert "source_order" not in loads_meta(load(out, "vlnqa")[0]["meta"])


def test_egobench_determinism(tmp_path):
    roots = write_qa_sources(tmp_path / "src")
    for name in ("a", "b"):
        assert run_cli([*root_args(roots), "--out", str(tmp_path / name)]) == 0
    digests = [
        {
            p.relative_to(tmp_path / name).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted((tmp_path / name).rglob("*.parquet"))
        }
        for name in ("a", "b")
    ]
    assert len(digests[0]) == 6 and digests[0] == digests[1]


def test_bad_rows_and_missing_files(tmp_path, capsys):
    roots = write_qa_sources(tmp_path / "src")
    path = roots["vlnqa"] / "json" / "egocentric_navigation.json"
    records = json.loads(path.read_text())
    records.append({"video": "e5.mp4", "question": "Where?", "candidates": ["a", "b"], "answer": "c"})
    path.write_text(json.dumps(records))
    assert run_cli(["--root", f"vlnqa={roots['vlnqa']}", "--out", str(tmp_path / "out")]) == 2
    assert (
        "egocentric_navigation.json: row 2: field 'answer': 'c' is not one of the candidates"
        in capsys.readouterr().err
    )
    assert run_cli(["--root", f"vlnqa={roots['vlnqa']}", "--out", str(tmp_path / "out"), "--skip-bad-rows"]) == 0
    info = json.loads((tmp_path / "out" / "build_info.json").read_text())
    assert info["skips"]["by_source_field"] == {"vlnqa/answer": 1} and info["counts"] == {"vlnqa": 2}

    plan = roots["egoplan"] / "EgoPlan_validation.json"
    samples = json.loads(plan.read_text())
    samples[1]["golden_choice_idx"] = "E"
    plan.write_text(json.dumps(samples))
    assert run_cli(["--root", f"egoplan={roots['egoplan']}", "--out", str(tmp_path / "plan")]) == 2
    assert "EgoPlan_validation.json: row 1: field 'golden_choice_idx'" in capsys.readouterr().err

    questions = json.loads((roots["egoschema"] / "questions.json").read_text())
    questions[1]["option 3"] = questions[1]["option 0"]
    (roots["egoschema"] / "questions.json").write_text(json.dumps(questions))
    assert run_cli(["--root", f"egoschema={roots['egoschema']}", "--out", str(tmp_path / "schema")]) == 2
    assert (
        "questions.json: row 1: field 'options': egoschema/001d2d1b-d2f9-4c39-810e-6e2087ff9d5a: duplicate options"
        in capsys.readouterr().err
    )

    (roots["egoschema"] / "questions.json").unlink()
    assert run_cli(["--root", f"egoschema={roots['egoschema']}", "--out", str(tmp_path / "schema")]) == 2
    assert f"egoschema: required file not found: {roots['egoschema'] / 'questions.json'}" in capsys.readouterr().err

    assert run_cli(["--out", str(tmp_path / "none")]) == 2
    assert "no EgoBench source to build" in capsys.readouterr().err

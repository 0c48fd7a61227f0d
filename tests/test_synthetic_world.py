"""The synthetic Ego-Exo world: Ego-Exo4D layout and quirks, determinism, narrations true to the videos,
synthetic EgoIT/EgoBench rows."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from collections import Counter
from dataclasses import replace

import datasets
import numpy as np
import pytest

from datasets_scripts.hub_export import load_folder
from datasets_scripts.schema import EGOBENCH_FEATURES, EGOIT_FEATURES
from datasets_scripts.synthetic import WorldConfig, generate_world, plan_world
from datasets_scripts.synthetic.narration import ANNOTATOR_TEMPLATES
from datasets_scripts.synthetic.qa import egobench_rows, egoit_rows, text_only_baseline
from datasets_scripts.synthetic.script import COLOURS, VERB_ANSWERS

CONFIG = WorldConfig(num_takes=5, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "w"
    info = generate_world(root, CONFIG)
    return root, info, json.loads((root / "synthetic_world.json").read_text())


def _load(path):
    return json.loads(path.read_text())


def test_layout_field_names_and_quirks(world):
    root, info, truth = world
    takes = _load(root / "takes.json")
    splits = _load(root / "annotations" / "splits.json")
    train = _load(root / "annotations" / "atomic_descriptions_train.json")["annotations"]
    val = _load(root / "annotations" / "atomic_descriptions_val.json")["annotations"]
    by_uid = {take["take_uid"]: take for take in takes}
    quirks = {t["take_uid"]: t["quirks"] for t in truth["takes"]}
    uid_of = {q: uid for uid, qs in quirks.items() for q in qs}

    for take in takes:
        assert {
            "take_uid",
            "take_name",
            "root_dir",
            "duration_sec",
            "task_name",
            "parent_task_name",
            "best_exo",
            "capture",
            "frame_aligned_videos",
        } <= set(take)
        videos = take["frame_aligned_videos"]
        assert {"collage", "best_exo"} <= set(videos)
        if "no_ego_stream" in quirks[take["take_uid"]]:
            continue
        ego = next(cam for cam in videos if cam.startswith("aria"))
        assert videos[ego]["rgb"]["relative_path"] == f"frame_aligned_videos/{ego}_214-1.mp4"
        for cam, streams in videos.items():
            if cam in ("collage", "best_exo"):
                continue
            relative = streams.get("rgb", streams.get("0"))["relative_path"]
            assert (root / take["root_dir"] / relative).is_file()
            name = relative.rsplit("/", 1)[1]
            assert (root / take["root_dir"] / "frame_aligned_videos/downscaled/448" / name).is_file()

    gp_take = by_uid[uid_of["gp_camera_ids"]]
    assert "aria02" in gp_take["frame_aligned_videos"] and "gp01" in gp_take["frame_aligned_videos"]
    assert gp_take["best_exo"] is None
    assert {cam["is_ego"] for cam in gp_take["capture"]["cameras"]} == {"True", "False"}
    gp_annotations = train[uid_of["gp_camera_ids"]]
    assert [a["rejected"] for a in gp_annotations] == ["0", "1"]  # string booleans; "0" is truthy in Python
    assert {d["ego_visible"] for d in gp_annotations[0]["descriptions"]} == {"1"}
    timestamps = [d["timestamp"] for d in gp_annotations[0]["descriptions"]]
    assert timestamps != sorted(timestamps)

    assert uid_of["missing_from_takes_json"] in train and uid_of["missing_from_takes_json"] not in by_uid
    assert splits["take_uid_to_split"][uid_of["test_take_in_train_annotations"]] == "Test"
    assert uid_of["test_take_in_train_annotations"] in train
    assert "aria01" not in by_uid[uid_of["no_ego_stream"]]["frame_aligned_videos"]
    dup = train[uid_of["duplicate_timestamps"]]
    first = [d["timestamp"] for d in dup[0]["descriptions"]]
    assert max(first.count(t) for t in first) == 3  # three descriptions at one instant
    assert (dup[0]["descriptions"][0]["text"], first[0]) in {
        (d["text"], d["timestamp"]) for d in dup[1]["descriptions"]
    }

    val_takes = [t for t in truth["takes"] if t["split"] == "val"]
    assert set(val) == {t["take_uid"] for t in val_takes}
    assert all(len(entries) == 2 for entries in list(train.values()) + list(val.values()))
    assert info["counts"]["by_split"] == {"train": 3, "val": 1, "test": 1}


def _narration_pattern(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{obj\}", r"(?P<obj>\w+ \w+)")
    return re.compile("^" + pattern.replace(r"\{hand\}", r"(?P<hand>left|right)").replace(r"\{colour\}", r"\w+") + "$")


def test_narrations_match_the_script(world):
    root, _, truth = world
    annotations = {
        **_load(root / "annotations" / "atomic_descriptions_train.json")["annotations"],
        **_load(root / "annotations" / "atomic_descriptions_val.json")["annotations"],
    }
    patterns = {verb: [_narration_pattern(t[verb]) for t in ANNOTATOR_TEMPLATES] for verb in VERB_ANSWERS}
    checked = 0
    for take in truth["takes"]:
        for annotation in annotations.get(take["take_uid"], []):
            for description in annotation["descriptions"]:
                t = description["timestamp"]
                [action] = [a for a in take["actions"] if a["start"] <= t <= a["end"]]
                if description["text"].startswith(("C grasps", "C holds")):
                    assert action is take["actions"][0] and action["object"] in description["text"]
                    continue
                match = next(m for p in patterns[action["verb"]] if (m := p.match(description["text"])))
                assert match["obj"] == action["object"]
                if "hand" in match.groupdict() and match["hand"]:
                    assert match["hand"] == action["hand"]
                checked += 1
    assert checked > 20


def _colour_centroid(frame: np.ndarray, colour: str):
    distance = np.abs(frame.astype(int) - np.array(COLOURS[colour])).sum(-1)
    ys, xs = np.nonzero(distance < 90)
    return (xs.mean(), ys.mean(), len(xs)) if len(xs) else None


def test_videos_show_the_narrated_actions(world):
    """Moves shift the object sideways in the near-top-down exo view; pick-ups raise it in the front view;
    pours colour the bowl."""
    from modeling_exo2ego import read_video_frames

    root, _, truth = world
    seen = Counter()
    for take in truth["takes"]:
        if not take["rendered"]:
            continue
        folder = root / "takes" / take["take_name"] / "frame_aligned_videos"
        top, front = (folder / f"{take['exo_cams'][i]}.mp4" for i in (2, 0))
        for action in take["actions"]:
            colour = action["object"].split()[0]
            times = np.array([action["start"] + 0.05, action["end"] - 0.05])
            if seen[action["verb"].split("_")[0]] >= 3:  # three of each kind is enough
                continue
            if action["verb"] in ("move_left", "move_right"):
                before, after = (
                    _colour_centroid(f, colour) for f in read_video_frames(top, 2, timestamps=times).frames
                )
                direction = np.sign(after[0] - before[0])
                assert direction == (-1 if action["verb"] == "move_left" else 1), (take["take_name"], action)
                seen["move"] += 1
            elif action["verb"] == "pick_up":
                before, after = (
                    _colour_centroid(f, colour) for f in read_video_frames(front, 2, timestamps=times).frames
                )
                assert after[1] < before[1] - 3, (take["take_name"], action)  # higher in the picture
                seen["pick"] += 1
    assert seen["move"] >= 2 and seen["pick"] >= 2


def test_deterministic_for_a_seed(tmp_path):
    config = WorldConfig(num_takes=3, seed=11, actions_per_take=2, write_qa=False)
    generate_world(tmp_path / "a", config)
    generate_world(tmp_path / "b", config)

    def digest(root):
        return {
            p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first = digest(tmp_path / "a")
    assert first == digest(tmp_path / "b")
    assert sum(name.endswith(".mp4") for name in first) == 3 * 10
    other = WorldConfig(num_takes=3, seed=12, actions_per_take=2, write_qa=False)
    generate_world(tmp_path / "c", other)
    assert digest(tmp_path / "c")["takes.json"] != first["takes.json"]

    # Downscaled only: the same 448 videos to the byte, and no full-resolution ones.
    generate_world(tmp_path / "d", replace(config, downscaled_only=True))
    small = digest(tmp_path / "d")
    videos = {name: sha for name, sha in small.items() if name.endswith(".mp4")}
    assert len(videos) == 3 * 5 and all("/downscaled/448/" in name for name in videos)
    assert all(first[name] == sha for name, sha in videos.items())


def test_egoit_and_egobench_rows(world):
    root, info, truth = world
    heldout = {t["take_uid"]: t for t in truth["takes"] if t["split"] in ("val", "test") and t["rendered"]}
    bench = load_folder(root / "egobench", "synthetic", split="test")
    direct = datasets.load_dataset(str(root / "egobench"), "synthetic", split="test", download_mode="force_redownload")
    assert direct["sample_id"] == bench["sample_id"]
    assert bench.features == EGOBENCH_FEATURES and len(bench) == info["counts"]["egobench_rows"] > 0
    positions = set()
    for row in bench:
        meta = json.loads(row["meta"])
        take = heldout[meta["video_id"]]
        action = take["actions"][int(row["sample_id"].split("/")[2])]
        assert len(row["options"]) == 5 == len(set(row["options"]))
        assert row["options"][row["answer_idx"]] == row["answer_text"]
        expected = {
            "object": f"the {action['object']}",
            "colour": action["object"].split()[0],
            "action": VERB_ANSWERS[action["verb"]],
        }[row["subset"]]
        assert row["answer_text"] == expected
        assert (row["start_sec"], row["end_sec"]) == (action["start"], action["end"])
        assert (root / row["video"]).is_file() and "downscaled/448" in row["video"]
        assert action["object"] not in row["answer_text"] or row["subset"] == "object"
        positions.add(row["answer_idx"])
    assert len(positions) > 1  # answers are not always at the same letter

    egoit = load_folder(root / "egoit", "synthetic", split="train")
    assert egoit.features == EGOIT_FEATURES
    train_names = {t["take_name"] for t in truth["takes"] if t["split"] == "train"}
    assert {row["id"].split("/")[1] for row in egoit} <= train_names
    assert {"mcq", "open_qa", "captioning"} == set(egoit["task"])
    for row in egoit:
        if row["task"] == "mcq":
            assert row["answer"] in row["options"] and len(row["options"]) == 5
        assert 0 <= row["instruction_id"] < 10


def test_answers_not_guessable_from_text():
    plans, _ = plan_world(WorldConfig(num_takes=150, seed=0, heldout_fraction=0.4))
    egoit, bench = egoit_rows(plans, 0), egobench_rows(plans, 0)
    baseline = text_only_baseline(egoit, bench)
    assert len(bench) > 300
    assert baseline["accuracy"] < 0.3, baseline  # chance is 0.2


def test_cli_and_bad_arguments(tmp_path):
    from datasets_scripts.synthetic.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["synth", "--out", str(tmp_path / "w"), "--takes", "3", "--no-qa", "--actions-per-take", "2"]
    )
    assert args.func(args) == 0 and (tmp_path / "w" / "takes.json").is_file()
    assert not (tmp_path / "w" / "egobench").exists()
    assert args.func(args) == 2  # exists: refused with a message, not a traceback
    bad = parser.parse_args(["synth", "--out", str(tmp_path / "y"), "--takes", "2"])
    assert bad.func(bad) == 2 and not (tmp_path / "y").exists()
    with pytest.raises(ValueError, match="at least 3 takes"):
        generate_world(tmp_path / "x", WorldConfig(num_takes=2))

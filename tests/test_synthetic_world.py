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
from datasets_scripts.synthetic import WorldConfig, generate_world, plan_world, web_exo
from datasets_scripts.synthetic.narration import ANNOTATOR_TEMPLATES
from datasets_scripts.synthetic.qa import (
    PATTERN_EGOIT_CONFIG,
    PATTERN_TASK,
    egobench_rows,
    egoit_rows,
    text_only_baseline,
)
from datasets_scripts.synthetic.render import (
    EGO_CAMERA,
    EGO_SHIFT,
    apply_shift,
    downscale,
    marker_block,
    render_frame,
    scaled,
)
from datasets_scripts.synthetic.script import COLOURS, PATTERNS, VERB_ANSWERS

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
    assert sum(name.endswith(".mp4") and name.startswith("takes/") for name in first) == 3 * 10
    assert sum(name.startswith("web_exo/videos/") for name in first) == 3 * config.web_exo_per_take
    other = WorldConfig(num_takes=3, seed=12, actions_per_take=2, write_qa=False)
    generate_world(tmp_path / "c", other)
    assert digest(tmp_path / "c")["takes.json"] != first["takes.json"]

    # Downscaled only: the same 448 videos to the byte, and no full-resolution ones.
    generate_world(tmp_path / "d", replace(config, downscaled_only=True))
    small = digest(tmp_path / "d")
    videos = {name: sha for name, sha in small.items() if name.endswith(".mp4") and name.startswith("takes/")}
    assert len(videos) == 3 * 5 and all("/downscaled/448/" in name for name in videos)
    assert all(first[name] == sha for name, sha in videos.items())


def test_egoit_and_egobench_rows(world):
    root, info, truth = world
    heldout = {t["take_uid"]: t for t in truth["takes"] if t["split"] in ("val", "test") and t["rendered"]}
    bench = load_folder(root / "egobench", "synthetic", split="test")
    direct = datasets.load_dataset(str(root / "egobench"), "synthetic", split="test", download_mode="force_redownload")
    assert direct["sample_id"] == bench["sample_id"]
    pattern_rows = load_folder(root / "egobench", PATTERN_TASK, split="test").num_rows
    assert bench.features == EGOBENCH_FEATURES and len(bench) + pattern_rows == info["counts"]["egobench_rows"]
    assert len(bench) == 2 * pattern_rows > 0  # two questions per action, and one about its pattern
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
    with pytest.raises(ValueError, match="num_takes=2"):
        generate_world(tmp_path / "x", WorldConfig(num_takes=2))


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"fps": 0}, "fps=0"),
        ({"fps": -5}, "fps=-5"),
        ({"height": 0}, "height=0"),
        ({"actions_per_take": 0}, "actions_per_take=0"),
        ({"heldout_fraction": 1.5}, "heldout_fraction=1.5"),
        ({"downscaled_height": 256}, "downscaled_height=256"),
        ({"web_exo_per_take": -1}, "web_exo_per_take=-1"),
        ({"ego_shift": "negative+blur"}, "unknown camera shift 'blur'"),
    ],
)
def test_world_settings_are_checked_where_declared(setting, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        WorldConfig(**setting)


def test_only_web_exo_text_names_patterns(world):
    """The pattern is exo-only knowledge: every web-exo caption names one, no ego-side text names any."""
    root, info, truth = world
    words = re.compile(r"\b(" + "|".join(PATTERNS) + r")\b")
    web = json.loads((root / "web_exo" / "web_exo.json").read_text())
    assert len(web) == info["counts"]["web_exo_clips"] == CONFIG.web_exo_per_take * 5
    handled = [words.findall(record["conversations"][1]["value"]) for record in web]
    assert all(len(found) == 1 for found in handled) and {found[0] for found in handled} == set(PATTERNS)
    assert all((root / "web_exo" / record["video"]).is_file() for record in web)

    ego_side = [json.dumps(_load(path)) for path in (root / "annotations").glob("atomic_descriptions_*.json")]
    egoit = load_folder(root / "egoit", "synthetic", split="train")
    ego_side += [
        " ".join([row["instruction"], row["question"], row["answer"], *(row["options"] or [])]) for row in egoit
    ]
    ego_side += load_folder(root / "egoclip", "captions", split="train")["caption"]
    bench = load_folder(root / "egobench", "synthetic", split="test")
    ego_side += [" ".join([row["question"], *row["options"]]) for row in bench]
    assert len(ego_side) > 100 and not [text for text in ego_side if words.search(text)]

    # The control corpus of `exo2ego ablate`: the same records with no pattern named, the rest of each caption kept.
    stripped = web_exo.without_pattern_words(web)
    assert not [record for record in stripped if words.search(json.dumps(record))]
    for before, after in zip(web, stripped):
        caption = before["conversations"][1]["value"]
        assert after["conversations"][1]["value"] == caption.replace(words.search(caption)[0] + " ", "")
        assert after["video"] == before["video"] and after["conversations"][0] == before["conversations"][0]
    assert words.search(web[0]["conversations"][1]["value"])  # the input is left as it was

    # The positive control's EgoIT config: the default rows plus pattern questions about the same train takes.
    control = load_folder(root / "egoit", PATTERN_EGOIT_CONFIG, split="train")
    extra = [row for row in control if row["id"] not in set(egoit["id"])]
    assert len(control) == len(egoit) + len(extra) and {row["task"] for row in extra} == {"mcq", "open_qa"}
    assert all(words.search(row["answer"]) for row in extra) and info["counts"]["egoit_rows"] == len(egoit)
    assert {row["video"] for row in extra} <= {row["video"] for row in egoit}


def test_pattern_split_asks_the_exo_only_attribute(world):
    root, info, truth = world
    takes = {t["take_uid"]: t for t in truth["takes"]}
    bench = load_folder(root / "egobench", "synthetic_pattern", split="test")
    assert len(bench) == sum(len(takes[uid]["actions"]) for uid in {json.loads(m)["video_id"] for m in bench["meta"]})
    for row in bench:
        take = takes[json.loads(row["meta"])["video_id"]]
        action = take["actions"][int(row["sample_id"].split("/")[2])]
        obj = take["objects"][action["obj"]]
        assert row["subset"] == "pattern" and take["split"] in ("val", "test")
        assert row["answer_text"] == f"the {obj['pattern']} {obj['colour']} {obj['shape']}"
        assert sorted(row["options"]) == sorted(f"the {p} {obj['colour']} {obj['shape']}" for p in PATTERNS)
        assert (row["start_sec"], row["end_sec"]) == (action["start"], action["end"])
    baseline = _load(root / "egobench" / "build_info.json")["text_only_baseline_by_task"]["synthetic_pattern"]
    assert baseline["chance"] == 0.2 and 0 <= baseline["accuracy"] <= 1


def test_pattern_split_not_guessable_from_text():
    plans, _ = plan_world(WorldConfig(num_takes=150, seed=0, heldout_fraction=0.4))
    bench = egobench_rows(plans, 0, task=PATTERN_TASK)
    baseline = text_only_baseline(egoit_rows(plans, 0), bench)
    assert len(bench) > 250 and baseline["accuracy"] < 0.3, baseline  # chance is 0.2


def test_ego_view_records_the_shifted_scene(world):
    """The ego video is the scene negated and turned a quarter (the domain gap), exo videos are not shifted."""
    from modeling_exo2ego import read_video_frames

    root, _, truth = world
    plans, _ = plan_world(CONFIG)
    plan = next(p for p in plans if p.render)
    frame = read_video_frames(root / plan.video_path(plan.ego_cam, "448"), 1, timestamps=np.array([0.0])).frames[0]
    scene = plan.script.scene_at(0.0)
    camera = scaled(EGO_CAMERA, CONFIG.height)
    unshifted = downscale(render_frame(plan.script, scene, camera, 0.0, plan.sway_phase), CONFIG.downscaled_height)
    shifted = downscale(apply_shift(render_frame(plan.script, scene, camera, 0.0, plan.sway_phase), EGO_SHIFT), 64)
    below_marker = slice(4 * marker_block(64), None)  # the frame marker is drawn after the shift

    def gap(a, b):
        return np.abs(a[below_marker].astype(int) - b[below_marker].astype(int)).mean()

    assert gap(frame, shifted) < 6 < 60 < gap(frame, unshifted)
    assert np.array_equal(apply_shift(unshifted, "negative"), 255 - unshifted)
    assert np.array_equal(apply_shift(unshifted, "rot90"), np.rot90(unshifted))


def test_web_exo_corpus_builds_as_videollama2_pretraining_data(world, tmp_path):
    """`exo2ego data pretrain` reads the corpus as it reads VideoLLaMA2's: every clip a video caption row whose media
    exists, prompt without its tag, caption naming the handled object's pattern."""
    from datasets_scripts.pretrain.build import build_pretrain

    root, info, _ = world
    build_pretrain({"videollama2": root / "web_exo"}, tmp_path / "web-captions", check_media=True)
    rows = load_folder(tmp_path / "web-captions", "captions", split="train")
    assert len(rows) == info["counts"]["web_exo_clips"] and set(rows["media_type"]) == {"video"}
    assert set(rows["prompt"]) == {"Describe the video."}
    assert all(any(pattern in caption for pattern in PATTERNS) for caption in rows["caption"])

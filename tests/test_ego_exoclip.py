"""Ego-ExoClip builder: eq. 1, drops by reason, camera quirks, Hub folder round trip, annotations-only
export and local restore, bad input, push in one commit."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil

import datasets
import pytest
import yaml

from datasets_scripts.ego_exoclip import (
    CLIP_FEATURES,
    EgoExoClipOptions,
    build_ego_exoclip,
    clip_bounds,
    plan_ego_exoclip,
    restore_text,
)
from datasets_scripts.ego_exoclip.source import resolve_cameras
from datasets_scripts.hub_export import load_folder
from datasets_scripts.source_io import RowError, SourceFileError
from datasets_scripts.synthetic import WorldConfig, generate_world

REQUIRED_COLUMNS = {
    "clip_id",
    "take_uid",
    "take_name",
    "annotation_uid",
    "timestamp_sec",
    "start_sec",
    "end_sec",
    "beta_sec",
    "alpha_sec",
    "text",
    "text_sha1",
    "ego_cam",
    "exo_cams",
    "ego_video",
    "exo_videos",
    "parent_task_name",
    "task_name",
    "split",
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("egoexo") / "root"
    generate_world(root, WorldConfig(num_takes=4, seed=1, actions_per_take=4, write_qa=False))
    return root


@pytest.fixture(scope="module")
def truth(world):
    return {t["take_uid"]: t for t in json.loads((world / "synthetic_world.json").read_text())["takes"]}


@pytest.fixture(scope="module")
def built(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "ego_exoclip"
    info = build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(world)), out)
    return out, info


def _uid(truth, quirk):
    return next(uid for uid, take in truth.items() if quirk in take["quirks"])


# --------------------------------------------------------------------------------------------- eq. 1
def test_clip_bounds_hand_computed():
    # beta = (4 - 1) / 4 = 0.75, half = 0.75 / (2 * 2) = 0.1875; three narrations share t = 2.
    beta, bounds = clip_bounds([1.0, 2.0, 2.0, 2.0, 4.0], duration=5.0, alpha=2.0)
    assert beta == 0.75
    got = [(round(b.start_sec, 6), round(b.end_sec, 6), b.widened) for b in bounds]
    assert got == [
        (0.8125, 1.1875, False),  # first: t_(-1) = 0 does not bind
        (1.8125, 2.0, False),  # end clamped to the equal next timestamp
        (round(2 - 1 / 60, 6), round(2 + 1 / 60, 6), True),  # [2, 2] widened to one frame
        (2.0, 2.1875, False),
        (3.8125, 4.1875, False),
    ]  # last: t_n = duration does not bind
    # First and last narrations where the boundary neighbours 0 and the duration bind.
    _, bounds = clip_bounds([0.05, 4.95], duration=5.0, alpha=2.0)  # half = 4.9 / 4 = 1.225
    assert [(round(b.start_sec, 6), round(b.end_sec, 6)) for b in bounds] == [(0.0, 1.275), (3.725, 5.0)]
    _, [single] = clip_bounds([3.0], duration=10.0, alpha=1.92)  # beta := alpha: half = 0.5 s
    assert (single.start_sec, single.end_sec) == (2.5, 3.5)
    with pytest.raises(ValueError, match="sorted"):
        clip_bounds([2.0, 1.0], duration=5.0, alpha=1.0)


# --------------------------------------------------------------------------------------------- builder
def test_drop_counts_per_reason(built, world, truth):
    _, info = built
    train = json.loads((world / "annotations/atomic_descriptions_train.json").read_text())["annotations"]
    per_take = {uid: sum(len(a["descriptions"]) for a in entries) for uid, entries in train.items()}
    rejected_take = _uid(truth, "rejected_annotation")
    assert info["drops"] == {
        "takes": {"no_ego_camera": 1, "no_uid_mapping": 1, "not_train": 1},
        "annotations": {"rejected": 1},
        "narrations": {
            "no_ego_camera": per_take[_uid(truth, "no_ego_stream")],
            "no_uid_mapping": per_take[_uid(truth, "missing_from_takes_json")],
            "not_train": per_take[_uid(truth, "test_take_in_train_annotations")],
            "rejected_annotation": len(train[rejected_take][1]["descriptions"]),
            "duplicate_description": 1,
        },
    }
    kept_takes = [uid for uid, t in truth.items() if t["split"] == "train" and t["rendered"]]
    expected_rows = sum(per_take[uid] for uid in kept_takes) - len(train[rejected_take][1]["descriptions"]) - 1
    assert info["counts"]["narrations_kept"] == expected_rows
    assert info["counts"]["takes_kept"] == len(kept_takes) == 3
    assert info["counts"]["videos_kept"] == 3 * 5 and info["counts"]["ego_exo_pairs"] == 4 * expected_rows
    assert info["skips"]["takes/not_train"] == 1


def test_builder_boundaries_on_the_planted_duplicates(built, world, truth):
    out, info = built
    clips = load_folder(out, "clips", split="train")
    uid = _uid(truth, "duplicate_timestamps")
    rows = [r for r in clips if r["take_uid"] == uid]
    train = json.loads((world / "annotations/atomic_descriptions_train.json").read_text())["annotations"][uid]
    merged = sorted({(d["timestamp"], d["text"]) for a in train for d in a["descriptions"]})
    times = [t for t, _ in merged]
    assert [r["timestamp_sec"] for r in rows] == times  # merged, sorted, the exact duplicate removed
    half = (times[-1] - times[0]) / (len(times) - 1) / (2 * 1.92)
    duration = truth[uid]["duration_sec"]
    first, last = rows[0], rows[-1]
    assert first["start_sec"] == pytest.approx(max(times[0] - half, 0.0))
    assert first["end_sec"] == pytest.approx(min(times[0] + half, times[1]))
    assert last["start_sec"] == pytest.approx(max(times[-1] - half, times[-2]))
    assert last["end_sec"] == pytest.approx(min(times[-1] + half, duration))
    triple = [r for r in rows if r["timestamp_sec"] == times[0]]
    assert len(triple) == 3 and [r["widened"] for r in triple] == [False, True, False]
    assert triple[1]["end_sec"] - triple[1]["start_sec"] == pytest.approx(1 / 30)
    assert all(r["alpha_sec"] == 1.92 and r["split"] == "train" for r in rows)


def test_camera_resolution_with_quirks(built, truth):
    out, _ = built
    takes = {r["take_uid"]: r for r in load_folder(out, "takes", split="train")}
    gp = takes[_uid(truth, "gp_camera_ids")]
    assert gp["ego_cam"] == "aria02" and gp["exo_cams"] == ["gp01", "gp02", "gp03", "gp04"]
    assert gp["ego_video"] == f"takes/{gp['take_name']}/frame_aligned_videos/aria02_214-1.mp4"
    assert gp["exo_videos"][0] == f"takes/{gp['take_name']}/frame_aligned_videos/gp01.mp4"
    plain = takes[_uid(truth, "duplicate_timestamps")]
    assert plain["ego_cam"] == "aria01" and plain["exo_cams"] == ["cam01", "cam02", "cam03", "cam04"]
    # Unit cases: string is_ego, two ego devices (prefer the Aria), no exo camera.
    videos = {
        "head": {"rgb": {"relative_path": "frame_aligned_videos/head.mp4"}},
        "aria03": {"rgb": {"relative_path": "frame_aligned_videos/aria03_214-1.mp4"}},
        "cam01": {"0": {"relative_path": "frame_aligned_videos/cam01.mp4"}},
        "collage": {"0": {"relative_path": "x.mp4"}},
        "best_exo": {"0": {"relative_path": None}},
    }
    take = {
        "take_name": "t",
        "root_dir": "takes/t",
        "frame_aligned_videos": videos,
        "capture": {
            "cameras": [
                {"cam_id": "head", "is_ego": "1"},
                {"cam_id": "aria03", "is_ego": "TRUE"},
                {"cam_id": "cam01", "is_ego": "false"},
            ]
        },
    }
    cameras = resolve_cameras(take, "takes.json")
    assert (cameras.ego_cam, cameras.exo_cams) == ("aria03", ("cam01",))
    del videos["cam01"]
    assert resolve_cameras(take, "takes.json") == "no_exo_camera"
    take["capture"]["cameras"][0]["is_ego"] = "maybe"
    with pytest.raises(RowError, match=r"capture\.cameras\.0\.is_ego"):
        resolve_cameras(take, "takes.json")


def test_hub_folder_round_trip(built, world):
    out, info = built
    # The issue's contract, read through datasets' own loader (rebuilt so no stale cache can answer).
    clips = datasets.load_dataset(str(out), "clips", split="train", download_mode="force_redownload")
    assert clips["clip_id"] == load_folder(out, "clips", split="train")["clip_id"]
    assert REQUIRED_COLUMNS <= set(clips.column_names) and clips.features == CLIP_FEATURES
    assert len(clips) == info["counts"]["narrations_kept"] and len(set(clips["clip_id"])) == len(clips)
    assert all(r["text"] and hashlib.sha1(r["text"].encode()).hexdigest() == r["text_sha1"] for r in clips)
    assert all(
        (world / r["ego_video"]).is_file() and all((world / p).is_file() for p in r["exo_videos"]) for r in clips
    )
    assert load_folder(out, "takes", split="train").num_rows == 3
    uids = (out / "ego_exoclip_take_uids.txt").read_text().split()
    assert uids == sorted(set(clips["take_uid"]))
    card = (out / "README.md").read_text()
    configs = {c["config_name"]: c for c in yaml.safe_load(card.split("---")[1])["configs"]}
    assert set(configs) == {"clips", "takes"} and configs["clips"]["default"]
    assert "licence" in card.lower() and "egoexo -o" in card
    for plot in info["plots"].values():
        assert (out / plot).stat().st_size > 1000
    assert set(info["alpha"]["recomputed"]) == {"take", "annotation"} and info["alpha"]["used"] == 1.92
    assert info["alpha"]["recomputed"]["take"] < info["alpha"]["recomputed"]["annotation"]
    stats = info["statistics"]
    assert stats["clip_duration_sec"]["mean"] > 0 and 0 <= stats["clip_duration_sec"]["percent_under_1s"] <= 100
    assert stats["narration_words"]["mean"] > 3 and sum(stats["scenarios"]["takes"].values()) == 3


def test_options_auto_alpha_annotation_sequence_and_448(built, world, tmp_path):
    _, info = built
    plan = plan_ego_exoclip(
        EgoExoClipOptions(
            egoexo_root=str(world), alpha="auto", sequence="annotation", variant="448", check_videos=False
        )
    )
    assert plan.alpha["used"] == pytest.approx(info["alpha"]["recomputed"]["annotation"])
    assert "duplicate_description" not in plan.drops.as_dict()["narrations"]  # duplicates across annotators stay
    assert len(plan.clips) == info["counts"]["narrations_kept"] + 1
    assert all("/frame_aligned_videos/downscaled/448/" in row["ego_video"] for row in plan.clips)
    with pytest.raises(ValueError, match="sequence"):
        EgoExoClipOptions(egoexo_root=str(world), sequence="video")


def test_deterministic_parquet_and_multiprocess(built, world, tmp_path):
    out, _ = built
    build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(world), num_proc=2), tmp_path / "again")
    for config in ("clips", "takes"):
        path = f"data/{config}/train-00000-of-00001.parquet"
        assert (out / path).read_bytes() == (tmp_path / "again" / path).read_bytes()


# --------------------------------------------------------------------------------------------- annotations only
def test_annotations_only_then_restore(built, world, tmp_path):
    out, _ = built
    metadata_only = tmp_path / "metadata_only"  # the publisher needs no video
    (metadata_only / "annotations").mkdir(parents=True)
    shutil.copy(world / "takes.json", metadata_only)
    for name in ("splits.json", "atomic_descriptions_train.json"):
        shutil.copy(world / "annotations" / name, metadata_only / "annotations")
    published = tmp_path / "published"
    info = build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(metadata_only), annotations_only=True), published)
    clips = load_folder(published, "clips", split="train")
    assert set(clips["text"]) == {None} and all(len(h) == 40 for h in clips["text_sha1"])
    assert not info["text_included"]

    restored_info = restore_text(
        str(published), EgoExoClipOptions(egoexo_root=str(world), variant="448"), tmp_path / "local"
    )
    restored = load_folder(tmp_path / "local", "clips", split="train")
    full = load_folder(out, "clips", split="train")
    assert restored["text"] == full["text"] and restored["start_sec"] == full["start_sec"]
    assert restored_info["counts"]["texts_verified"] == len(full)
    assert all("/downscaled/448/" in path for path in restored["ego_video"])

    tampered = tmp_path / "tampered"
    shutil.copytree(metadata_only, tampered)
    path = tampered / "annotations/atomic_descriptions_train.json"
    payload = json.loads(path.read_text())
    take_uid = clips[0]["take_uid"]
    annotation = next(a for a in payload["annotations"][take_uid] if a["annotation_uid"] == clips[0]["annotation_uid"])
    annotation["descriptions"][clips[0]["desc_index"]]["text"] += " (edited)"
    path.write_text(json.dumps(payload))
    options = EgoExoClipOptions(egoexo_root=str(tampered), check_videos=False)
    with pytest.raises(RowError, match=rf"clip {clips[0]['clip_id']}.*'text'.*SHA-1"):
        restore_text(str(published), options, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    options.skip_bad = True
    skipped = restore_text(str(published), options, tmp_path / "skipped")
    assert skipped["drops"]["narrations"] == {"text_hash_mismatch": 1}
    assert skipped["counts"]["narrations_kept"] == len(clips) - 1


# --------------------------------------------------------------------------------------------- bad input
def _copy(world, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(world, root)
    return root


def test_bad_input_errors_and_counted_skips(world, truth, tmp_path):
    root = _copy(world, tmp_path)
    out = tmp_path / "out"

    (root / "takes.json").rename(root / "takes.moved")
    with pytest.raises(SourceFileError, match=r"takes\.json"):
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root)), out)
    (root / "takes.moved").rename(root / "takes.json")

    path = root / "annotations/atomic_descriptions_train.json"
    original = path.read_text()
    payload = json.loads(original)
    uid = _uid(truth, "duplicate_timestamps")
    payload["annotations"][uid][0]["descriptions"][2]["timestamp"] = "soon"
    path.write_text(json.dumps(payload))
    with pytest.raises(
        RowError,
        match=rf"atomic_descriptions_train\.json: row take {uid} annotation 0 description 2: field 'timestamp'",
    ):
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root)), out)
    info = build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root), skip_bad=True), out)
    assert info["drops"]["narrations"]["malformed"] == 1 and info["bad_rows"]["skipped_rows"] == 1
    shutil.rmtree(out)
    path.write_text(original)

    take = truth[uid]
    video = root / "takes" / take["take_name"] / "frame_aligned_videos" / f"{take['exo_cams'][1]}.mp4"
    video.rename(video.with_suffix(".gone"))
    with pytest.raises(SourceFileError, match=rf"missing video: .*{take['exo_cams'][1]}\.mp4"):
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root)), out)
    info = build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root), skip_bad=True), out)
    assert info["drops"]["takes"]["missing_video"] == 1 and info["counts"]["takes_kept"] == 2
    shutil.rmtree(out)

    video.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(SourceFileError, match="unreadable video"):
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root)), out)
    # Nothing half-written is left: no output folder and no staging folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_cli_push_to_hub_one_commit(world, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from datasets_scripts.ego_exoclip.cli import add_parser

    commits = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: None)
    monkeypatch.setattr(
        HfApi,
        "create_commit",
        lambda self, repo_id, operations, **kw: (
            commits.append((repo_id, sorted(op.path_in_repo for op in operations))) or "url"
        ),
    )
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    out = tmp_path / "pub"
    args = parser.parse_args(
        [
            "ego-exoclip",
            "--egoexo-root",
            str(world),
            "--out",
            str(out),
            "--push-to-hub",
            "org/ego-exoclip",
            "--alpha",
            "auto",
        ]
    )
    assert args.func(args) == 2 and not out.exists() and commits == []  # text would be uploaded: refused
    args = parser.parse_args(
        [
            "ego-exoclip",
            "--egoexo-root",
            str(world),
            "--out",
            str(out),
            "--annotations-only",
            "--push-to-hub",
            "org/ego-exoclip",
        ]
    )
    assert args.func(args) == 0
    [(repo, files)] = commits
    assert repo == "org/ego-exoclip"
    assert {
        "README.md",
        "build_info.json",
        "ego_exoclip_take_uids.txt",
        "data/clips/train-00000-of-00001.parquet",
        "data/takes/train-00000-of-00001.parquet",
        "stats/clip_durations.png",
    } <= set(files)
    assert not any(name.endswith(".mp4") for name in files)
    args = parser.parse_args(["ego-exoclip", "--egoexo-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert args.func(args) == 2

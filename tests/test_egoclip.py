"""EgoClip (egoclip.csv, tab-separated) -> captioning rows for the initialization stage."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

from test_egoit import load  # cache-isolated load_dataset (sibling test module)

from datasets_scripts.egoclip import cli as egoclip_cli
from datasets_scripts.schema import EGOIT_FEATURES

HEADER = [
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


def write_egoclip(root: Path, bad: bool = False) -> None:
    root.mkdir(parents=True)
    rows = [
        [
            0,
            "002ad105-bd9a-4858-953e-54e88dc7587e",
            1200.0,
            "narration_pass_1",
            0,
            3.3445,
            2.967651,
            3.721266,
            "#C C picks a bag of clothes from the floor",
            "[93]",
            "[192]",
        ],
        [
            1,
            "002ad105-bd9a-4858-953e-54e88dc7587e",
            1200.0,
            "narration_pass_1",
            1,
            599.8,
            599.5,
            600.3,
            "#C C drops the bag #unsure",
            "[21]",
            "[192]",
        ],
        [
            2,
            "002d2729-df71-438d-8396-5895b349e8fd",
            300.0,
            "narration_pass_2",
            0,
            612.0,
            611.6,
            612.4,
            "#O man X opens the door",
            "[50]",
            "[77]",
        ],
        [
            3,
            "002d2729-df71-438d-8396-5895b349e8fd",
            300.0,
            "narration_pass_2",
            1,
            20.0,
            19.5,
            20.5,
            "#C C closes the window",
            "[5]",
            "[80]",
        ],
    ]
    if bad:
        rows.insert(
            2, [9, "002d2729-df71-438d-8396-5895b349e8fd", 300.0, "narration_pass_2", 3, 50.0, 52.0]
        )  # truncated line
        rows.append(
            [
                10,
                "002d2729-df71-438d-8396-5895b349e8fd",
                300.0,
                "narration_pass_2",
                4,
                60.0,
                61.0,
                60.5,
                "#C C sits",
                "[1]",
                "[2]",
            ]
        )  # clip ends before it starts
    with open(root / "egoclip.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(HEADER)
        writer.writerows(rows)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    egoclip_cli.add_parser(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(["egoclip", *argv])
    return args.func(args)


def test_egoclip_rows_shards_and_layouts(tmp_path):
    root = tmp_path / "egoclip"
    write_egoclip(root)
    out = tmp_path / "out"
    assert run_cli(["--root", f"egoclip={root}", "--out", str(out), "--shard-rows", "3"]) == 0
    assert sorted(p.name for p in (out / "data" / "egoclip").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    ds = load(out, "egoclip")
    assert len(ds) == 4 and ds.features == EGOIT_FEATURES
    first = ds[0]
    assert first["id"] == "egoclip/0" and first["answer"] == "C picks a bag of clothes from the floor"
    assert (first["video"], first["video_start_sec"], first["video_end_sec"]) == (
        "v1/full_scale/002ad105-bd9a-4858-953e-54e88dc7587e.mp4",
        2.967651,
        3.721266,
    )
    assert ds[1]["answer"] == "C drops the bag" and ds[2]["answer"] == "man X opens the door"
    assert {row["task"] for row in ds} == {"captioning"} and all(0 <= i < 10 for i in ds["instruction_id"])
    # The same rows as initialization captions, the folder's default config (what init's ego branch reads).
    from datasets_scripts.schema import CAPTION_FEATURES
    from train.data import CaptionSamples

    captions = load(out, "captions")
    assert captions.features == CAPTION_FEATURES and captions["id"] == ds["id"]
    assert captions[0] == {
        "id": "egoclip/0",
        "source": "egoclip",
        "media_type": "video",
        "media": first["video"],
        "start_sec": 2.967651,
        "end_sec": 3.721266,
        "prompt": "",
        "caption": "C picks a bag of clothes from the floor",
    }
    assert len(CaptionSamples(captions, str(root), 4, "ego", "Describe.")) == 4

    # EgoVLP's 600 s chunks: times become chunk-relative; a clip across a chunk boundary is skipped and counted.
    chunked = tmp_path / "chunked"
    assert run_cli(["--root", f"egoclip={root}", "--out", str(chunked), "--video-layout", "egovlp_chunks"]) == 0
    rows = load(chunked, "egoclip")
    assert rows["id"] == ["egoclip/0", "egoclip/2", "egoclip/3"]
    assert (rows[1]["video"], rows[1]["video_start_sec"]) == (
        "002d2729-df71-438d-8396-5895b349e8fd/1.mp4",
        11.600000000000023,
    )
    assert json.loads((chunked / "build_info.json").read_text())["skips"]["by_source_field"] == {
        "egoclip/crosses_chunk": 1
    }

    again = tmp_path / "again"
    assert run_cli(["--root", f"egoclip={root}", "--out", str(again), "--shard-rows", "3"]) == 0
    for name in ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet"):
        digests = {
            hashlib.sha1((folder / "data" / "egoclip" / name).read_bytes()).hexdigest() for folder in (out, again)
        }
        assert len(digests) == 1


def test_egoclip_bad_rows(tmp_path, capsys):
    root = tmp_path / "egoclip"
    write_egoclip(root, bad=True)
    assert run_cli(["--root", f"egoclip={root}", "--out", str(tmp_path / "out")]) == 2
    assert "egoclip.csv: row 4: field '(columns)': expected 11 fields, got 7" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert (
        run_cli(["--root", f"egoclip={root}", "--out", str(tmp_path / "out"), "--skip-bad-rows", "--max-rows", "3"])
        == 0
    )
    info = json.loads((tmp_path / "out" / "build_info.json").read_text())
    assert info["counts"] == {"egoclip": 3, "captions": 3}
    assert info["skips"]["by_source_field"] == {"egoclip/(columns)": 1}
    assert run_cli(["--root", f"egoclip={root}", "--out", str(tmp_path / "all"), "--skip-bad-rows"]) == 0
    info = json.loads((tmp_path / "all" / "build_info.json").read_text())
    assert info["skips"]["by_source_field"] == {"egoclip/(columns)": 1, "egoclip/clip_end": 1}
    assert info["counts"] == {"egoclip": 4, "captions": 4}
    (root / "egoclip.csv").unlink()
    assert run_cli(["--root", f"egoclip={root}", "--out", str(tmp_path / "none")]) == 2
    assert "egoclip: required file not found" in capsys.readouterr().err

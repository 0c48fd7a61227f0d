"""`exo2ego data pretrain`: VideoLLaMA2/LLaVA pretraining JSON -> initialization caption rows, and its bad rows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from datasets_scripts.hub_export import BUILD_INFO_NAME, CARD_NAME, load_folder
from datasets_scripts.pretrain import cli as pretrain_cli
from datasets_scripts.schema import CAPTION_FEATURES


def turns(prompt="<video>\nDescribe the video briefly.", caption="A dog runs across a lawn."):
    return [{"from": "human", "value": prompt}, {"from": "gpt", "value": caption}]


GOOD_RECORDS = [
    {"id": 17, "video": "panda/000017.mp4", "conversations": turns()},
    {"id": "cc3m-5", "image": "cc3m/000005.jpg", "conversations": turns("<image>\nWhat is shown?", "A red kite.")},
    # VideoLLaMA2's README example: an image under the "video" key, with the <image> tag.
    {"id": 18, "video": "dci/./000018.png", "conversations": turns("Describe.\n<image>", "A blue car.")},
]


def write_source(root: Path, records, name="pretrain.json", media=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if media:
        for relative in ("panda/000017.mp4", "cc3m/000005.jpg", "dci/000018.png"):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_bytes(b"media")
    path = root / name
    if name.endswith(".jsonl"):
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    else:
        path.write_text(json.dumps(records))
    return path


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    pretrain_cli.add_parser(parser.add_subparsers(dest="data_command", required=True))
    args = parser.parse_args(["pretrain", *argv])
    return args.func(args)


def test_video_and_image_records_become_caption_rows(tmp_path):
    root = tmp_path / "videollama2"
    write_source(root, GOOD_RECORDS)
    write_source(
        root,
        [{"id": 99, "video": "panda/000017.mp4", "conversations": turns(caption="  Waves.  ")}],
        name="extra.jsonl",
        media=False,
    )
    out = tmp_path / "out"
    assert run_cli(["--root", f"videollama2={root}", "--out", str(out), "--check-videos"]) == 0
    assert (out / CARD_NAME).is_file() and (out / BUILD_INFO_NAME).is_file()
    rows = load_folder(out, "captions", split="train")
    assert rows.features == CAPTION_FEATURES
    assert rows["id"] == ["videollama2/99", "videollama2/17", "videollama2/cc3m-5", "videollama2/18"]  # files sorted
    assert rows[1] == {
        "id": "videollama2/17",
        "source": "videollama2",
        "media_type": "video",
        "media": "panda/000017.mp4",
        "start_sec": None,
        "end_sec": None,
        "prompt": "Describe the video briefly.",
        "caption": "A dog runs across a lawn.",
    }
    assert rows["media_type"] == ["video", "video", "image", "image"]
    assert rows[3]["media"] == "dci/000018.png" and rows[3]["prompt"] == "Describe." and rows[0]["caption"] == "Waves."
    info = json.loads((out / BUILD_INFO_NAME).read_text())
    assert info["counts"] == {"captions": 4, "videollama2/image": 2, "videollama2/video": 2}
    assert info["annotation_files"] == {"videollama2": ["extra.jsonl", "pretrain.json"]}

    # --annotations picks files; a second source gets its own id prefix.
    llava = tmp_path / "llava"
    write_source(llava, GOOD_RECORDS[1:2], name="blip_558k.json")
    both = tmp_path / "both"
    assert (
        run_cli(
            [
                "--root",
                f"videollama2={root}",
                "--annotations",
                "videollama2=pretrain.json",
                "--root",
                f"llava={llava}",
                "--out",
                str(both),
            ]
        )
        == 0
    )
    assert load_folder(both, "captions", split="train")["id"][-1] == "llava/cc3m-5"


BAD_RECORDS = [
    ({"id": 1, "conversations": turns()}, "video|image", "no media"),
    ({"id": 2, "video": "../outside/x.mp4", "conversations": turns()}, "video", "leaves the media root"),
    ({"id": 3, "image": "/abs/x.jpg", "conversations": turns("<image>")}, "image", "absolute path"),
    (
        {"id": 4, "video": "panda/000017.mp4", "conversations": turns(caption="   ")},
        "conversations.1.value",
        "missing or empty",
    ),
    (
        {"id": 5, "video": "panda/000017.mp4", "conversations": turns()[:1]},
        "conversations",
        "expected [human turn, gpt turn]",
    ),
    (
        {"id": 6, "video": "panda/000017.mp4", "conversations": turns("no tag here")},
        "conversations.0.value",
        "exactly one",
    ),
    (
        {"id": 7, "video": "panda/000017.mp4", "conversations": [turns()[1], turns()[0]]},
        "conversations.0.from",
        "'human' turn",
    ),
    ({"id": 17, "video": "panda/000017.mp4", "conversations": turns()}, "id", "duplicate id 'videollama2/17'"),
]


@pytest.mark.parametrize("record,field,problem", BAD_RECORDS, ids=[problem for _, _, problem in BAD_RECORDS])
def test_bad_record_names_file_row_and_field_and_nothing_is_built(tmp_path, capsys, record, field, problem):
    root = tmp_path / "videollama2"
    path = write_source(root, [*GOOD_RECORDS, record])
    out = tmp_path / "out"
    assert run_cli(["--root", f"videollama2={root}", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert f"{path}: row 3: field '{field}':" in error and problem in error
    assert not out.exists() and not list(tmp_path.glob("out.tmp-*"))  # nothing half-written


def test_missing_media_with_check_and_counted_skips(tmp_path, capsys):
    root = tmp_path / "videollama2"
    path = write_source(root, [*GOOD_RECORDS, {"id": 8, "video": "panda/missing.mp4", "conversations": turns()}])
    assert run_cli(["--root", f"videollama2={root}", "--out", str(tmp_path / "unchecked")]) == 0  # paths only
    assert run_cli(["--root", f"videollama2={root}", "--out", str(tmp_path / "out"), "--check-videos"]) == 2
    assert f"{path}: row 3: field 'video': media file not found" in capsys.readouterr().err

    jsonl = write_source(
        root,
        [record for record, _, _ in BAD_RECORDS] + [{"id": 9, "video": "panda/missing.mp4", "conversations": turns()}],
        name="more.jsonl",
        media=False,
    )
    # Files are read in name order: broken, more (whose id 17 comes first), pretrain (id 17 now the duplicate).
    (root / "broken.jsonl").write_text('{"id": 10,\n')
    out = tmp_path / "skipped"
    assert run_cli(["--root", f"videollama2={root}", "--out", str(out), "--check-videos", "--skip-bad-rows"]) == 0
    info = json.loads((out / BUILD_INFO_NAME).read_text())
    assert info["counts"]["captions"] == 3 and info["skips"]["skipped_rows"] == 11
    assert info["skips"]["by_source_field"] == {
        "videollama2/(json)": 1,
        "videollama2/conversations": 1,
        "videollama2/conversations.0.from": 1,
        "videollama2/conversations.0.value": 1,
        "videollama2/conversations.1.value": 1,
        "videollama2/id": 1,
        "videollama2/image": 1,
        "videollama2/video": 3,
        "videollama2/video|image": 1,
    }
    assert any(str(jsonl) in example for example in info["skips"]["examples"])

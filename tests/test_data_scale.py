"""Builders at scale: the streamed JSON readers and the incremental Parquet writer give the same bytes as the
whole-file code they replaced, and a builder's peak Python memory does not grow with the number of rows.

The ``EXPECTED_*`` digests were computed with the builders as they were before JSON arrays were streamed (the
whole file parsed by ``json.load``, each Parquet shard written from a list of its rows): the Parquet bytes are
compared when pyarrow and datasets are the versions that wrote them, the decoded rows and build_info always.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from pathlib import Path

import pytest

# --------------------------------------------------------------------------------------------- fixtures
WORDS = (
    "a dog runs across the lawn while a man in a red coat holds a cup of coffee near the old wooden table "
    "and the camera pans slowly to the left showing café crème 日本語 naïve über ünïcödé emoji 🙂 text"
).split()
SUFFIXES = ((".mp4", "video"), (".mkv", "video"), (".jpg", "image"), (".png", "video"), (".webp", "image"))


def pretrain_record(index: int, rng: random.Random) -> dict:
    """One VideoLLaMA2-style record; some are bad rows (the builder's skips), ids vary in type."""
    suffix, key = SUFFIXES[index % len(SUFFIXES)]
    record_id: object = index if index % 3 else f"web-{index:07d}"
    if index % 97 == 5:
        record_id = index + 0.5
    caption = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30)))
    if index % 11 == 0:
        caption = f'  {caption} "quoted", a\\back\tslash\nnew line  '
    tag = "<image>" if key == "image" else "<video>"
    prompt = f"{tag}\nDescribe the {key} briefly." if index % 4 else f"What happens here? {tag}"
    record = {
        "id": record_id,
        key: f"panda/{index // 1000:04d}/{index:07d}{suffix}" if index % 13 else f"./sub\\dir/{index}{suffix}",
        "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": caption}],
    }
    if index % 501 == 7:
        record["conversations"] = record["conversations"][:1]  # bad: one turn
    if index % 733 == 9:
        record[key] = f"/abs/{index}{suffix}"  # bad: absolute path
    if index % 911 == 3:
        record["id"] = 3  # bad after the first: duplicate id
    return record


def write_pretrain_json(path: Path, indices, *, seed: int = 0, indent: int | None = None, ascii: bool = True) -> Path:
    """A JSON array of :func:`pretrain_record` rows, written record by record (a generator is never a list)."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for number, index in enumerate(indices):
            handle.write(",\n" if number else "\n")
            handle.write(json.dumps(pretrain_record(index, rng), indent=indent, ensure_ascii=ascii))
        handle.write("\n]\n")
    return path


def write_pretrain_sources(base: Path, rows: int = 23_000) -> dict[str, Path]:
    """Two sources, four files: a large array (2+ row groups per shard), JSON Lines, an indented non-ASCII array
    and an array with an integer past 64 bits (which the streaming parser cannot hold: the whole-file fallback)."""
    roots = {"videollama2": base / "videollama2", "llava": base / "llava"}
    write_pretrain_json(roots["videollama2"] / "a_big.json", range(rows), seed=1)
    rng = random.Random(2)
    with open(roots["videollama2"] / "b_lines.jsonl", "w", encoding="utf-8") as handle:
        for index in range(rows, rows + 1500):
            handle.write(json.dumps(pretrain_record(index, rng)) + "\n")
        handle.write('{"id": "broken",\n')
    write_pretrain_json(roots["llava"] / "c_indented.json", range(500), seed=3, indent=2, ascii=False)
    records = [pretrain_record(index, random.Random(4)) for index in range(600, 640)]
    records[5]["id"] = 2**70
    (roots["llava"] / "d_bigint.json").write_text(json.dumps(records), encoding="utf-8")
    return roots


def egoclip_csv(path: Path, rows: int) -> Path:
    rng = random.Random(5)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(
            [
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
        )
        for index in range(rows):
            start = round(rng.uniform(0, 1000), 6)
            text = "#C C " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
            writer.writerow(
                [index, f"video-{index % 37:03d}", 1200.0, "narration_pass_1", index, start, start, start + 1.5, text]
                + ["[1]", "[2]"]
            )
    return path


def write_egotimeqa(root: Path, rows: int) -> Path:
    rng = random.Random(6)
    path = root / "data" / "unified" / "annotations.EgoTimeQA.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(rows):
        start = rng.uniform(0, 400)
        records.append(
            {
                "video_id": f"clip-{index % 53:04d}",
                "sample_id": index if index % 7 else None,
                "question": "What did I " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + "?",
                "answer": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
                "start_sec": start,
                "end_sec": start + rng.uniform(-1, 30),  # some empty intervals: bad rows
            }
        )
    path.write_text(json.dumps(records), encoding="utf-8")
    return root


# --------------------------------------------------------------------------------------------- digests
def _sha(value) -> str:
    data = value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:32]


def folder_digests(folder: Path, base: Path) -> dict[str, object]:
    """SHA-256 of the Parquet files, of the rows they decode to, of the card and of build_info (without its
    versions, and with the fixture's folder ``base`` written as ``BASE``)."""
    import pyarrow.parquet as pq

    files, rows = {}, {}
    for path in sorted(folder.rglob("*.parquet")):
        relative = path.relative_to(folder).as_posix()
        files[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        decoded = json.dumps(pq.read_table(path).to_pylist(), sort_keys=True, default=repr, ensure_ascii=False)
        rows[relative] = hashlib.sha256(decoded.encode()).hexdigest()
    info = json.loads((folder / "build_info.json").read_text().replace(str(base), "BASE"))
    info.pop("versions", None)
    return {
        "names": sorted(files),
        "files": _sha(files),
        "rows": _sha(rows),
        "card": _sha((folder / "README.md").read_bytes()),
        "build_info": _sha(info),
    }


# Written by the builders before this change (pyarrow 26.0.1, datasets 5.2.0), on the fixtures below.
WRITTEN_WITH = {"pyarrow": "26.0.1", "datasets": "5.2.0"}
EXPECTED = {
    "pretrain": {
        "files": "b952adf067fc7c772d6d9c9c44f42631",
        "rows": "29218b4782bbe80b9e2ab1ccb36d82c4",
        "card": "3bac8ae30acfd4ad916e93772608d1a5",
        "build_info": "cc69dd2255f0cc76c2e4fc943604aca1",
        "names": ["data/captions/train-00000-of-00002.parquet", "data/captions/train-00001-of-00002.parquet"],
    },
    "pretrain_max_rows": {
        "files": "f8326370a8d3e69d589258402c2a2176",
        "rows": "372f5ee77efa77c6c37ec521c0f13eac",
        "card": "ba478d45cc80d2dd11dec8395346d662",
        "build_info": "ac595158a1c07e95a0bb2108738721da",
        "names": [
            "data/captions/train-00000-of-00003.parquet",
            "data/captions/train-00001-of-00003.parquet",
            "data/captions/train-00002-of-00003.parquet",
        ],
    },
    "egoclip": {
        "files": "605d0351605def2bc3c720aa25d43b15",
        "rows": "f64365924aa72ea586f0b65aab05523c",
        "card": "2a5afa2a58dc71bfe278843caed85dd9",
        "build_info": "b26f5fc9fbd6edc153233a601e746d9d",
        "names": [
            "data/captions/train-00000-of-00002.parquet",
            "data/captions/train-00001-of-00002.parquet",
            "data/egoclip/train-00000-of-00002.parquet",
            "data/egoclip/train-00001-of-00002.parquet",
        ],
    },
    "egoit": {
        "files": "61fddf51c9d24bf04d5ddaa39198d5c4",
        "rows": "3f595bedd611ac22206e8fc1ee054964",
        "card": "9d7accea207835e50edc0f536e902847",
        "build_info": "7bac8b1870053eca0864826fc4c342b0",
        "names": [
            "data/egoexolearn/train-00000-of-00001.parquet",
            "data/egotimeqa/train-00000-of-00001.parquet",
            "data/egtea/train-00000-of-00001.parquet",
            "data/openeqa/train-00000-of-00001.parquet",
            "data/ssv2/train-00000-of-00001.parquet",
        ],
        "llava_json": "6aab3324ac8f675fb4c3793f1536c81f",
    },
    "egoit_big": {
        "files": "e2c98e4a19a2f70d285eedd386494c34",
        "rows": "353bc10bbbac3b35926204698f6898a6",
        "card": "e16a5b185cd7ebd32cda927802359d22",
        "build_info": "879d3a706196361b3572af2069ac6486",
        "names": ["data/egotimeqa/train-00000-of-00001.parquet"],
    },
    "egobench": {
        "files": "c3a4502f4ad5db1fe7e525c5e2b7db72",
        "rows": "e0ce2e7923c38eca24d91ec83afa9b02",
        "card": "ea0910bf6f63be49d1a0cbf59e43e8ce",
        "build_info": "e4d57723b73986bb6e220b9ede7b0723",
        "names": [
            "data/egoplan/test-00000-of-00001.parquet",
            "data/egoschema_full/test-00000-of-00001.parquet",
            "data/egoschema_subset/test-00000-of-00001.parquet",
            "data/qaego4d_closed/test-00000-of-00001.parquet",
            "data/qaego4d_open/test-00000-of-00001.parquet",
            "data/vlnqa/test-00000-of-00001.parquet",
        ],
    },
    "ego_exoclip": {
        "files": "fe434fe6fb491c35039d5f855800a5a4",
        "rows": "75564a78d2f6517a52c8fddc0018f4bb",
        "card": "df396c18a80267a7f00e9206c1b4139e",
        "build_info": "45f165944102015bb341e240d70e7f2c",
        "names": ["data/clips/train-00000-of-00001.parquet", "data/takes/train-00000-of-00001.parquet"],
    },
}


def build_fixture(builder: str, base: Path) -> dict[str, object]:
    """Build one builder's fixture: sources in ``base/<builder>_src``, the folder ``base/<builder>`` (the layout the
    expected build_info, which names source files, was written with); return :func:`folder_digests` (and the
    digests of extra outputs)."""
    out, src = base / builder, base / f"{builder}_src"
    extra = {}
    if builder == "pretrain":
        from datasets_scripts.pretrain.build import build_pretrain

        build_pretrain(write_pretrain_sources(src), out, skip_bad_rows=True, shard_rows=20_000, args={"x": 1})
    elif builder == "pretrain_max_rows":  # stops inside a batch of the second file, after skips
        from datasets_scripts.pretrain.build import build_pretrain

        build_pretrain(write_pretrain_sources(src), out, skip_bad_rows=True, max_rows=23_800, shard_rows=9_000)
    elif builder == "egoclip":
        from datasets_scripts.egoclip.build import build_egoclip

        egoclip_csv(src / "egoclip.csv", 12_000)
        build_egoclip(src, out, shard_rows=11_000)
    elif builder == "egoit":
        from test_egoit import write_all

        from datasets_scripts.egoit.build import build_egoit

        llava = base / "egoit_llava.json"
        build_egoit(write_all(src), out, skip_bad_rows=True, llava_json=llava, check_video_files=True)
        extra["llava_json"] = _sha(llava.read_bytes())
    elif builder == "egoit_big":
        from datasets_scripts.egoit.build import build_egoit

        build_egoit({"egotimeqa": write_egotimeqa(src, 12_500)}, out, skip_bad_rows=True)
    elif builder == "egobench":
        from test_egobench import write_qa_sources

        from datasets_scripts.egobench.build import build_egobench

        build_egobench(write_qa_sources(src), out)
    elif builder == "ego_exoclip":
        from datasets_scripts.ego_exoclip import EgoExoClipOptions, build_ego_exoclip
        from datasets_scripts.synthetic.world import WorldConfig, plan_world, write_metadata

        config = WorldConfig(num_takes=6, seed=1, actions_per_take=4, write_qa=False)
        plans, extras = plan_world(config)
        write_metadata(src, plans, extras, config)
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(src), annotations_only=True), out)
    return {**folder_digests(out, base), **extra}


@pytest.mark.parametrize("builder", list(EXPECTED))
def test_builders_write_the_bytes_they_wrote_before(tmp_path, builder):
    import datasets
    import pyarrow

    digests = build_fixture(builder, tmp_path)
    expected = dict(EXPECTED[builder])
    if {"pyarrow": pyarrow.__version__, "datasets": datasets.__version__} != WRITTEN_WITH:
        expected.pop("files")  # other library versions may compress otherwise: the decoded rows must still match
        digests.pop("files")
    assert digests == expected


# --------------------------------------------------------------------------------------------- memory
def build_peak(tmp_path: Path, builder: str, rows: int) -> int:
    """Peak Python memory (tracemalloc, bytes) of one build of a generated ``rows``-record source."""
    import tracemalloc

    from datasets_scripts.egoclip.build import build_egoclip
    from datasets_scripts.egoit.build import build_egoit
    from datasets_scripts.pretrain.build import build_pretrain

    root, out = tmp_path / f"{builder}{rows}_src", tmp_path / f"{builder}{rows}"
    if builder == "pretrain":
        write_pretrain_json(root / "pretrain.json", range(rows), seed=rows)
    elif builder == "egoit":
        write_egotimeqa(root, rows)
    else:
        egoclip_csv(root / "egoclip.csv", rows)
    tracemalloc.start()
    try:
        if builder == "pretrain":
            build_pretrain({"videollama2": root}, out, skip_bad_rows=True, shard_rows=rows // 3)
        elif builder == "egoit":
            build_egoit({"egotimeqa": root}, out, skip_bad_rows=True)
        else:
            build_egoclip(root, out)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("builder", ["pretrain", "egoit", "egoclip"])
def test_peak_memory_does_not_grow_with_rows(tmp_path, builder):
    build_peak(tmp_path, builder, 300)  # imports and first-use caches, outside the comparison
    small, large = build_peak(tmp_path, builder, 5_000), build_peak(tmp_path, builder, 20_000)
    # Growth allowed: the 8-byte id digests (20k rows: 0.2 MB) and allocator noise. A JSON file parsed whole, or
    # rows collected for a table or a shard, grow by 1 to 2 KB a row (15 to 30 MB here).
    assert large - small < 2_000_000, f"peak {small / 1e6:.1f} MB at 5k rows, {large / 1e6:.1f} MB at 20k rows"


# --------------------------------------------------------------------------------------------- streamed JSON
TRICKY_ARRAYS = {
    "plain": b'[{"id": 1, "x": [1.5, -0.0, 1e-5000, 2.50, 1E+2, true, null]}, "two", 3, {}, []]',
    "escaped_pairs": json.dumps(["\U0001f642 café" * 9, {"k\u00e9": "\U0001f600" * 7}] * 5).encode(),
    "raw_utf8": json.dumps(["\U0001f642 café 日本語" * 9] * 5, ensure_ascii=False).encode(),
    "duplicate_keys": b'[{"a": 1, "a": 2}, {"b": {"c": 1, "c": [3]}}]',
    "whitespace": b" \r\n\t" * 40 + b"[ 1 ,\n\t2 ]\n\r ",
    "empty_list": b"[]",
    "big_int": b'[1, {"id": 123456789012345678901234567890}, 3]',
    "nan": b"[1, NaN, -Infinity, 1e400]",
    "lone_high_surrogate": b'["ok", "\\ud83d", "\\ud83d\\ude00"]',
    "lone_low_surrogate": b'["ok", "x\\ude00y"]',
    "reversed_pair": b'["\\ude00\\ud83d"]',
    "not_a_list": b'{"a": [1, 2]}',
    "string_top_level": b'"abc"',
}
BROKEN_ARRAYS = {
    "syntax": b'[{"a": 1},\n {"b": oops}]',
    "truncated": b'[{"a": 1},\n {"b": 2}',
    "trailing": b"[1] [2]",
    "trailing_comma": b"[1, 2,]",
    "empty_file": b"",
    "bom": b"\xef\xbb\xbf[1]",
    "not_utf8": b'["ok", "\xff"]',
    "control_char": b'["a\nb"]',
    "form_feed": b"[1,\x0c2]",  # whitespace to yajl
    "vertical_tab": b"[1,\x0b2]",
}


def _whole(path: Path):
    from datasets_scripts.source_io import read_json

    return list(enumerate(read_json(path)))


@pytest.mark.parametrize("chunk", [5, 16, 1 << 16])
@pytest.mark.parametrize("name", list(TRICKY_ARRAYS))
def test_iter_json_array_gives_what_json_load_gives(tmp_path, monkeypatch, name, chunk):
    from datasets_scripts import source_io

    monkeypatch.setattr(source_io, "JSON_CHUNK_BYTES", chunk)
    path = tmp_path / "a.json"
    path.write_bytes(TRICKY_ARRAYS[name])
    streamed = list(source_io.iter_json_array(path))
    assert repr(streamed) == repr(_whole(path))  # repr: NaN != NaN, and -0.0 == 0.0


@pytest.mark.parametrize("chunk", [5, 1 << 16])
@pytest.mark.parametrize("name", list(BROKEN_ARRAYS))
def test_iter_json_array_raises_what_read_json_raises(tmp_path, monkeypatch, name, chunk):
    from datasets_scripts import source_io

    monkeypatch.setattr(source_io, "JSON_CHUNK_BYTES", chunk)
    path = tmp_path / "a.json"
    path.write_bytes(BROKEN_ARRAYS[name])
    with pytest.raises(Exception) as whole:
        _whole(path)
    with pytest.raises(type(whole.value), match="^" + re.escape(str(whole.value)) + "$"):
        list(source_io.iter_json_array(path))


def test_iter_json_array_streams_clean_files(tmp_path, monkeypatch):
    """A file json and yajl read alike is never read whole, whatever its chunk boundaries split (escapes, pairs)."""
    from datasets_scripts import source_io

    path = write_pretrain_json(tmp_path / "a.json", range(300), seed=7)
    expected = _whole(path)
    monkeypatch.setattr(source_io, "read_json", lambda path: pytest.fail("read whole"))
    for chunk in (13, 64, 1000, 1 << 16):
        monkeypatch.setattr(source_io, "JSON_CHUNK_BYTES", chunk)
        assert list(source_io.iter_json_array(path)) == expected
    # Not a list: read whole, and the caller's error.
    path.write_text('{"a": 1}')
    monkeypatch.undo()
    with pytest.raises(ValueError, match="a dict"):
        list(source_io.iter_json_array(path, not_a_list=lambda payload: ValueError(f"a {type(payload).__name__}")))


def test_digest_set_finds_earlier_ids_across_and_within_batches():
    import numpy as np

    from datasets_scripts.source_io import DigestSet, id_digests

    seen, reference = DigestSet(), set()
    rng = random.Random(8)
    for size in (0, 1, 3, 700, 50, 1000, 1, 2000, 5):
        ids = [f"id-{rng.randint(0, 3000)}" for _ in range(size)]
        expected = []
        for value in ids:
            expected.append(value not in reference)
            reference.add(value)
        first = seen.first_seen(id_digests(ids))
        assert first.dtype == np.bool_ and first.tolist() == expected
    assert len(seen) == len(reference)


# --------------------------------------------------------------------------------------------- Parquet writer
def test_sharded_writer_writes_the_bytes_of_whole_shard_writes(tmp_path):
    """Rows streamed in row groups (Arrow directly, or through datasets for a batch Arrow cannot take as it is) give
    the bytes write_parquet_table gives each shard's list."""
    from datasets_scripts import hub_export
    from datasets_scripts.schema import EGOIT_FEATURES, egoit_row

    rng = random.Random(9)
    rows = []
    for index in range(25_000):
        options = [rng.choice(WORDS) for _ in range(4)] if index % 3 == 0 else None
        start = rng.uniform(0, 100) if index % 2 else None
        rows.append(
            egoit_row(
                id=f"s/{index}",
                source="s",
                task="mcq" if options else "open_qa",
                split="train",
                video=f"v/{index % 17}.mp4",
                video_start_sec=start,
                video_end_sec=None if start is None else start + 2,
                instruction_id=index % 10,
                instruction=rng.choice(WORDS),
                question=" ".join(rng.choice(WORDS) for _ in range(5)),
                answer=rng.choice(WORDS),
                options=options,
            )
        )
    rows[12_345]["video_end_sec"] = 7  # an int in a float column: that batch goes through datasets
    writer = hub_export.ShardedParquetWriter(tmp_path / "stream", "c", "train", EGOIT_FEATURES, shard_rows=12_001)
    (tmp_path / "stream").mkdir()
    for row in rows:
        writer.add(row)
    paths = writer.finish()
    assert len(paths) == 3
    for index, relative in enumerate(paths):
        whole = tmp_path / "whole" / relative
        hub_export.write_parquet_table(whole, rows[index * 12_001 : (index + 1) * 12_001], EGOIT_FEATURES)
        assert (tmp_path / "stream" / relative).read_bytes() == whole.read_bytes(), relative


def test_llava_export_streams_the_text_json_dumps_gives(tmp_path):
    from datasets_scripts.egoit.llava import export_llava_json, to_conversation

    rows = [
        {"id": "s/1", "source": "s", "video": "v/1.mp4", "instruction": "Say.", "question": "", "answer": "Yes."},
        {
            "id": "s/2",
            "source": "s",
            "video": "v/2.mp4",
            "instruction": "Pick \u00e9 \U0001f642.",
            "question": 'What "is" it?\nTell.',
            "answer": "b",
            "options": ["a", "b", "c"],
            "video_start_sec": 1.5,
            "video_end_sec": None,
        },
    ]
    for count in (0, 1, 2):
        path = tmp_path / f"{count}.json"
        assert export_llava_json(iter(rows[:count]), path) == count
        expected = json.dumps([to_conversation(row) for row in rows[:count]], ensure_ascii=False, indent=1) + "\n"
        assert path.read_text(encoding="utf-8") == expected


# --------------------------------------------------------------------------------------------- benchmark
def test_data_scale_benchmark_writes_a_complete_json(tmp_path):
    """The benchmark at toy sizes: every builder and size reported, with the goal checks (no timing asserted)."""
    from benchmarks.data_scale import BUILDERS, main

    out = tmp_path / "data_scale.json"
    assert main(["--sizes", "200", "800", "--json", str(out), "--workdir", str(tmp_path)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "data_scale" and report["cpu"] and report["versions"]["ijson"]
    assert [(r["builder"], r["rows"]) for r in report["results"]] == [(b, n) for b in BUILDERS for n in (200, 800)]
    for result in report["results"]:
        assert result["rows_written"] + result["skipped_rows"] == result["rows"]
        assert result["peak_rss_mb"] >= result["rss_after_imports_mb"] > 0
    assert set(report["checks"]) == set(BUILDERS) and "time_ratios_4x" in report["checks"]["pretrain"]


def test_write_parquet_configs_streams_lists_and_generators_into_a_new_folder(tmp_path):
    from datasets_scripts import hub_export
    from datasets_scripts.schema import CAPTION_FEATURES, caption_row

    rows = [caption_row(id=f"s/{i}", source="s", media_type="video", media=f"{i}.mp4", caption="c") for i in range(7)]
    folder = tmp_path / "not" / "yet"
    files = hub_export.write_parquet_configs(
        folder,
        {"a": {"train": rows, "test": []}, "b": {"train": iter(rows)}, "c": {"train": iter([])}},
        {"a": CAPTION_FEATURES, "b": CAPTION_FEATURES, "c": CAPTION_FEATURES},
        max_rows_per_shard=None,
    )
    assert files == {
        "a": {"train": ["data/a/train-00000-of-00001.parquet"]},
        "b": {"train": ["data/b/train-00000-of-00001.parquet"]},
    }
    assert (folder / files["a"]["train"][0]).read_bytes() == (folder / files["b"]["train"][0]).read_bytes()
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*.parquet")) == [
        files["a"]["train"][0],
        files["b"]["train"][0],
    ]  # nothing left of the empty splits


# --------------------------------------------------------------------------------------------- Ego-Exo4D annotations
def _annotation_variants(text: str) -> dict[str, str]:
    payload = json.loads(text)
    takes = payload["annotations"]
    first = next(iter(takes))
    broken = json.loads(text)
    broken["annotations"][first][0]["descriptions"][0]["timestamp"] = "soon"  # a bad narration
    broken["annotations"][first].append({"annotation_uid": ""})  # a bad annotation
    return {
        "as_written": text,
        "bad_entries": json.dumps(broken),
        "take_twice": text.replace('"annotations": {', f'"annotations": {{"{first}": [], ', 1),
        "nan_timestamp": text.replace('"timestamp": ', '"timestamp": NaN, "was": ', 1),
        "syntax_error_at_the_end": text.rstrip()[:-1] + ",}",
        "no_annotations": json.dumps({"ds": "x"}),
    }


@pytest.mark.parametrize("skip", [True, False])
def test_streamed_annotations_parse_as_the_whole_file_did(tmp_path, skip):
    from datasets_scripts.ego_exoclip import source
    from datasets_scripts.source_io import BadRows, read_json
    from datasets_scripts.synthetic.world import WorldConfig, plan_world, write_metadata

    config = WorldConfig(num_takes=6, seed=1, actions_per_take=4, write_qa=False)
    plans, extras = plan_world(config)
    write_metadata(tmp_path, plans, extras, config)
    path = tmp_path / "annotations" / "atomic_descriptions_train.json"
    variants = _annotation_variants(path.read_text(encoding="utf-8"))
    for name, text in variants.items():
        path.write_text(text, encoding="utf-8")
        outcomes = []
        for reader in ("stream", "whole"):
            bad_rows = BadRows(skip=skip)
            bad_rows.counts["earlier/field"] = 2  # what came before stays
            try:
                if reader == "stream":
                    result = source.load_annotations(tmp_path, "train", bad_rows)
                else:
                    result = source.parse_annotations(path, read_json(path), bad_rows)
            except Exception as error:  # the same error, by type and message
                result = (type(error).__name__, str(error))
            outcomes.append((result, bad_rows.summary()))
        assert outcomes[0] == outcomes[1], name


@pytest.mark.parametrize(
    "payload",
    [
        {"videos": [{"video_uid": "v0"}], "clips": [{"clip_uid": "c1", "video_uid": "v1"}, {"clip_uid": "c2"}]},
        {"clips": [{"clip_uid": "c1", "video_uid": "v1", "n": 2**70}, {"clip_uid": "c1", "video_uid": "v2"}]},
        {"clips": []},
        {"clips": {"c1": "v1"}},  # not the released layout: the error json.load's reading gives
        [1, 2],
    ],
)
def test_ego4d_clip_map_streamed_as_read_whole(tmp_path, payload):
    from datasets_scripts import leakage

    path = tmp_path / "ego4d.json"
    path.write_text(json.dumps(payload))
    outcomes = []
    for streamed in (True, False):
        try:
            if streamed:
                outcomes.append(leakage.load_clip_to_video(path))
            else:
                whole = json.loads(path.read_text())
                outcomes.append(
                    {
                        c["clip_uid"]: c["video_uid"]
                        for c in whole.get("clips", [])
                        if c.get("clip_uid") and c.get("video_uid")
                    }
                )
        except Exception as error:
            outcomes.append((type(error).__name__, str(error)))
    assert outcomes[0] == outcomes[1]

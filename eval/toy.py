"""A toy EgoBench folder (a few rows per task, tiny generated MP4s) for tests, benchmarks and smoke runs.

It has the exact layout of a real export (Parquet configs with the canonical features, side tables,
dataset card with ``configs:``, ``build_info.json``), written with the data builders' own helpers, so
the harness is exercised end to end without any download or the synthetic world.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from datasets_scripts import hub_export
from datasets_scripts.schema import (
    CHARADES_CLASS_FEATURES,
    CHARADES_LABEL_FEATURES,
    EGOBENCH_FEATURES,
    MIR_RELEVANCE_FEATURES,
    MIR_SENTENCE_FEATURES,
    egobench_row,
)

CLASS_NAMES = ["open a drawer", "pour water", "cut bread", "wash a cup", "close the door", "pick up a phone"]
SENTENCES = ["open drawer", "pour water into cup", "cut bread with knife", "wash the cup"]
# Relevance of the three MIR query videos to the four sentences (graded, like the official matrix).
MIR_RELEVANCE = np.array([[1.0, 0.5, 0.0, 0.0], [0.0, 1.0, 0.0, 0.5], [0.0, 0.0, 1.0, 0.0]], dtype=np.float32)


def write_video(path: str | os.PathLike, seed: int, num_frames: int = 8, size: int = 32, fps: int = 4) -> Path:
    """A small MP4 (mpeg4, ``num_frames`` frames of ``size`` x ``size``) with seeded colour blocks."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        base = rng.integers(0, 255, (4, 4, 3))
        for index in range(num_frames):
            frame = np.kron(np.roll(base, index, axis=0), np.ones((size // 4, size // 4, 1))).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _mcq(task, index, subset, video, question, options, answer_idx, **extra):
    return egobench_row(
        sample_id=f"{task}/{index}",
        task=task,
        subset=subset,
        video=video,
        question=question,
        options=options,
        answer_idx=answer_idx,
        start_sec=0.0,
        end_sec=2.0,
        shuffle_seed=None,
        **extra,
    )


def toy_tables(videos: list[str]) -> tuple[dict, dict]:
    """``({config: {"test": rows}}, {config: features})`` of the toy benchmark."""
    colours = ["red", "green", "blue", "yellow", "white"]
    synthetic = [
        _mcq(
            "synthetic",
            i,
            ("object", "colour")[i % 2],
            videos[i % len(videos)],
            "What colour was the object I held?",
            [f"the {colour} cube" for colour in np.roll(colours, i)],
            i % 5,
            meta={"video_id": f"take{i}"},
        )
        for i in range(6)
    ]
    egoschema = [
        _mcq(
            "egoschema",
            f"q{i}",
            "full",
            videos[i % len(videos)],
            "What is the overall goal of C in the video?",
            ["cooking", "cleaning", "reading", "painting", "sleeping"],
            None if i == 2 else i % 5,
            meta={"video_id": f"q{i}"},
        )
        for i in range(3)
    ]
    qaego4d = [
        _mcq(
            "qaego4d",
            f"closed/{i}",
            "closed",
            videos[i % len(videos)],
            "Where did I put the knife?",
            ["in the drawer", "on the table", "in the sink", "on the shelf"],
            i % 4,
        )
        for i in range(2)
    ] + [
        _mcq(
            "qaego4d",
            f"open/{i}",
            "open",
            videos[i % len(videos)],
            "What did I pick up?",
            [],
            None,
            answer_text=["the red cup", "a knife"][i],
        )
        for i in range(2)
    ]
    charades = [
        _mcq(
            "charades_ego",
            f"v{i}",
            "test",
            videos[i % len(videos)],
            "Which action is being performed?",
            CLASS_NAMES[i : i + 5],
            0,
            meta={"video_id": f"v{i}"},
        )
        for i in range(2)
    ]
    labels = [
        {
            "video_id": f"v{i}",
            "video": videos[i % len(videos)],
            "positive_classes": positives,
            "multi_hot": [int(c in positives) for c in range(len(CLASS_NAMES))],
        }
        for i, positives in enumerate([[0, 2], [1], [3, 4]])
    ]
    classes = [{"class_idx": i, "class_id": f"c{i:03d}", "name": name} for i, name in enumerate(CLASS_NAMES)]
    mir = [
        _mcq(
            "epic_mir",
            f"n{i}",
            "video",
            videos[i % len(videos)],
            "",
            [],
            None,
            answer_text=SENTENCES[i],
            meta={"video_index": i},
        )
        for i in range(len(MIR_RELEVANCE))
    ]
    sentences = [
        {"sentence_index": i, "narration_id": f"n{i}", "sentence": s, "verb_class": i, "noun_classes": [i]}
        for i, s in enumerate(SENTENCES)
    ]
    rows_index, cols_index = np.nonzero(MIR_RELEVANCE)
    relevance = [
        {"video_index": int(r), "sentence_index": int(c), "relevance": float(MIR_RELEVANCE[r, c])}
        for r, c in zip(rows_index, cols_index)
    ]
    egomcq = [
        _mcq(
            "egomcq",
            i,
            ("inter", "intra")[i % 2],
            videos[i % len(videos)],
            "Which narration matches the video?",
            [f"C does thing {j}" for j in range(10)],
            (3 * i) % 10,
            meta={"types": 1 + i % 2},
        )
        for i in range(4)
    ]
    # Config names as the builders write them (the registry in datasets_scripts/schema.py).
    tables = {
        "synthetic": synthetic,
        "egoschema_full": egoschema,
        "qaego4d_closed": qaego4d[:2],
        "qaego4d_open": qaego4d[2:],
        "charades_ego": charades,
        "charades_ego_labels": labels,
        "charades_ego_classes": classes,
        "epic_mir": mir,
        "epic_mir_sentences": sentences,
        "epic_mir_relevance": relevance,
        "egomcq": egomcq,
    }
    features = dict.fromkeys(tables, EGOBENCH_FEATURES)
    features.update(
        charades_ego_labels=CHARADES_LABEL_FEATURES,
        charades_ego_classes=CHARADES_CLASS_FEATURES,
        epic_mir_sentences=MIR_SENTENCE_FEATURES,
        epic_mir_relevance=MIR_RELEVANCE_FEATURES,
    )
    return {name: {"test": rows} for name, rows in tables.items()}, features


def write_toy_egobench(out: str | os.PathLike, tables: dict | None = None, num_videos: int = 2) -> Path:
    """Write the toy EgoBench folder to ``out`` (videos under ``out/videos``); returns ``out``.

    ``tables`` replaces the generated ``{config: {"test": rows}}`` (tests use it to write bad rows);
    its features are then inferred from the rows.
    """
    out = Path(out)
    videos = [f"videos/clip{i}.mp4" for i in range(num_videos)]
    for index, video in enumerate(videos):
        write_video(out / video, seed=index)
    if tables is None:
        tables, features = toy_tables(videos)
    else:
        features = {}
    data_files = hub_export.write_parquet_configs(out, tables, features)
    card = hub_export.make_dataset_card(
        data_files,
        pretty_name="Toy EgoBench",
        license="apache-2.0",
        sections={"Contents": "A few generated rows per EgoBench task for tests."},
    )
    card.save(str(out / hub_export.CARD_NAME))
    hub_export.write_build_info(
        out, {"builder": "eval.toy", "counts": {name: len(t["test"]) for name, t in tables.items()}}
    )
    return out

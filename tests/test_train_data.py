"""Ego-ExoClip / EgoIT samples and the collator, on tiny mp4 files written with PyAV."""

import os

import av
import numpy as np
import pytest
from datasets import Dataset

from train.collator import IGNORE_INDEX, Exo2EgoCollator
from train.data import CLIP_COLUMNS, EgoExoClipSamples, EgoITSamples, FailureTracker, VideoDecodeError, egoit_prompt

CAMS = ["cam01", "cam02", "cam03", "cam04"]


def write_mp4(path, seconds=3, fps=8, height=24, width=32, shade=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(seconds * fps):
            image = np.full((height, width, 3), shade, np.uint8)
            image[..., 0] = 9 * index  # red encodes the frame index, green/blue the camera
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Video root with one take (ego + 4 exo cameras) and tables in the Ego-ExoClip and EgoIT schemas."""
    root = tmp_path_factory.mktemp("egoexo")
    write_mp4(root / "takes/t0/ego.mp4", shade=0)
    for index, cam in enumerate(CAMS):
        write_mp4(root / f"takes/t0/{cam}.mp4", shade=60 * (index + 1))
    clips = Dataset.from_list(
        [
            {
                "clip_id": f"t0_{k}",
                "take_uid": "t0",
                "start_sec": 0.5 * k,
                "end_sec": 0.5 * k + 1.0,
                "text": f"C picks up the red cube {k}.",
                "ego_video": "takes/t0/ego.mp4",
                "exo_videos": [f"takes/t0/{cam}.mp4" for cam in CAMS],
                "exo_cams": CAMS,
                "best_exo_cam": "cam03" if k != 3 else None,
            }
            for k in range(4)
        ]
    )
    egoit = Dataset.from_list(
        [
            {
                "id": "synthetic/0",
                "source": "synthetic",
                "task": "mcq",
                "split": "train",
                "video": "takes/t0/ego.mp4",
                "video_start_sec": 0.0,
                "video_end_sec": 2.0,
                "instruction_id": 0,
                "instruction": "Watch the video and answer.",
                "question": "What did I pick up?",
                "answer": "A. the red cube",
                "options": ["the red cube", "the blue ball"],
            }
        ]
    )
    return root, clips, egoit


@pytest.fixture(scope="module")
def processor():
    from exo2ego_base.tiny import build_tiny_model

    return build_tiny_model()[1]


def test_exo_camera_draw_is_seeded_per_row_and_epoch(world):
    root, clips, _ = world
    samples = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="random", seed=3)
    first = [samples.sample_id(i) for i in range(len(samples))]
    again = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="random", seed=3)
    assert first == [again.sample_id(i) for i in range(4)]
    draws = set()
    for epoch in range(8):
        samples.set_epoch(epoch)
        draws |= {samples.sample_id(i) for i in range(len(samples))}
    assert len(draws) > len(samples)  # epochs see other ego-exo pairs
    assert all(sample_id.split("@")[1] in CAMS for sample_id in draws)

    best = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="best_exo")
    assert {best.sample_id(i).split("@")[1] for i in range(3)} == {"cam03"}
    random_draw = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="random")
    assert best.sample_id(3) == random_draw.sample_id(3)  # a null best_exo_cam falls back to the seeded draw
    pairs = EgoExoClipSamples(clips, str(root), 4, ("pair",), "Describe.")  # all_pairs, the default
    assert len(pairs) == len(clips) * len(CAMS)
    assert sorted(pairs.sample_id(i) for i in range(len(pairs))) == sorted(
        f"t0_{k}@{cam}" for k in range(4) for cam in CAMS
    )


def test_pairs_of_a_selected_table_are_the_selected_rows_pairs(world):
    """A `select`ed table (the mapping probe's sample of takes) keeps its parent's Arrow data under an indices
    mapping: camera counts and takes must be read through it."""
    root, clips, _ = world
    varied = clips.map(
        lambda row, k: {"exo_cams": CAMS[: k + 1], "exo_videos": row["exo_videos"][: k + 1]}, with_indices=True
    )
    chosen = varied.select([3, 0])
    pairs = EgoExoClipSamples(chosen, str(root), 4, ("pair",), "Describe.", exo_sampling="all_pairs")
    assert len(pairs) == 4 + 1
    assert sorted(pairs.sample_id(i) for i in range(len(pairs))) == sorted(
        [f"t0_3@{cam}" for cam in CAMS] + ["t0_0@cam01"]
    )


def test_ego_and_exo_frames_come_from_the_same_window(world):
    root, clips, _ = world
    sample = EgoExoClipSamples(clips, str(root), 4, ("pair",), "Describe.", exo_sampling="best_exo")[2]
    assert sample["ego_frames"].shape == sample["exo_frames"].shape == (4, 24, 32, 3)
    # Red encodes the frame index (8 fps): both views show the same frames of the clip's window [1.0, 2.0] s.
    ego_index = np.round(sample["ego_frames"][:, 12, 16, 0].astype(float) / 9)
    exo_index = np.round(sample["exo_frames"][:, 12, 16, 0].astype(float) / 9)
    assert abs(int(sample["exo_frames"][0, 12, 16, 1]) - 180) < 12  # and the exo frames are cam03's
    assert np.array_equal(ego_index, exo_index) and ego_index.min() >= 7 and ego_index.max() <= 16


def test_missing_columns_and_unknown_modes_are_named(world):
    root, clips, egoit = world
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['exo_cams'\]"):
        EgoExoClipSamples(clips.remove_columns("exo_cams"), str(root), 4, ("exo",), "Describe.")
    with pytest.raises(ValueError, match=r"\['best_exo_cam'\]"):
        EgoExoClipSamples(
            clips.remove_columns("best_exo_cam"), str(root), 4, ("exo",), "Describe.", exo_sampling="best_exo"
        )
    with pytest.raises(ValueError, match=r"\['answer'\]"):
        EgoITSamples(egoit.remove_columns("answer"), str(root), 4)
    with pytest.raises(ValueError, match="exo_sampling"):
        EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="nearest")
    assert set(CLIP_COLUMNS) <= set(clips.column_names)


def test_collator_labels_only_the_target_text(world, processor):
    root, clips, egoit = world
    # One sample per row (random camera), so sample i is row i.
    samples = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe the activity.", exo_sampling="random")
    batch = Exo2EgoCollator(processor, ("exo",))([samples[0], samples[1]])
    assert "pixel_values_videos" not in batch and batch["exo_pixel_values_videos"].shape == (2, 4, 3, 32, 32)
    video_id, pad_id = processor.video_token_id, processor.tokenizer.pad_token_id
    for row in range(2):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        target = processor.tokenizer.decode(ids[labels != IGNORE_INDEX])
        assert target == f" C picks up the red cube {row}.</s>"
        assert (ids == video_id).sum() == processor.num_video_tokens(4, "exo")
        assert (labels[ids == video_id] == IGNORE_INDEX).all() and (labels[ids == pad_id] == IGNORE_INDEX).all()
        first_label = int((labels != IGNORE_INDEX).nonzero()[0])
        assert processor.tokenizer.decode(ids[:first_label]).endswith("Describe the activity. [/INST]")
    assert (batch["attention_mask"].sum(1) == (batch["input_ids"] != pad_id).sum(1)).all()

    instruction = EgoITSamples(egoit, str(root), 4)[0]
    assert (
        instruction["prompt"] == egoit_prompt(egoit[0])
        and "A. the red cube\nB. the blue ball" in instruction["prompt"]
    )
    ego_batch = Exo2EgoCollator(processor, ("ego",))([instruction])
    assert "exo_pixel_values_videos" not in ego_batch
    assert (ego_batch["input_ids"] == video_id).sum() == processor.num_video_tokens(4, "ego")
    capped = Exo2EgoCollator(processor, ("ego",), max_length=int(ego_batch["input_ids"].shape[1]) - 2)([instruction])
    assert (capped["labels"] != IGNORE_INDEX).sum() == (ego_batch["labels"] != IGNORE_INDEX).sum() - 2


def test_unreadable_videos_are_counted_replaced_and_stop_the_run(world, tmp_path, processor):
    from torch.utils.data import DataLoader

    root, clips, _ = world
    broken = clips.map(
        lambda row, i: {"ego_video": "takes/t0/missing.mp4" if i == 1 else row["ego_video"]}, with_indices=True
    )
    samples = EgoExoClipSamples(broken, str(root), 4, ("pair",), "Describe.", exo_sampling="random")
    replaced = samples[1]
    assert replaced["failed_videos"] >= 1 and replaced["sample_id"] != "t0_1"
    # Decoding runs in a DataLoader worker; the count reaches the main process inside the batch.
    loader = DataLoader(samples, batch_size=4, num_workers=1, collate_fn=Exo2EgoCollator(processor, ("pair",)))
    batch = next(iter(loader))
    assert int(batch["failed_videos"]) == replaced["failed_videos"] and batch["input_ids"].shape[0] == 4

    tracker = FailureTracker(max_fraction=0.3, dataset_size=4)
    tracker.add(1)
    with pytest.raises(VideoDecodeError, match="max_failed_fraction=0.3"):
        tracker.add(1)
    all_broken = clips.map(lambda row: {"ego_video": "nope.mp4"})
    with pytest.raises(VideoDecodeError, match="replacements have unreadable videos"):
        EgoExoClipSamples(all_broken, str(root), 4, ("pair",), "Describe.")[0]


def test_decoded_clip_cache_serves_repeated_segments_and_evicts_the_least_recently_used(world, monkeypatch):
    import train.data
    from modeling_exo2ego import DecodedClipCache

    root, clips, _ = world
    decoded = []
    real_reader = train.data.read_video_frames

    def counting_reader(path, *args, **kwargs):
        decoded.append(os.path.basename(path))
        return real_reader(path, *args, **kwargs)

    monkeypatch.setattr(train.data, "read_video_frames", counting_reader)
    clip_bytes = 4 * 24 * 32 * 3  # one decoded (4, 24, 32, 3) uint8 clip
    samples = EgoExoClipSamples(
        clips, str(root), 4, ("exo",), "Describe.", exo_sampling="best_exo", cache=DecodedClipCache(2 * clip_bytes)
    )
    uncached = EgoExoClipSamples(clips, str(root), 4, ("exo",), "Describe.", exo_sampling="best_exo")
    first = samples[0]["exo_frames"]
    assert np.array_equal(samples[0]["exo_frames"], first) and len(decoded) == 1  # served from memory
    assert np.array_equal(uncached[0]["exo_frames"], first) and len(decoded) == 2  # the same frames as decoding
    samples[1], samples[0]  # noqa: B018 - visits: 0 becomes the most recently used of {0, 1}
    assert len(decoded) == 3
    samples[2]  # noqa: B018 - the cache holds two clips: 1, the least recently used, goes
    assert samples.cache.bytes == 2 * clip_bytes and len(decoded) == 4
    samples[0]  # noqa: B018
    assert len(decoded) == 4
    samples[1]  # noqa: B018
    assert len(decoded) == 5


def test_shuffled_pairs_take_each_exo_clip_from_another_take(tmp_path):
    """The negative control of the stage-2 losses: ego clip and text of the row, exo clip of a row of another take."""
    from train.data import cross_take_partners

    rows = []
    for take in range(3):
        write_mp4(tmp_path / f"t{take}/ego.mp4", shade=50 * take)
        for cam in CAMS[:2]:
            write_mp4(tmp_path / f"t{take}/{cam}.mp4", shade=50 * take)
        rows += [
            {
                "clip_id": f"t{take}_{k}",
                "take_uid": f"t{take}",
                "start_sec": 0.5 * k,
                "end_sec": 0.5 * k + 1.0,
                "text": f"take {take} clip {k}",
                "ego_video": f"t{take}/ego.mp4",
                "exo_videos": [f"t{take}/{cam}.mp4" for cam in CAMS[:2]],
                "exo_cams": CAMS[:2],
            }
            for k in range(2)
        ]
    clips = Dataset.from_list(rows)

    def take_of(frames):  # green encodes the take (shade 50 * take)
        return round(int(frames[0, 12, 16, 1]) / 50)

    for shuffled in (False, True):
        samples = EgoExoClipSamples(
            clips, str(tmp_path), 2, ("pair",), "Describe.", exo_sampling="all_pairs", shuffle_pairs=shuffled
        )
        for index in range(len(samples)):
            sample = samples[index]
            row = rows[[r["clip_id"] for r in rows].index(sample["sample_id"])]
            own_take = int(row["take_uid"][1:])
            assert sample["target"] == row["text"] and take_of(sample["ego_frames"]) == own_take
            assert (take_of(sample["exo_frames"]) != own_take) == shuffled

    partners = cross_take_partners(clips["take_uid"], seed=0)
    assert sorted(partners) == list(range(len(rows)))  # every exo clip is used once
    assert all(rows[p]["take_uid"] != rows[i]["take_uid"] for i, p in enumerate(partners))
    many = [f"take{row // 3}" for row in range(60)]
    assert not np.array_equal(cross_take_partners(many, seed=0), cross_take_partners(many, seed=1))  # seeded
    with pytest.raises(ValueError, match="at most half of the rows; one holds 3 of 4"):
        cross_take_partners(["a", "a", "a", "b"], seed=0)
    with pytest.raises(ValueError, match="needs the 'pair' branch"):
        EgoExoClipSamples(clips, str(tmp_path), 2, ("exo",), "Describe.", shuffle_pairs=True)

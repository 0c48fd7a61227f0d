"""Synchronized clip reading: every view's frames come from the same timestamps (read back from the frame
marker rendered into the synthetic videos), seeking reads, bad paths, and the local pack."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from datasets_scripts.clip_reader import PackConfig, iter_packed_clips, pack_clips, read_clip_row, read_synced_clip
from datasets_scripts.ego_exoclip import EgoExoClipOptions, plan_ego_exoclip
from datasets_scripts.synthetic import WorldConfig, generate_world, read_frame_marker

FPS = 8.0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("reader") / "root"
    generate_world(root, WorldConfig(num_takes=3, seed=5, actions_per_take=3, fps=FPS, write_qa=False))
    return root


@pytest.fixture(scope="module")
def rows(world):
    return plan_ego_exoclip(EgoExoClipOptions(egoexo_root=str(world), check_videos=False)).clips


def _expected_index(timestamps):
    # The frame shown at t is the last one whose time i / fps is <= t.
    return [math.floor(t * FPS + 1e-6) for t in timestamps]


@pytest.mark.parametrize("variant", ["full", "448"])
def test_views_share_timestamps(world, rows, variant):
    from datasets_scripts.ego_exoclip.export import to_variant

    for row in (rows[0], rows[len(rows) // 2], rows[-1]):
        row = dict(
            row,
            ego_video=to_variant(row["ego_video"], variant),
            exo_videos=[to_variant(p, variant) for p in row["exo_videos"]],
        )
        clip = read_clip_row(row, num_frames=4, root=world)
        expected = _expected_index(clip.timestamps)
        assert np.all(clip.timestamps > row["start_sec"]) and np.all(clip.timestamps < row["end_sec"])
        assert clip.ego.shape[0] == 4 and len(clip.exo) == 4
        assert clip.ego.shape[1:] == ((128, 128, 3) if variant == "full" else (64, 64, 3))
        for view in [clip.ego, *clip.exo]:
            assert [read_frame_marker(frame) for frame in view] == expected


def test_long_window_and_exo_only(world, rows):
    row = rows[-1]
    duration = row["duration_sec"]
    clip = read_synced_clip(None, row["exo_videos"][:2], 0.0, duration, 16, root=world)
    assert clip.ego is None and len(clip.exo) == 2
    indices = [read_frame_marker(frame) for frame in clip.exo[1]]
    assert indices == _expected_index(clip.timestamps) and len(set(indices)) == 16


def test_bad_paths(world, rows, tmp_path):
    row = rows[0]
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        read_synced_clip(row["ego_video"], ["takes/nothere.mp4"], 1.0, 2.0, 4, root=world)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 4096)
    with pytest.raises(ValueError, match="garbage.mp4"):
        read_synced_clip(str(garbage), [], 1.0, 2.0, 4)
    with pytest.raises(ValueError, match="ego path or at least one exo"):
        read_synced_clip(None, [], 1.0, 2.0, 4)


def test_pack_round_trip_and_resume(world, rows, tmp_path):
    selected = [dict(row) for row in rows[:5]]
    config = PackConfig(num_frames=3, clips_per_shard=2)
    index = pack_clips(selected, world, tmp_path / "pack", config)
    assert index["shards"] == ["pack-00000.tar", "pack-00001.tar", "pack-00002.tar"]
    packed = list(iter_packed_clips(tmp_path / "pack"))
    assert [clip.clip_id for clip in packed] == [row["clip_id"] for row in selected]
    for clip, row in zip(packed, selected):
        direct = read_clip_row(row, 3, root=world)
        np.testing.assert_allclose(clip.timestamps, direct.timestamps)
        assert len(clip.exo) == len(row["exo_cams"])
        for view in [clip.ego, *clip.exo]:  # JPEG keeps the marker readable
            assert [read_frame_marker(frame) for frame in view] == _expected_index(clip.timestamps)

    # Resume: a finished shard is not rewritten, a missing one is.
    first, second = tmp_path / "pack/pack-00000.tar", tmp_path / "pack/pack-00001.tar"
    before = first.stat().st_mtime_ns
    second.unlink()
    (tmp_path / "pack/pack_index.json").unlink()
    pack_clips(selected, world, tmp_path / "pack", config)
    assert first.stat().st_mtime_ns == before and second.is_file()
    assert (
        json.loads((tmp_path / "pack/pack_index.json").read_text())["clips"][selected[4]["clip_id"]]
        == "pack-00002.tar"
    )

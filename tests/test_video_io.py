"""PyAV frame sampling: segment midpoints, seeking equals full decoding, identical ego/exo timestamps."""

import numpy as np
import pytest
from conftest import frame_index, write_test_video

from modeling_exo2ego import read_video_frames, sample_timestamps


def test_sample_timestamps_are_segment_midpoints():
    assert np.allclose(sample_timestamps(2.0, 4.0, 4), [2.25, 2.75, 3.25, 3.75])
    with pytest.raises(ValueError, match="empty time window"):
        sample_timestamps(3.0, 3.0, 4)


def test_frames_are_those_shown_at_the_sampled_times(sample_video):
    # 24 frames at 8 fps: frame i is shown during [i/8, (i+1)/8).
    clip = read_video_frames(sample_video, num_frames=4, start_sec=1.0, end_sec=2.0)
    assert np.allclose(clip.timestamps, [1.125, 1.375, 1.625, 1.875])
    assert [frame_index(frame) for frame in clip.frames] == [9, 11, 13, 15]
    assert np.allclose(clip.frame_times, [9 / 8, 11 / 8, 13 / 8, 15 / 8])
    whole = read_video_frames(sample_video, num_frames=3)
    assert [frame_index(frame) for frame in whole.frames] == [4, 12, 20]


def test_seeking_matches_decoding_everything(tmp_path):
    video = write_test_video(tmp_path / "long.mp4", num_frames=200, fps=8)
    times = np.array([0.3, 7.9, 8.0, 15.2, 24.9, 3.1])  # unsorted, with gaps larger than the seek threshold
    seeking = read_video_frames(video, 6, timestamps=times, seek_gap_sec=1.0)
    decoding = read_video_frames(video, 6, timestamps=times, seek_gap_sec=1e9)
    assert (
        [frame_index(f) for f in seeking.frames]
        == [frame_index(f) for f in decoding.frames]
        == [int(t * 8) for t in times]
    )


def test_ego_and_exo_views_get_identical_timestamps(tiny, tmp_path):
    _, processor = tiny
    ego = write_test_video(tmp_path / "ego.mp4", num_frames=40)
    exo = write_test_video(tmp_path / "exo.mp4", num_frames=40, size=(64, 48))
    ego_clip = processor.load_video({"path": ego, "start_sec": 0.5, "end_sec": 4.5}, num_frames=4)
    exo_clip = processor.load_video(exo, num_frames=4, timestamps=ego_clip.timestamps)
    assert np.array_equal(ego_clip.timestamps, exo_clip.timestamps)
    assert [frame_index(f) for f in ego_clip.frames] == [frame_index(f) for f in exo_clip.frames] == [8, 16, 24, 32]
    batch = processor(text=["<video>\nWhat happened?"], videos=[(ego, 0.5, 4.5)], exo_videos=[exo], num_frames=4)
    assert batch["pixel_values_videos"].shape == batch["exo_pixel_values_videos"].shape == (1, 4, 3, 32, 32)


def test_short_window_policy(sample_video):
    # 0.25 s holds two frames; four are asked for.
    repeated = read_video_frames(sample_video, num_frames=4, start_sec=1.0, end_sec=1.25)
    assert [frame_index(f) for f in repeated.frames] == [8, 8, 9, 9]
    with pytest.raises(ValueError, match="2 distinct frames but 4 were requested"):
        read_video_frames(sample_video, num_frames=4, start_sec=1.0, end_sec=1.25, short_video="error")
    with pytest.raises(ValueError, match="outside the video"):
        read_video_frames(sample_video, num_frames=4, start_sec=10.0, end_sec=12.0)


def test_frames_equal_pyav_rgb_conversion_across_files_of_different_sizes(tmp_path):
    """The reused colour converter gives the bytes of PyAV's own `to_ndarray(format="rgb24")` for every file, also
    when the frame size changes from one file to the next (textured frames, so any other conversion differs)."""
    import av

    rng = np.random.default_rng(0)
    videos = []
    for index, (height, width) in enumerate([(32, 32), (64, 48), (32, 32), (48, 64)]):
        path = str(tmp_path / f"{index}.mp4")
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for _ in range(8):
                frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        videos.append(path)
    for video in videos:
        clip = read_video_frames(video, num_frames=8)
        with av.open(video) as container:
            reference = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(clip.frames) == len(reference) == 8
        for frame, expected in zip(clip.frames, reference):
            assert frame.shape == expected.shape and np.array_equal(frame, expected)


def test_decoding_works_in_a_process_forked_after_decoding(sample_video):
    """A DataLoader worker is forked from a process that has decoded before: the reused colour converter must not
    hang there."""
    import multiprocessing

    expected = read_video_frames(sample_video, num_frames=4).frames
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        result = pool.apply_async(_decode_frames, (sample_video,))
        frames = result.get(timeout=60)
    assert np.array_equal(frames, expected)


def _decode_frames(path):
    return read_video_frames(path, num_frames=4).frames

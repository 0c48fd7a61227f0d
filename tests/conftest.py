"""Shared fixtures: everything offline, tiny, on CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import av  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_test_video(path, num_frames: int = 24, fps: int = 8, size: tuple[int, int] = (48, 64)) -> str:
    """An H.264 mp4 whose frame i is flat, red 8*(i % 32) and green 8*(i // 32), so a decoded frame tells its index."""
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "8", "crf": "10"}  # keyframe every second so seeking has something to seek to
        for index in range(num_frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[..., 0], frame[..., 1] = 8 * (index % 32), 8 * (index // 32)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def frame_index(frame: np.ndarray) -> int:
    """Inverse of `write_test_video`'s colour code."""
    return round(float(frame[..., 0].mean()) / 8) + 32 * round(float(frame[..., 1].mean()) / 8)


@pytest.fixture(scope="session")
def tiny():
    """(model, processor) of the tiny random Exo2Ego, eager attention for exact comparisons."""
    from exo2ego_base.tiny import build_tiny_model

    return build_tiny_model(seed=0, attn_implementation="eager")


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("videos") / "sample.mp4")

"""Exo2Ego video reading: PyAV decoding of the frames shown at sampled instants of a window.

Part of the Hub remote-code bundle (imports only numpy, transformers' logging and, optionally, PyAV), used by the
processor (`processing_exo2ego.py`) and by the project's data pipeline, which reads every view of a sample at the same
instants (`sample_timestamps` once, then `read_video_frames(..., timestamps=...)` per view); `DecodedClipCache` keeps
decoded clips for the data pipeline and evaluation.

Why no transformers `BaseVideoProcessor` / `AutoVideoProcessor`? They require torchvision: `BaseVideoProcessor` is
declared for the torchvision backend (without torchvision, `transformers.BaseVideoProcessor` is a dummy that raises
ImportError), and torchvision does not load beside the CPU build of torch these machines use; the bundle may require
only torch, transformers, numpy, Pillow and PyAV, and torchvision is deliberately not added. So this module decodes
the frames, the CLIP image processor (Pillow backend) processes them, and that frame processor also holds what a
video processor's config would: a checkpoint's default `num_frames` / `short_video` (see `Exo2EgoProcessor`). Nor
`transformers.video_utils.load_video`: it samples over a whole file, where Exo2Ego takes the midpoints of a
[start, end] window, seeking to keyframes, and reads the exo view of a sample at the ego view's instants.
"""

import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import numpy as np
from transformers.utils import logging

try:  # PyAV is needed only to decode video files; decoded frames work without it.
    import av
except ImportError:  # pragma: no cover - exercised only where av is missing
    av = None

logger = logging.get_logger(__name__)

SHORT_VIDEO_MODES = ("repeat", "error")


def check_short_video(short_video, argument: str = "short_video") -> str:
    if short_video not in SHORT_VIDEO_MODES:
        raise ValueError(f"{argument} must be one of {SHORT_VIDEO_MODES}, got {short_video!r}")
    return short_video


@dataclass
class VideoClip:
    """Frames sampled from a video: `frames` uint8 (T, H, W, 3), `timestamps` the requested seconds (T,),
    `frame_times` the presentation time of each returned frame (T,)."""

    frames: np.ndarray
    timestamps: np.ndarray
    frame_times: np.ndarray


def sample_timestamps(start_sec: float, end_sec: float, num_frames: int) -> np.ndarray:
    """Midpoints of `num_frames` equal segments of [start_sec, end_sec] (VideoLLaMA2's uniform sampling)."""
    if not end_sec > start_sec:
        raise ValueError(f"empty time window [{start_sec}, {end_sec}]")
    return start_sec + (np.arange(num_frames) + 0.5) * (end_sec - start_sec) / num_frames


def read_video_frames(
    path: str | os.PathLike,
    num_frames: int,
    start_sec: float | None = None,
    end_sec: float | None = None,
    timestamps: np.ndarray | None = None,
    short_video: Literal["repeat", "error"] = "repeat",
    seek_gap_sec: float = 2.0,
) -> VideoClip:
    """Decode the frames shown at `num_frames` segment midpoints of [start_sec, end_sec] (default: whole video).

    Seeks to the keyframe before each target that lies more than `seek_gap_sec` past the current decode position,
    so a short clip of a long take costs a few GOPs, not the whole file. The frame shown at time t is the last
    frame whose presentation time is <= t. Explicit `timestamps` override the window (how ego and exo views of one
    sample get identical times). `short_video`: a window holding fewer distinct frames than requested either
    repeats frames ("repeat", the default, as nearest-frame sampling naturally does) or raises ("error").
    """
    if av is None:
        raise ImportError("decoding video files needs PyAV: pip install av")
    path = os.fspath(path)
    check_window(start_sec, end_sec, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        container = av.open(path)
    except av.error.FFmpegError as error:
        raise ValueError(f"cannot open video {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        if timestamps is None:
            duration = _duration_sec(container, stream)
            start = 0.0 if start_sec is None else max(0.0, float(start_sec))
            end = duration if end_sec is None else float(end_sec)
            if duration > 0:  # containers that report no duration leave the window as asked
                end = min(end, duration)
            if not end > start:
                raise ValueError(
                    f"{path}: window [{start_sec}, {end_sec}] is outside the video (duration {duration:.3f}s)"
                )
            timestamps = sample_timestamps(start, end, num_frames)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        try:
            frames, frame_times = _decode_at(container, stream, timestamps, seek_gap_sec)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise ValueError(f"no frame could be decoded from {path}")
    check_short_video(short_video)
    distinct = len(set(frame_times))
    if short_video == "error" and distinct < len(timestamps):
        raise ValueError(f"{path}: the window holds {distinct} distinct frames but {len(timestamps)} were requested")
    frame_step = 1 / float(stream.average_rate) if stream.average_rate else 0.0
    past_end = timestamps > max(frame_times) + frame_step + 1e-6
    if past_end.any():
        # Timestamps after the last frame (an exo view read at a longer ego window) would show the last frame again.
        message = (
            f"{path}: its last frame is at {max(frame_times):.3f}s, but frames at "
            f"{timestamps[past_end].round(3).tolist()}s were requested"
        )
        if short_video == "error":
            raise ValueError(message + " (short_video='error')")
        logger.warning(message + "; repeating its last frame (short_video='repeat')")
    return VideoClip(np.stack(frames), timestamps, np.asarray(frame_times))


class DecodedClipCache:
    """Least-recently-used decoded clips, `key -> uint8 (T, H, W, 3)`, up to `max_bytes`, for the data pipeline and
    evaluation (the model and processor do not use it). The caller's key names everything that decides the frames
    (file and timestamps, or file, window and frame count); returned arrays are shared and read-only."""

    @classmethod
    def from_mib(cls, mib: int) -> "DecodedClipCache | None":
        """A cache of `mib` MiB, or None for 0 (no cache)."""
        return cls(mib * 2**20) if mib else None

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.clips: OrderedDict[tuple, np.ndarray] = OrderedDict()

    def get(self, key: tuple) -> np.ndarray | None:
        frames = self.clips.get(key)
        if frames is not None:
            self.clips.move_to_end(key)
        return frames

    def put(self, key: tuple, frames: np.ndarray) -> None:
        if key in self.clips or frames.nbytes > self.max_bytes:
            return
        frames.flags.writeable = False
        self.clips[key] = frames
        self.bytes += frames.nbytes
        while self.bytes > self.max_bytes:
            self.bytes -= self.clips.popitem(last=False)[1].nbytes


def check_window(start_sec, end_sec, argument: str) -> None:
    """A window's times are None or finite numbers of seconds, and end after they start."""
    for name, value in (("start_sec", start_sec), ("end_sec", end_sec)):
        if value is None:
            continue
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{argument}: {name} must be a number of seconds or None, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{argument}: {name} must be a finite number of seconds, got {value!r}")
    if start_sec is not None and end_sec is not None and end_sec <= start_sec:
        problem = "is zero-length" if end_sec == start_sec else "ends before it starts"
        raise ValueError(f"{argument}: the window [{start_sec}, {end_sec}] {problem}; end_sec must be after start_sec")


def _duration_sec(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


_THREAD_STATE = threading.local()


def _rgb_reformatter():
    """This thread's `VideoReformatter`: it keeps its colour-conversion context between calls, where
    `frame.to_ndarray(format="rgb24")` builds a new one, with a pool of threads, for every file, which costs more than
    decoding a small frame. `_to_rgb` converts on one thread (`threads=1`): a context with a thread
    pool would hang in a process forked after its first use (a DataLoader worker), whose copy has the pool's state but
    not its threads."""
    reformatter = getattr(_THREAD_STATE, "rgb", None)
    if reformatter is None:
        reformatter = _THREAD_STATE.rgb = av.video.reformatter.VideoReformatter()
    return reformatter


def _to_rgb(frame) -> np.ndarray:
    """uint8 (H, W, 3): the bytes of `frame.to_ndarray(format="rgb24")`, by this thread's converter on one thread."""
    try:
        return _rgb_reformatter().reformat(frame, format="rgb24", threads=1).to_ndarray()
    except TypeError:  # PyAV < 17 has no `threads`: its converters run on one thread
        return _rgb_reformatter().reformat(frame, format="rgb24").to_ndarray()


def _decode_at(container, stream, timestamps: np.ndarray, seek_gap_sec: float) -> tuple[list[np.ndarray], list[float]]:
    """The frame shown at each timestamp: targets are visited in time order, decoding forward and seeking only
    across gaps larger than `seek_gap_sec`. Returns ([], []) when some target got no frame."""
    time_base = stream.time_base
    chosen: list = [None] * len(timestamps)
    decoded = None  # iterator of (time, frame) since the last seek
    shown = None  # latest decoded (time, frame) at or before the current target
    ahead = None  # first decoded (time, frame) after the current target
    for index in np.argsort(timestamps, kind="stable"):
        target = float(timestamps[index])
        frontier = ahead or shown
        if decoded is None or (frontier is not None and target - frontier[0] > seek_gap_sec):
            container.seek(max(0, int(target / time_base)), stream=stream, backward=True, any_frame=False)
            decoded = (
                (float(frame.pts * time_base), frame) for frame in container.decode(stream) if frame.pts is not None
            )
            shown, ahead = None, None
        if ahead is not None and ahead[0] <= target + 1e-6:
            shown, ahead = ahead, None
        while ahead is None:
            item = next(decoded, None)
            if item is None:
                break
            if item[0] <= target + 1e-6:
                shown = item
            else:
                ahead = item
        chosen[index] = shown or ahead
    if any(item is None for item in chosen):
        return [], []
    arrays: dict[int, np.ndarray] = {}
    for _, frame in chosen:
        if id(frame) not in arrays:
            arrays[id(frame)] = _to_rgb(frame)
    return [arrays[id(frame)] for _, frame in chosen], [time for time, _ in chosen]


__all__ = [
    "SHORT_VIDEO_MODES",
    "DecodedClipCache",
    "VideoClip",
    "check_short_video",
    "check_window",
    "read_video_frames",
    "sample_timestamps",
]

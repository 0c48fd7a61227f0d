"""Exo2Ego processor: PyAV video decoding, frame sampling, CLIP normalisation and `<video>` expansion."""

import os
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
from PIL import Image
from transformers import BatchFeature, ProcessorMixin

from .configuration_exo2ego import num_connector_tokens

try:  # PyAV is needed only to decode video files; decoded frames work without it.
    import av
except ImportError:  # pragma: no cover - exercised only where av is missing
    av = None

VideoInput = Union[str, os.PathLike, dict, tuple, np.ndarray, list]

# Mistral-instruct style; video items render as the `<video>` placeholder the processor expands.
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\n' -}}{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = render(messages[0]['content']) -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{{- bos_token -}}"
    "{%- for message in loop_messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "{{- '[INST] ' -}}{%- if loop.first and system -%}{{- system + '\n\n' -}}{%- endif -%}"
    "{{- render(message['content']) -}}{{- ' [/INST]' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- ' ' + render(message['content']) + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


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
                raise ValueError(f"{path}: window [{start_sec}, {end_sec}] is outside the video (duration {duration:.3f}s)")
            timestamps = sample_timestamps(start, end, num_frames)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        try:
            frames, frame_times = _decode_at(container, stream, timestamps, seek_gap_sec)
        except av.error.FFmpegError as error:
            raise ValueError(f"cannot decode video {path}: {error}") from error
    if not frames:
        raise ValueError(f"no frame could be decoded from {path}")
    distinct = len(set(frame_times))
    if short_video == "error" and distinct < len(timestamps):
        raise ValueError(f"{path}: the window holds {distinct} distinct frames but {len(timestamps)} were requested")
    return VideoClip(np.stack(frames), timestamps, np.asarray(frame_times))


def _duration_sec(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return 0.0


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
            decoded = ((float(frame.pts * time_base), frame) for frame in container.decode(stream) if frame.pts is not None)
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
            arrays[id(frame)] = frame.to_ndarray(format="rgb24")
    return [arrays[id(frame)] for _, frame in chosen], [time for time, _ in chosen]


def _video_source(video: VideoInput) -> tuple[object, float | None, float | None]:
    """Split a video input into (path or frames, start_sec, end_sec)."""
    if isinstance(video, dict):
        source = video.get("path", video.get("video"))
        if source is None:
            raise ValueError(f"a video dict needs a 'path' (or 'video') key, got keys {sorted(video)}")
        return source, video.get("start_sec"), video.get("end_sec")
    if isinstance(video, tuple):
        if len(video) != 3:
            raise ValueError("a video tuple must be (path, start_sec, end_sec)")
        return video
    return video, None, None


def _frames_array(frames) -> np.ndarray:
    """Decoded frames (T,H,W,3) uint8 array, or a list of PIL images / (H,W,3) arrays, as one array."""
    if isinstance(frames, list):
        frames = np.stack([np.asarray(frame.convert("RGB") if isinstance(frame, Image.Image) else frame) for frame in frames])
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"decoded video frames must be (frames, height, width, 3), got shape {frames.shape}")
    return frames


def _expand_to_square(frame: np.ndarray, fill: tuple[int, int, int]) -> Image.Image:
    """Pad an (H, W, 3) frame to a centred square filled with `fill` (the CLIP mean colour)."""
    image = Image.fromarray(frame)
    side = max(image.size)
    if image.width == image.height:
        return image
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas


class Exo2EgoProcessor(ProcessorMixin):
    r"""
    Tokenizer + CLIP image processor (Pillow backend) for Exo2Ego.

    `processor(text=..., videos=..., exo_videos=..., return_tensors="pt")`: a video is a file path, a dict
    `{"path", "start_sec", "end_sec"}`, a `(path, start_sec, end_sec)` tuple, or decoded frames ((T, H, W, 3)
    uint8 array or list of images). Frames are taken at the midpoints of T equal segments of the window; an exo
    video of a sample is read at the ego video's exact timestamps. Frames are padded to square with the mean colour
    and normalised by the CLIP image processor. Each `<video>` in the text becomes as many placeholders as the model
    inserts: 2N for ego input ([x; F(x)]), N for exo input alone (stage 1), N from `num_connector_tokens`.

    Args:
        image_processor: a CLIP image processor (`CLIPImageProcessorPil` works without torchvision).
        tokenizer: the LLM tokenizer, holding the `video_token` as a special token.
        num_frames (`int`): frames per video unless a call passes `num_frames`.
        grid_size (`int`): the vision towers' patch grid side (image_size // patch_size).
        connector_type (`str`): `stc` or `stc_v35`, as in the model config.
        short_video (`str`): "repeat" (default) or "error" when a window has fewer distinct frames than requested.
    """

    attributes = ["image_processor", "tokenizer"]

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        video_token: str = "<video>",
        num_frames: int = 16,
        grid_size: int = 24,
        connector_type: str = "stc",
        short_video: str = "repeat",
        **kwargs,
    ):
        self.video_token = video_token
        self.num_frames = num_frames
        self.grid_size = grid_size
        self.connector_type = connector_type
        self.short_video = short_video
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE, **kwargs)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {video_token!r} token; add it as a special token first")

    def num_video_tokens(self, num_frames: int | None = None, mode: Literal["ego", "exo"] = "ego") -> int:
        """Placeholders one `<video>` expands to: 2N for ego input ([x; F(x)]), N for exo input alone."""
        per_stream = num_connector_tokens(num_frames or self.num_frames, self.grid_size, self.connector_type)
        return 2 * per_stream if mode == "ego" else per_stream

    def load_video(self, video: VideoInput, num_frames: int, timestamps: np.ndarray | None = None) -> VideoClip:
        """Sample `num_frames` frames (or the frames at `timestamps`) from one video input."""
        source, start_sec, end_sec = _video_source(video)
        if isinstance(source, (str, os.PathLike)):
            return read_video_frames(source, num_frames, start_sec, end_sec, timestamps=timestamps, short_video=self.short_video)
        frames = _frames_array(source)
        if self.short_video == "error" and len(frames) < num_frames:
            raise ValueError(f"decoded video has {len(frames)} frames but {num_frames} were requested")
        # Decoded frames carry no clock: sample frame indices at segment midpoints instead.
        indices = np.floor(sample_timestamps(0, len(frames), num_frames)).astype(int)
        return VideoClip(frames[indices], indices.astype(np.float64), indices.astype(np.float64))

    def _pixel_values(self, clips: list[VideoClip]):
        fill = tuple(int(255 * mean) for mean in self.image_processor.image_mean)
        videos = []
        for clip in clips:
            squares = [_expand_to_square(frame, fill) for frame in clip.frames]
            videos.append(self.image_processor(images=squares, return_tensors="np")["pixel_values"])
        return np.stack(videos)  # (B, T, 3, S, S)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos: VideoInput | list[VideoInput] | None = None,
        exo_videos: VideoInput | list[VideoInput] | None = None,
        num_frames: int | None = None,
        return_tensors: str | None = "pt",
        **tokenizer_kwargs,
    ) -> BatchFeature:
        """
        Returns a `BatchFeature` with `input_ids`, `attention_mask`, and `pixel_values_videos` (B, T, 3, S, S) for ego
        videos and/or `exo_pixel_values_videos` (B, T, 3, S, S) for exo videos. Exactly one `<video>` per text when
        videos are given.
        """
        if text is None:
            raise ValueError("Exo2EgoProcessor needs text with a <video> placeholder per video")
        texts = [text] if isinstance(text, str) else list(text)
        num_frames = num_frames or self.num_frames
        ego_list, exo_list = self._as_batch(videos, len(texts), "videos"), self._as_batch(exo_videos, len(texts), "exo_videos")
        if ego_list is None and exo_list is None:
            if any(self.video_token in sample for sample in texts):
                raise ValueError(f"the text contains {self.video_token} but no video was given")
            return BatchFeature(dict(self.tokenizer(texts, **tokenizer_kwargs)), tensor_type=return_tensors)

        data = {}
        ego_clips = None
        if ego_list is not None:
            ego_clips = [self.load_video(video, num_frames) for video in ego_list]
            data["pixel_values_videos"] = self._pixel_values(ego_clips)
        if exo_list is not None:
            exo_clips = [
                self.load_video(video, num_frames, timestamps=None if ego_clips is None else ego_clips[i].timestamps)
                for i, video in enumerate(exo_list)
            ]
            data["exo_pixel_values_videos"] = self._pixel_values(exo_clips)

        placeholders = self.video_token * self.num_video_tokens(num_frames, "ego" if ego_list is not None else "exo")
        expanded = []
        for index, sample in enumerate(texts):
            count = sample.count(self.video_token)
            if count != 1:
                raise ValueError(f"text {index} has {count} {self.video_token} placeholders; exactly one per video is expected")
            expanded.append(sample.replace(self.video_token, placeholders))
        data.update(self.tokenizer(expanded, **tokenizer_kwargs))
        return BatchFeature(data, tensor_type=return_tensors)

    @staticmethod
    def _as_batch(videos, batch_size: int, name: str) -> list | None:
        if videos is None:
            return None
        single = isinstance(videos, (str, os.PathLike, dict, tuple)) or (isinstance(videos, np.ndarray) and videos.ndim == 4)
        videos = [videos] if single else list(videos)
        if len(videos) != batch_size:
            raise ValueError(f"got {len(videos)} {name} for {batch_size} texts; pass one video per text")
        return videos

    def apply_chat_template(self, conversation, chat_template=None, tokenize: bool = False, **kwargs):
        """Render the chat template; with `tokenize=True`, also load the `{"type": "video", "path"|"video", "start_sec",
        "end_sec"}` items of each conversation and return the processor's `BatchFeature`."""
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = conversation if batched else [conversation]
        rendered = [
            super(Exo2EgoProcessor, self).apply_chat_template(messages, chat_template=chat_template, tokenize=False, **kwargs)
            for messages in conversations
        ]
        if not tokenize:
            return rendered if batched else rendered[0]
        videos = []
        for messages in conversations:
            items = [
                item
                for message in messages
                if not isinstance(message["content"], str)
                for item in message["content"]
                if item.get("type") == "video"
            ]
            if len(items) > 1:
                raise ValueError("Exo2Ego takes one video per conversation")
            videos.extend(items)
        videos = videos or None
        # The template already wrote the BOS token.
        return self(text=rendered, videos=videos, add_special_tokens=False, return_tensors=kwargs.get("return_tensors", "pt"))

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["Exo2EgoProcessor", "VideoClip", "read_video_frames", "sample_timestamps"]

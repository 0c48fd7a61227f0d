"""Exo2Ego processor: PyAV video decoding, frame sampling, CLIP normalisation and `<video>` expansion."""

import json
import math
import os
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import ProcessingKwargs, Unpack, VideosKwargs
from transformers.utils import cached_file, logging

from .configuration_exo2ego import num_connector_tokens

try:  # PyAV is needed only to decode video files; decoded frames work without it.
    import av
except ImportError:  # pragma: no cover - exercised only where av is missing
    av = None

logger = logging.get_logger(__name__)

VideoInput = str | os.PathLike | dict | tuple | np.ndarray | list
SHORT_VIDEO_MODES = ("repeat", "error")
# Keys of a video dict: the file ("path" or "video"), the window, and "type" ("video") as chat items carry it.
VIDEO_DICT_KEYS = ("path", "video", "start_sec", "end_sec", "type")
# Keys of a video item in a chat message (transformers reads the file from "video", "url" or "path").
CHAT_VIDEO_KEYS = ("type", "path", "video", "url", "start_sec", "end_sec")
# Video kwargs handed to the CLIP image processor for every frame.
IMAGE_PROCESSOR_KEYS = (
    "do_convert_rgb",
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_center_crop",
    "crop_size",
)
# Known to transformers' VideosKwargs, but meaningless for this processor's fixed midpoint sampling.
UNSUPPORTED_VIDEO_KEYS = ("fps", "video_metadata", "return_metadata", "device", "do_pad", "default_to_square")


class Exo2EgoVideosKwargs(VideosKwargs, total=False):
    """`num_frames` (frames per video) from `VideosKwargs`, plus `short_video` ("repeat" or "error")."""

    short_video: Literal["repeat", "error"]


class Exo2EgoProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: Exo2EgoVideosKwargs
    _defaults = {"common_kwargs": {"return_tensors": "pt"}}


def check_num_frames(num_frames, argument: str = "num_frames") -> int:
    """`num_frames` as an int >= 1, or a ValueError naming `argument`."""
    if isinstance(num_frames, (bool, np.bool_)) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"{argument} must be a positive integer (frames sampled per video), got {num_frames!r}")
    return int(num_frames)


def check_short_video(short_video, argument: str = "short_video") -> str:
    if short_video not in SHORT_VIDEO_MODES:
        raise ValueError(f"{argument} must be one of {SHORT_VIDEO_MODES}, got {short_video!r}")
    return short_video


# Mistral-instruct style; video items render as the `<video>` placeholder the processor expands. Assistant turns sit in
# `{% generation %}` blocks, so `return_assistant_tokens_mask=True` marks them (assistant-only loss).
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\n' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
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
    "{{- ' ' -}}{%- generation -%}{{- render(message['content']) + eos_token -}}{%- endgeneration -%}"
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
    _check_window(start_sec, end_sec, path)
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
            arrays[id(frame)] = frame.to_ndarray(format="rgb24")
    return [arrays[id(frame)] for _, frame in chosen], [time for time, _ in chosen]


def _video_source(video: VideoInput, argument: str = "videos") -> tuple[object, float | None, float | None]:
    """Split a video input into (path or frames, start_sec, end_sec); a ValueError naming `argument` for unknown
    dict keys or a window that is not a pair of finite, ordered times."""
    if isinstance(video, dict):
        unknown = sorted(set(video) - set(VIDEO_DICT_KEYS), key=str)
        if unknown:
            raise ValueError(
                f"{argument}: unknown video key(s) {unknown}; a video dict takes {list(VIDEO_DICT_KEYS)} (the file "
                "as 'path' or 'video', the window as 'start_sec' and 'end_sec')"
            )
        if video.get("type", "video") != "video":
            raise ValueError(f"{argument}: a video dict's 'type' must be 'video', got {video['type']!r}")
        source = video.get("path", video.get("video"))
        if source is None:
            raise ValueError(f"{argument}: a video dict needs a 'path' (or 'video') key, got keys {sorted(video)}")
        start_sec, end_sec = video.get("start_sec"), video.get("end_sec")
    elif isinstance(video, tuple):
        if len(video) != 3:
            raise ValueError(f"{argument}: a video tuple must be (path, start_sec, end_sec)")
        source, start_sec, end_sec = video
    else:
        return video, None, None
    _check_window(start_sec, end_sec, argument)
    return source, start_sec, end_sec


def _check_window(start_sec, end_sec, argument: str) -> None:
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


def _frames_array(frames, argument: str = "videos") -> np.ndarray:
    """Decoded frames as one (T, H, W, 3) uint8 array.

    Accepted: an array or tensor (T, H, W, 3) or (T, 3, H, W) (channels last whenever the last axis has 3 entries),
    or a list of PIL images / (H, W, 3) or (3, H, W) arrays; integer values in [0, 255], float values in [0, 1]
    (scaled by 255 and rounded). Anything else raises a ValueError naming `argument`.
    """
    if isinstance(frames, list):
        if not frames:
            raise ValueError(f"{argument}: an empty list of frames")
        frames = [frame.convert("RGB") if isinstance(frame, Image.Image) else _as_numpy(frame) for frame in frames]
        shapes = {np.asarray(frame).shape for frame in frames}
        if len(shapes) > 1:
            raise ValueError(f"{argument}: all frames of a video must have one shape, got {sorted(shapes)}")
        frames = np.stack([np.asarray(frame) for frame in frames])
    frames = _as_numpy(frames)
    if frames.ndim == 4 and frames.shape[-1] != 3 and frames.shape[1] == 3:
        frames = frames.transpose(0, 2, 3, 1)  # (T, 3, H, W) -> (T, H, W, 3)
    if frames.ndim != 4 or frames.shape[-1] != 3 or 0 in frames.shape:
        raise ValueError(
            f"{argument}: decoded video frames must be (frames, height, width, 3) or (frames, 3, height, width), "
            f"got shape {frames.shape}"
        )
    if frames.dtype == np.uint8:
        return frames
    if np.issubdtype(frames.dtype, np.floating):
        if not np.isfinite(frames).all() or frames.min() < 0 or frames.max() > 1:
            raise ValueError(
                f"{argument}: float frames must hold values in [0, 1], got [{frames.min()}, {frames.max()}]; pass "
                "uint8 (or integer) frames for values in [0, 255]"
            )
        return np.round(frames * 255).astype(np.uint8)
    if np.issubdtype(frames.dtype, np.integer):
        if frames.min() < 0 or frames.max() > 255:
            raise ValueError(
                f"{argument}: integer frames must hold values in [0, 255], got [{frames.min()}, {frames.max()}]"
            )
        return frames.astype(np.uint8)
    raise ValueError(f"{argument}: frames of dtype {frames.dtype} are not supported; use uint8 or float in [0, 1]")


def _as_numpy(frames) -> np.ndarray:
    """A numpy view of an array, a torch tensor (without importing torch) or nested lists."""
    if hasattr(frames, "detach") and hasattr(frames, "cpu"):
        frames = frames.detach().cpu()
        if str(frames.dtype) == "torch.bfloat16":
            frames = frames.float()
        frames = frames.numpy()
    return np.asarray(frames)


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

    `processor(text=..., videos=..., exo_videos=...)`: a video is a file path, a dict `{"path", "start_sec",
    "end_sec"}` (unknown keys, times that are not finite numbers and empty windows raise), a `(path, start_sec,
    end_sec)` tuple, or decoded frames: an array or tensor (T, H, W, 3) or
    (T, 3, H, W) (read as channels-last whenever the last axis has 3 entries) or a list of images, with integer
    values in [0, 255] or float values in [0, 1]. Frames are taken at the midpoints of T equal segments of the
    window; an exo video of a sample is read at the ego video's exact timestamps. Frames are padded to square with
    the mean colour and normalised by the CLIP image processor. Each `<video>` in the text becomes as many
    placeholders as the model inserts: 2N for ego input ([x; F(x)]), N for exo input alone (stage 1), N from
    `num_connector_tokens`.

    Keyword arguments follow transformers' `ProcessingKwargs`: `videos_kwargs={"num_frames": 8, "short_video":
    "error"}` (or the same keys flat), `text_kwargs={...}` for the tokenizer, `return_tensors` ("pt" by default).
    An unknown keyword raises a TypeError.

    Args:
        image_processor: a CLIP image processor (`CLIPImageProcessorPil` works without torchvision).
        tokenizer: the LLM tokenizer, holding the `video_token` as a special token.
        num_frames (`int`): frames per video unless a call passes `num_frames`.
        grid_size (`int`): the vision towers' patch grid side (image_size // patch_size).
        connector_type (`str`): `stc` or `stc_v35`, as in the model config.
        short_video (`str`): "repeat" (default) or "error" when a window has fewer distinct frames than requested,
            or asks for times after a video's last frame; a call may override it.
    """

    attributes = ["image_processor", "tokenizer"]
    valid_processor_kwargs = Exo2EgoProcessorKwargs

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
        self.num_frames = check_num_frames(num_frames)
        self.grid_size = grid_size
        self.connector_type = connector_type
        self.short_video = check_short_video(short_video)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE, **kwargs)
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {video_token!r} token; add it as a special token first")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """`ProcessorMixin.from_pretrained`, then `check_video_token_id` against the `video_token_id` of the model
        config saved with it (`config.json` in the same folder or repo, when there is one)."""
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        config_path = cached_file(
            pretrained_model_name_or_path,
            "config.json",
            **{
                key: kwargs[key]
                for key in ("cache_dir", "revision", "token", "local_files_only", "subfolder")
                if key in kwargs
            },
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        if config_path is not None:
            with open(config_path, encoding="utf-8") as handle:
                model_token_id = json.load(handle).get("video_token_id")
            if model_token_id is not None:
                processor.check_video_token_id(model_token_id, f"{pretrained_model_name_or_path}/config.json")
        return processor

    def check_video_token_id(self, video_token_id: int, source: str = "the model config") -> None:
        """Raise a ValueError when a model's `video_token_id` is not this tokenizer's `video_token`: the model would
        find none of the placeholders this processor writes."""
        if video_token_id == self.video_token_id:
            return
        vocabulary = len(self.tokenizer)
        spelled = (
            f"id {video_token_id} is {self.tokenizer.convert_ids_to_tokens(video_token_id)!r} in the tokenizer"
            if isinstance(video_token_id, int) and 0 <= video_token_id < vocabulary
            else f"id {video_token_id!r} is not in the tokenizer's vocabulary of {vocabulary}"
        )
        raise ValueError(
            f"{source} sets video_token_id {video_token_id!r}, but the tokenizer's {self.video_token!r} is id "
            f"{self.video_token_id} ({spelled}); set video_token_id to {self.video_token_id} or load the tokenizer "
            "the model was trained with"
        )

    def num_video_tokens(self, num_frames: int | None = None, mode: Literal["ego", "exo"] = "ego") -> int:
        """Placeholders one `<video>` expands to: 2N for ego input ([x; F(x)]), N for exo input alone."""
        num_frames = check_num_frames(self.num_frames if num_frames is None else num_frames)
        per_stream = num_connector_tokens(num_frames, self.grid_size, self.connector_type)
        return 2 * per_stream if mode == "ego" else per_stream

    def load_video(
        self,
        video: VideoInput,
        num_frames: int,
        timestamps: np.ndarray | None = None,
        short_video: str | None = None,
        argument: str = "videos",
    ) -> VideoClip:
        """Sample `num_frames` frames (or the frames at `timestamps`) from one video input."""
        short_video = check_short_video(self.short_video if short_video is None else short_video)
        num_frames = check_num_frames(num_frames)
        source, start_sec, end_sec = _video_source(video, argument)
        if isinstance(source, (str, os.PathLike)):
            return read_video_frames(
                source, num_frames, start_sec, end_sec, timestamps=timestamps, short_video=short_video
            )
        frames = _frames_array(source, argument)
        if len(frames) < num_frames:
            message = f"{argument}: the decoded video has {len(frames)} frames but {num_frames} were requested"
            if short_video == "error":
                raise ValueError(message + " (short_video='error')")
            logger.warning_once(message + "; repeating frames (short_video='repeat')")
        # Decoded frames carry no clock: sample frame indices at segment midpoints instead.
        indices = np.floor(sample_timestamps(0, len(frames), num_frames)).astype(int)
        return VideoClip(frames[indices], indices.astype(np.float64), indices.astype(np.float64))

    def _pixel_values(self, clips: list[VideoClip], **image_kwargs):
        mean = image_kwargs.get("image_mean", self.image_processor.image_mean)
        fill = tuple(int(255 * value) for value in np.broadcast_to(mean, (3,)))
        videos = []
        for clip in clips:
            squares = [_expand_to_square(frame, fill) for frame in clip.frames]
            videos.append(self.image_processor(images=squares, return_tensors="np", **image_kwargs)["pixel_values"])
        return np.stack(videos)  # (B, T, 3, S, S)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos: VideoInput | list[VideoInput] | None = None,
        exo_videos: VideoInput | list[VideoInput] | None = None,
        images=None,
        audio=None,
        **kwargs: Unpack[Exo2EgoProcessorKwargs],
    ) -> BatchFeature:
        """
        Returns a `BatchFeature` with `input_ids`, `attention_mask`, and `pixel_values_videos` (B, T, 3, S, S) for ego
        videos and/or `exo_pixel_values_videos` (B, T, 3, S, S) for exo videos. Exactly one `<video>` per text when
        videos are given. `images` and `audio` exist for transformers' generic callers and must stay None.
        """
        if images is not None or audio is not None:
            raise ValueError("Exo2EgoProcessor reads videos only: pass frames or files as `videos=`, not images/audio")
        if text is None:
            raise ValueError("Exo2EgoProcessor needs text with a <video> placeholder per video")
        self._refuse_unknown_kwargs(kwargs)
        merged = self._merge_kwargs(Exo2EgoProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, videos_kwargs = merged["text_kwargs"], merged["videos_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)
        return_offsets = text_kwargs.pop("return_text_replacement_offsets", merged["return_text_replacement_offsets"])
        return_types = text_kwargs.pop("return_mm_token_type_ids", merged["return_mm_token_type_ids"])
        num_frames = videos_kwargs.get("num_frames")
        num_frames = check_num_frames(self.num_frames if num_frames is None else num_frames)
        short_video = videos_kwargs.get("short_video")
        short_video = check_short_video(self.short_video if short_video is None else short_video)
        for key in UNSUPPORTED_VIDEO_KEYS:
            if videos_kwargs.get(key) is not None:
                raise ValueError(f"{key} is not supported: Exo2Ego takes num_frames frames at segment midpoints")
        if videos_kwargs.get("do_sample_frames") is False:
            raise ValueError("do_sample_frames=False is not supported: Exo2Ego always samples num_frames frames")
        image_kwargs = {key: videos_kwargs[key] for key in IMAGE_PROCESSOR_KEYS if videos_kwargs.get(key) is not None}

        texts = [text] if isinstance(text, str) else list(text)
        ego_list = self._as_batch(videos, len(texts), "videos")
        exo_list = self._as_batch(exo_videos, len(texts), "exo_videos")
        if ego_list is None and exo_list is None:
            if any(self.video_token in sample for sample in texts):
                raise ValueError(f"the text contains {self.video_token} but no video was given")
            data = dict(self.tokenizer(texts, **text_kwargs))
            if return_offsets:
                data["text_replacement_offsets"] = [[] for _ in texts]
            if return_types:
                data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
            return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion)

        data = {}
        ego_clips = None
        if ego_list is not None:
            ego_clips = [
                self.load_video(video, num_frames, short_video=short_video, argument=f"videos[{index}]")
                for index, video in enumerate(ego_list)
            ]
            data["pixel_values_videos"] = self._pixel_values(ego_clips, **image_kwargs)
        if exo_list is not None:
            exo_clips = [
                self.load_video(
                    video,
                    num_frames,
                    timestamps=None if ego_clips is None else ego_clips[index].timestamps,
                    short_video=short_video,
                    argument=f"exo_videos[{index}]",
                )
                for index, video in enumerate(exo_list)
            ]
            data["exo_pixel_values_videos"] = self._pixel_values(exo_clips, **image_kwargs)

        for index, sample in enumerate(texts):
            count = sample.count(self.video_token)
            if count != 1:
                raise ValueError(
                    f"text {index} has {count} {self.video_token} placeholders; exactly one per video is expected"
                )
        placeholders = self.video_token * self.num_video_tokens(num_frames, "ego" if ego_list is not None else "exo")
        expanded, offsets = self.get_text_with_replacements(texts, videos_replacements=[placeholders] * len(texts))
        data.update(self.tokenizer(expanded, **text_kwargs))
        if return_offsets:
            data["text_replacement_offsets"] = offsets
        if return_types:  # 2 at `<video>` placeholders, 0 elsewhere
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion)

    def _refuse_unknown_kwargs(self, kwargs: dict) -> None:
        """Raise for call keywords no modality knows (transformers only logs them), so typos do not pass silently."""
        annotations = Exo2EgoProcessorKwargs.__annotations__
        modality_keys = {name: set(getattr(kind, "__annotations__", {})) for name, kind in annotations.items()}
        known = set(annotations) | {"common_kwargs"}
        for keys in modality_keys.values():
            known |= keys
        unknown = sorted(set(kwargs) - known)
        for name, value in kwargs.items():
            if modality_keys.get(name) and isinstance(value, dict):
                unknown += [f"{name}[{key!r}]" for key in sorted(set(value) - modality_keys[name])]
        if unknown:
            raise TypeError(f"Exo2EgoProcessor got unexpected keyword argument(s) {unknown}")

    @staticmethod
    def _as_batch(videos, batch_size: int, name: str) -> list | None:
        if videos is None:
            return None
        single = isinstance(videos, (str, os.PathLike, dict, tuple)) or (getattr(videos, "ndim", 0) == 4)
        videos = [videos] if single else list(videos)
        # apply_chat_template passes one list of videos per conversation.
        flat = []
        for index, video in enumerate(videos):
            if isinstance(video, list) and video and not _is_frame(video[0]):
                if len(video) != 1:
                    raise ValueError(f"{name}[{index}] holds {len(video)} videos; Exo2Ego takes one video per text")
                video = video[0]
            flat.append(video)
        if len(flat) != batch_size:
            raise ValueError(f"got {len(flat)} {name} for {batch_size} texts; pass one video per text")
        return flat

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """transformers' `apply_chat_template`, with video items that may carry a window: `{"type": "video",
        "path"|"video": ..., "start_sec": ..., "end_sec": ...}`. `tokenize=True` returns the input ids, with
        `return_dict=True` the processor's `BatchFeature` (and `assistant_masks` with
        `return_assistant_tokens_mask=True`)."""
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = [
            [_with_video_window(message) for message in messages]
            for messages in (conversation if batched else [conversation])
        ]
        return super().apply_chat_template(conversations if batched else conversations[0], chat_template, **kwargs)

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


def _is_frame(item) -> bool:
    """One frame (an image or a 3-D array) rather than one video."""
    return isinstance(item, Image.Image) or getattr(item, "ndim", 0) == 3


def _with_video_window(message: dict) -> dict:
    """A copy of a chat message whose windowed video items carry the window inside their "video" value, which is
    what transformers hands to the processor call."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str) or not content:
        return message
    items = []
    for item in content:
        if isinstance(item, dict) and item.get("type") == "video":
            unknown = sorted(set(item) - set(CHAT_VIDEO_KEYS), key=str)
            if unknown:
                raise ValueError(
                    f"unknown key(s) {unknown} in a video item of a chat message; it takes {list(CHAT_VIDEO_KEYS)} "
                    "(the window as 'start_sec' and 'end_sec')"
                )
        if isinstance(item, dict) and item.get("type") == "video" and ("start_sec" in item or "end_sec" in item):
            source = item.get("path", item.get("video", item.get("url")))
            window = {"path": source, "start_sec": item.get("start_sec"), "end_sec": item.get("end_sec")}
            item = {"type": "video", "video": window}
        items.append(item)
    return {**message, "content": items}


__all__ = [
    "Exo2EgoProcessor",
    "Exo2EgoProcessorKwargs",
    "Exo2EgoVideosKwargs",
    "VideoClip",
    "read_video_frames",
    "sample_timestamps",
]

"""Exo2Ego processor: frame sampling, CLIP normalisation and the expansion of `<video>` / `<image>` placeholders.

Video files are decoded by `video_io_exo2ego` (PyAV); this module holds the processor and the normalisation of its
inputs (video files, windows, decoded frames, images).
"""

import copy
import json
import os
import re
from typing import Literal

import numpy as np
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import load_image
from transformers.processing_utils import ProcessingKwargs, Unpack, VideosKwargs
from transformers.utils import cached_file, logging

from .configuration_exo2ego import num_connector_tokens
from .video_io_exo2ego import VideoClip, check_short_video, check_window, read_video_frames, sample_timestamps

logger = logging.get_logger(__name__)

VideoInput = str | os.PathLike | dict | tuple | np.ndarray | list
ImageInput = Image.Image | np.ndarray | str | os.PathLike | list
# Keys of a video dict: the file ("path" or "video"), the window, and "type" ("video") as chat items carry it.
VIDEO_DICT_KEYS = ("path", "video", "start_sec", "end_sec", "type")
# Keys of a video item in a chat message (transformers reads the file from "video", "url" or "path").
CHAT_VIDEO_KEYS = ("type", "path", "video", "url", "start_sec", "end_sec")
# Video and image kwargs handed to the CLIP image processor for every frame.
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
# Known to transformers' ImagesKwargs, but not applied: images are padded to square and CLIP-processed as frames.
UNSUPPORTED_IMAGE_KEYS = ("device", "do_pad", "pad_size", "default_to_square", "image_seq_length")
# Call-time video kwargs whose default a checkpoint may set: its frame processor (the CLIP image processor) holds them.
VIDEO_DEFAULT_KEYS = ("num_frames", "short_video")


class Exo2EgoVideosKwargs(VideosKwargs, total=False):
    """`num_frames` (frames per video) and `do_sample_frames` from `VideosKwargs`, plus `short_video` ("repeat" or
    "error")."""

    short_video: Literal["repeat", "error"]


class Exo2EgoProcessorKwargs(ProcessingKwargs, total=False):
    videos_kwargs: Exo2EgoVideosKwargs
    # The class defaults (the paper's 16 frames). A checkpoint's own defaults are attributes of its frame processor,
    # saved with it, and rank between these and the call's kwargs (`Exo2EgoProcessor._merge_kwargs`).
    _defaults = {
        "videos_kwargs": {"num_frames": 16, "short_video": "repeat"},
        "common_kwargs": {"return_tensors": "pt"},
    }


def check_num_frames(num_frames, argument: str = "num_frames") -> int:
    """`num_frames` as an int >= 1, or a ValueError naming `argument`."""
    if isinstance(num_frames, (bool, np.bool_)) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"{argument} must be a positive integer (frames sampled per video), got {num_frames!r}")
    return int(num_frames)


# Mistral-instruct style; video and image items render as the `<video>` / `<image>` placeholders the processor
# expands. Assistant turns sit in `{% generation %}` blocks, so `return_assistant_tokens_mask=True` marks them
# (assistant-only loss).
DEFAULT_CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for item in content -%}"
    "{%- if item['type'] == 'video' -%}{{- '<video>\n' -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<image>\n' -}}"
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
    check_window(start_sec, end_sec, argument)
    return source, start_sec, end_sec


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


def _is_image(item) -> bool:
    """One image: a PIL image, a 3-D array or tensor, or a path or URL."""
    return isinstance(item, (Image.Image, str, os.PathLike)) or getattr(item, "ndim", 0) == 3


def _image_frame(image, argument: str) -> np.ndarray:
    """One image as an (H, W, 3) uint8 frame, with the conventions of decoded video frames (channels first or last,
    integers in [0, 255] or floats in [0, 1]); a path or URL is read with transformers' `load_image`."""
    if isinstance(image, (str, os.PathLike)):
        try:
            image = load_image(os.fspath(image))
        except Exception as error:  # a missing file, an unreachable URL, bytes that are not an image
            raise ValueError(f"{argument}: cannot load the image {os.fspath(image)!r}: {error}") from error
    if not _is_image(image):
        shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
        raise ValueError(
            f"{argument}: an image is a PIL image, an (H, W, 3) or (3, H, W) array or tensor, or a path or URL; "
            f"got {type(image).__name__}{shape}"
        )
    return _frames_array([image], argument)[0]


def _with_video_defaults(frame_processor, values: dict):
    """`frame_processor` holding the video defaults `values` (`num_frames`, `short_video`): itself when it holds them
    already, else a copy that does (a frame processor the caller passed in is left as it was)."""
    values = {key: value for key, value in values.items() if value is not None}
    if all(getattr(frame_processor, key, None) == value for key, value in values.items()):
        return frame_processor
    frame_processor = copy.copy(frame_processor)
    for key, value in values.items():
        setattr(frame_processor, key, value)
    return frame_processor


class Exo2EgoProcessor(ProcessorMixin):
    r"""
    Tokenizer + CLIP image processor (Pillow backend) for Exo2Ego.

    `processor(text=..., videos=..., exo_videos=..., images=...)`: a video is a file path, a dict `{"path",
    "start_sec", "end_sec"}` (unknown keys, times that are not finite numbers and empty windows raise), a `(path,
    start_sec, end_sec)` tuple, or decoded frames: an array or tensor (T, H, W, 3) or
    (T, 3, H, W) (read as channels-last whenever the last axis has 3 entries) or a list of images, with integer
    values in [0, 255] or float values in [0, 1]. Frames are taken at the midpoints of T equal segments of the
    window; an exo video of a sample is read at the ego video's exact timestamps. Frames are padded to square with
    the mean colour and normalised by the CLIP image processor. Each `<video>` in the text becomes as many
    placeholders as the model inserts: 2N for ego input ([x; F(x)]), N for exo input alone (stage 1), N from
    `num_connector_tokens`. One video per text, and exactly one `<video>` in each text when videos are given.

    Images (`images=`, one `<image>` in the text per image; a PIL image, an (H, W, 3) or (3, H, W) array or tensor,
    or a path or URL; a flat list is consumed by the texts' `<image>` placeholders in order, a nested list gives each
    text its own, possibly empty, list) are videos of one frame repeated `num_frames` times, as VideoLLaMA2 and the
    project's image-text training data (`train/data.py`, `read_image_frames`) present them to the model: padded and
    normalised like any frame, an image joins `pixel_values_videos` (in the reading order of the `<image>` and
    `<video>` placeholders over the batch) and its `<image>` expands to the same 2N `<video>` placeholder tokens as
    an ego video, so the model reads it through its video path, unchanged (no image token, no `pixel_values`; the
    `<image>` placeholder need not be a tokenizer token, it is replaced before tokenizing). Not a one-frame video:
    the STC connector's stride-2 temporal convolution gets no time step from one frame with `stc_v35` (and a 1-step
    grid with `stc`, a token layout the model never saw), and one `pixel_values_videos` tensor holds one frame count.
    Images go to the ego tower, so they cannot be combined with `exo_videos` (stage-1 exo image-text pairs are
    passed as `exo_videos` of repeated frames, as the training data does).

    Keyword arguments follow transformers' `ProcessingKwargs`: `videos_kwargs={"num_frames": 8, "short_video":
    "error"}` (or the same keys flat), `images_kwargs={...}` for the CLIP processing of images,
    `text_kwargs={...}` for the tokenizer, `return_tensors` ("pt" by default). An unknown keyword raises a TypeError.
    `do_sample_frames=False` takes decoded frames as given (every frame; the videos of one call then need one frame
    count, which images repeat to) instead of sampling `num_frames` of them.

    Call-time defaults live where transformers keeps them, not in `__init__`: `num_frames` (16) and `short_video`
    ("repeat") in `Exo2EgoProcessorKwargs._defaults`, overridden per checkpoint by the `num_frames` / `short_video`
    attributes of its frame processor (the CLIP image processor, which does the work of a video processor here and is
    saved in `processor_config.json`), overridden in turn by a call's kwargs. `processor.num_frames` and
    `processor.short_video` read (and set) the checkpoint's defaults. For older code and checkpoints,
    `Exo2EgoProcessor(..., num_frames=4, short_video="error")` and a `processor_config.json` with top-level
    `num_frames` / `short_video` (saved before these moved) set them too.

    Args:
        image_processor: a CLIP image processor (`CLIPImageProcessorPil` works without torchvision); its
            `num_frames` / `short_video` attributes, when set, are this checkpoint's video defaults.
        tokenizer: the LLM tokenizer, holding the `video_token` as a special token.
        video_token (`str`): the placeholder of a video, a special token of the tokenizer.
        image_token (`str`): the placeholder of an image in the text (replaced by `video_token`s before tokenizing).
        grid_size (`int`): the vision towers' patch grid side (image_size // patch_size).
        connector_type (`str`): `stc` or `stc_v35`, as in the model config.
    """

    attributes = ["image_processor", "tokenizer"]
    valid_processor_kwargs = Exo2EgoProcessorKwargs

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        video_token: str = "<video>",
        image_token: str = "<image>",
        grid_size: int = 24,
        connector_type: str = "stc",
        **kwargs,
    ):
        # Earlier versions took the video defaults as arguments: they now go to the frame processor.
        legacy_defaults = {key: kwargs.pop(key) for key in VIDEO_DEFAULT_KEYS if key in kwargs}
        self.video_token = video_token
        self.image_token = image_token
        self.grid_size = grid_size
        self.connector_type = connector_type
        if image_token == video_token:
            raise ValueError(f"image_token and video_token must differ, both are {video_token!r}")
        if legacy_defaults and image_processor is not None:
            self._check_video_defaults(legacy_defaults)
            image_processor = _with_video_defaults(image_processor, legacy_defaults)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE, **kwargs)
        self._check_video_defaults({key: self._video_default(key) for key in VIDEO_DEFAULT_KEYS})
        self.video_token_id = self.tokenizer.convert_tokens_to_ids(video_token)
        if self.video_token_id is None or self.video_token_id == self.tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {video_token!r} token; add it as a special token first")

    @property
    def num_frames(self) -> int:
        """Frames per video when a call passes no `num_frames`: the frame processor's, else the class default."""
        return self._video_default("num_frames")

    @num_frames.setter
    def num_frames(self, value: int) -> None:
        self._set_video_defaults(num_frames=value)

    @property
    def short_video(self) -> str:
        """ "repeat" or "error" (a window with fewer distinct frames than requested) when a call passes none."""
        return self._video_default("short_video")

    @short_video.setter
    def short_video(self, value: str) -> None:
        self._set_video_defaults(short_video=value)

    def _video_default(self, key: str):
        value = getattr(self.image_processor, key, None)
        return Exo2EgoProcessorKwargs._defaults["videos_kwargs"][key] if value is None else value

    def _set_video_defaults(self, **values) -> None:
        self._check_video_defaults(values)
        for key, value in values.items():
            setattr(self.image_processor, key, value)

    @staticmethod
    def _check_video_defaults(values: dict) -> None:
        if values.get("num_frames") is not None:
            check_num_frames(values["num_frames"])
        if values.get("short_video") is not None:
            check_short_video(values["short_video"])

    @property
    def model_input_names(self) -> list[str]:
        """What a call with text, images and videos returns for the model. `exo_pixel_values_videos` (the exo view of
        training stages 1-2) is returned only for `exo_videos`."""
        return [*self.tokenizer.model_input_names, "pixel_values_videos"]

    @classmethod
    def from_dict(cls, processor_dict: dict, **kwargs):
        """`ProcessorMixin.from_dict`; the top-level `num_frames` / `short_video` of a `processor_config.json` saved
        before they moved to the frame processor (and the same keywords given to `from_pretrained`) become the frame
        processor's video defaults, where `ProcessorMixin` would drop them (they are no `__init__` arguments)."""
        processor_dict = dict(processor_dict)
        legacy_defaults = {key: processor_dict.pop(key) for key in VIDEO_DEFAULT_KEYS if key in processor_dict}
        legacy_defaults.update({key: kwargs.pop(key) for key in VIDEO_DEFAULT_KEYS if key in kwargs})
        loaded = super().from_dict(processor_dict, **kwargs)
        processor = loaded[0] if isinstance(loaded, tuple) else loaded
        if legacy_defaults:
            cls._check_video_defaults(legacy_defaults)
            processor.image_processor = _with_video_defaults(processor.image_processor, legacy_defaults)
        return loaded

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
        """Placeholders one `<video>` (or `<image>`) expands to: 2N for ego input ([x; F(x)]), N for exo input
        alone."""
        num_frames = check_num_frames(self.num_frames if num_frames is None else num_frames)
        per_stream = num_connector_tokens(num_frames, self.grid_size, self.connector_type)
        return 2 * per_stream if mode == "ego" else per_stream

    def _merge_kwargs(self, ModelProcessorKwargs=None, tokenizer_init_kwargs=None, **kwargs) -> dict[str, dict]:
        """transformers' merge, with this checkpoint's video defaults (its frame processor's `num_frames` /
        `short_video`) between the class `_defaults` and the call's kwargs."""
        merged = super()._merge_kwargs(ModelProcessorKwargs, tokenizer_init_kwargs, **kwargs)
        given = {**(kwargs.get("common_kwargs") or {}), **(kwargs.get("videos_kwargs") or {}), **kwargs}
        for key in VIDEO_DEFAULT_KEYS:
            if given.get(key) is None:
                merged["videos_kwargs"][key] = self._video_default(key)
        return merged

    def load_video(
        self,
        video: VideoInput,
        num_frames: int,
        timestamps: np.ndarray | None = None,
        short_video: str | None = None,
        argument: str = "videos",
        do_sample_frames: bool = True,
    ) -> VideoClip:
        """Sample `num_frames` frames (or the frames at `timestamps`) from one video input; with
        `do_sample_frames=False`, all frames of decoded frames as given."""
        short_video = check_short_video(self.short_video if short_video is None else short_video)
        num_frames = check_num_frames(num_frames)
        source, start_sec, end_sec = _video_source(video, argument)
        if isinstance(source, (str, os.PathLike)):
            if not do_sample_frames:
                raise ValueError(
                    f"{argument}: do_sample_frames=False takes decoded frames; a video file is always sampled at "
                    "num_frames"
                )
            return read_video_frames(
                source, num_frames, start_sec, end_sec, timestamps=timestamps, short_video=short_video
            )
        frames = _frames_array(source, argument)
        if not do_sample_frames:
            if start_sec is not None or end_sec is not None:
                raise ValueError(
                    f"{argument}: do_sample_frames=False takes every frame; decoded frames have no window"
                )
            indices = np.arange(len(frames), dtype=np.float64)
            return VideoClip(frames, indices, indices)
        if len(frames) < num_frames:
            message = f"{argument}: the decoded video has {len(frames)} frames but {num_frames} were requested"
            if short_video == "error":
                raise ValueError(message + " (short_video='error')")
            logger.warning_once(message + "; repeating frames (short_video='repeat')")
        # Decoded frames carry no clock: sample frame indices at segment midpoints instead.
        indices = np.floor(sample_timestamps(0, len(frames), num_frames)).astype(int)
        return VideoClip(frames[indices], indices.astype(np.float64), indices.astype(np.float64))

    def _frame_pixels(self, frames, **image_kwargs) -> np.ndarray:
        """(T, 3, S, S) pixel values of uint8 (T, H, W, 3) frames: padded to square with the mean colour, then CLIP."""
        mean = image_kwargs.get("image_mean", self.image_processor.image_mean)
        fill = tuple(int(255 * value) for value in np.broadcast_to(mean, (3,)))
        squares = [_expand_to_square(frame, fill) for frame in frames]
        return self.image_processor(images=squares, return_tensors="np", **image_kwargs)["pixel_values"]

    def _pixel_values(self, clips: list[VideoClip], **image_kwargs):
        return np.stack([self._frame_pixels(clip.frames, **image_kwargs) for clip in clips])  # (B, T, 3, S, S)

    def __call__(
        self,
        text: str | list[str] | None = None,
        videos: VideoInput | list[VideoInput] | None = None,
        exo_videos: VideoInput | list[VideoInput] | None = None,
        images: ImageInput | list[ImageInput] | list[list[ImageInput]] | None = None,
        **kwargs: Unpack[Exo2EgoProcessorKwargs],
    ) -> BatchFeature:
        """
        Returns a `BatchFeature` with `input_ids`, `attention_mask`, and `pixel_values_videos` (V, T, 3, S, S) for ego
        videos and images (one entry per video or image, in the reading order of their placeholders) and/or
        `exo_pixel_values_videos` (B, T, 3, S, S) for exo videos. There is no audio: transformers' generic callers
        (`apply_chat_template`) pass `audio=None`, which is accepted, and any other `audio` raises.
        """
        audio = kwargs.pop("audio", None)
        if audio is not None:
            raise ValueError("Exo2EgoProcessor takes no audio: pass videos (`videos=`) or images (`images=`)")
        if text is None:
            raise ValueError(
                f"Exo2EgoProcessor needs text with a {self.video_token} placeholder per video and an "
                f"{self.image_token} placeholder per image"
            )
        self._refuse_unknown_kwargs(kwargs)
        merged = self._merge_kwargs(Exo2EgoProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, videos_kwargs, images_kwargs = (
            merged["text_kwargs"],
            merged["videos_kwargs"],
            merged["images_kwargs"],
        )
        return_tensors = text_kwargs.pop("return_tensors", None)
        return_offsets = text_kwargs.pop("return_text_replacement_offsets", merged["return_text_replacement_offsets"])
        return_types = text_kwargs.pop("return_mm_token_type_ids", merged["return_mm_token_type_ids"])
        num_frames = check_num_frames(videos_kwargs.get("num_frames"))
        short_video = check_short_video(videos_kwargs.get("short_video"))
        for key in UNSUPPORTED_VIDEO_KEYS:
            if videos_kwargs.get(key) is not None:
                raise ValueError(f"{key} is not supported: Exo2Ego takes num_frames frames at segment midpoints")
        for key in UNSUPPORTED_IMAGE_KEYS:
            if images_kwargs.get(key) is not None:
                raise ValueError(f"{key} is not supported for images: they are padded to square and CLIP-processed")
        do_sample_frames = videos_kwargs.get("do_sample_frames") is not False
        video_image_kwargs = {
            key: videos_kwargs[key] for key in IMAGE_PROCESSOR_KEYS if videos_kwargs.get(key) is not None
        }
        image_kwargs = {key: images_kwargs[key] for key in IMAGE_PROCESSOR_KEYS if images_kwargs.get(key) is not None}

        texts = [text] if isinstance(text, str) else list(text)
        ego_list = self._as_batch(videos, len(texts), "videos")
        exo_list = self._as_batch(exo_videos, len(texts), "exo_videos")
        image_lists = self._images_per_text(images, texts)
        if image_lists is not None and exo_list is not None:
            raise ValueError(
                "images go to the ego tower and cannot be combined with exo_videos; pass an exo image as exo_videos "
                "of its frame repeated"
            )
        if ego_list is None and exo_list is None and image_lists is None:
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
                self.load_video(
                    video,
                    num_frames,
                    short_video=short_video,
                    argument=f"videos[{index}]",
                    do_sample_frames=do_sample_frames,
                )
                for index, video in enumerate(ego_list)
            ]
        exo_clips = None
        if exo_list is not None:
            exo_clips = [
                self.load_video(
                    video,
                    num_frames,
                    timestamps=None if ego_clips is None or not do_sample_frames else ego_clips[index].timestamps,
                    short_video=short_video,
                    argument=f"exo_videos[{index}]",
                    do_sample_frames=do_sample_frames,
                )
                for index, video in enumerate(exo_list)
            ]
        if not do_sample_frames and (ego_clips or exo_clips):
            counts = sorted({len(clip.frames) for clip in (ego_clips or []) + (exo_clips or [])})
            if len(counts) > 1:
                raise ValueError(
                    f"do_sample_frames=False keeps every frame, so the videos of one call need one frame count; got "
                    f"{counts}"
                )
            num_frames = counts[0]
        if ego_clips is not None and image_lists is None:
            data["pixel_values_videos"] = self._pixel_values(ego_clips, **video_image_kwargs)
        if exo_clips is not None:
            data["exo_pixel_values_videos"] = self._pixel_values(exo_clips, **video_image_kwargs)

        for index, sample in enumerate(texts):
            count = sample.count(self.video_token)
            if ego_clips is not None or exo_clips is not None:
                if count != 1:
                    raise ValueError(
                        f"text {index} has {count} {self.video_token} placeholders; exactly one per video is expected"
                    )
            elif count:
                raise ValueError(f"the text contains {self.video_token} but no video was given")
        mode = "exo" if ego_clips is None and image_lists is None else "ego"
        placeholders = self.video_token * self.num_video_tokens(num_frames, mode)
        videos_replacements = [] if ego_clips is None and exo_clips is None else [placeholders] * len(texts)
        images_replacements = []
        if image_lists is not None:
            data["pixel_values_videos"] = self._pixel_values_in_reading_order(
                texts, ego_clips, image_lists, num_frames, video_image_kwargs, image_kwargs
            )
            images_replacements = [placeholders] * sum(len(items) for items in image_lists)
        expanded, offsets = self.get_text_with_replacements(
            texts, images_replacements=images_replacements, videos_replacements=videos_replacements
        )
        data.update(self.tokenizer(expanded, **text_kwargs))
        if return_offsets:
            data["text_replacement_offsets"] = offsets
        if return_types:  # 2 at `<video>` placeholders (those of images too), 0 elsewhere
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion)

    def _images_per_text(self, images, texts: list[str]) -> list[list] | None:
        """One list of images per text, checked against its `<image>` placeholders; None without images."""
        counts = [sample.count(self.image_token) for sample in texts]
        if images is None:
            if any(counts):
                raise ValueError(f"the text contains {self.image_token} but no image was given")
            return None
        if _is_image(images):
            images = [images]
        elif getattr(images, "ndim", 0) == 4:  # a batch of images as one array or tensor
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            raise ValueError(
                "images: expected an image, a list of images or one list of images per text, got "
                f"{type(images).__name__}"
            )
        if images and all(isinstance(item, (list, tuple)) for item in images):  # one list per text
            if len(images) != len(texts):
                raise ValueError(
                    f"images: got {len(images)} lists of images for {len(texts)} texts; pass one per text"
                )
            per_text = [list(items) for items in images]
        else:
            if len(images) != sum(counts):
                raise ValueError(
                    f"got {len(images)} images for {sum(counts)} {self.image_token} placeholders in the text; pass "
                    f"one image per {self.image_token}"
                )
            starts = np.cumsum([0, *counts])
            per_text = [list(images[start:end]) for start, end in zip(starts[:-1], starts[1:])]
        for index, (items, count) in enumerate(zip(per_text, counts)):
            if len(items) != count:
                raise ValueError(
                    f"text {index} has {count} {self.image_token} placeholders but {len(items)} images were given "
                    "for it"
                )
        return per_text if any(per_text) else None

    def _pixel_values_in_reading_order(
        self, texts, ego_clips, image_lists, num_frames: int, video_image_kwargs: dict, image_kwargs: dict
    ) -> np.ndarray:
        """(V, T, 3, S, S): each text's video and images in the order of their placeholders, text after text. An
        image is its one frame, CLIP-processed once and repeated to the call's `num_frames`."""
        pattern = re.compile(f"{re.escape(self.image_token)}|{re.escape(self.video_token)}")
        videos = []
        for index, sample in enumerate(texts):
            images = enumerate(image_lists[index])
            for match in pattern.finditer(sample):
                if match.group() == self.video_token:
                    videos.append(self._frame_pixels(ego_clips[index].frames, **video_image_kwargs))
                    continue
                number, image = next(images)
                frame = _image_frame(image, f"images[{index}][{number}]")
                videos.append(np.repeat(self._frame_pixels(frame[None], **image_kwargs), num_frames, axis=0))
        return np.stack(videos)

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

"""The OpenAI chat-completions request schema this server accepts, and its conversion to the processor's chat format.

Media content parts (each request holds at most one video; `media()` lists it):

- `{"type": "video_url", "video_url": {"url": ..., "start_sec": 2.0, "end_sec": 6.5}}` as vLLM-style servers take
  them (the window is optional; `video_url` may also be the URL string); `{"type": "input_video", "video_url": ...}`
  the same.
- `{"type": "image_url", "image_url": {"url": ..., "detail": ...}}` as OpenAI clients send images: the image parts of
  one message are the frames of one video, in order (lmms-eval's `openai_compatible` and VLMEvalKit send a video so).
- transformers' chat-template parts: `{"type": "video", "path" | "url" | "video": ..., "start_sec", "end_sec"}` (a
  `video` list of image URLs is a video's frames) and `{"type": "image", "image" | "url" | "path" | "base64": ...}`.

`num_frames` is an extension field (`extra_body={"num_frames": 8}` in the `openai` client), also read from vLLM's
`media_io_kwargs: {"video": {"num_frames": N}}` and `mm_processor_kwargs: {"num_frames": N}`. Fields that ask for
what this server cannot give (`logprobs: true`, `top_logprobs`, a `response_format` other than text, `n` > 1) are
refused; other OpenAI fields are ignored, as listed in `exo2ego/serve/README.md` (clients send several this server
has no use for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .media import is_url

# Deepest nesting of JSON objects and arrays a request body may have (a chat request needs about 6 levels).
MAX_JSON_DEPTH = 64
# Content part types, as the messages name them.
PART_TYPES = ("text", "image_url", "video_url", "input_video", "video", "image")
ACCEPTED_PARTS = ", ".join(repr(name) for name in PART_TYPES[:-1]) + f" and {PART_TYPES[-1]!r}"


class RequestError(ValueError):
    """A request that passed the schema but asks for something this server refuses; `param` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _url_object(value):
    """`"url"` as clients also send it, for `{"url": "url"}`."""
    return {"url": value} if isinstance(value, str) else value


class _Window(BaseModel):
    start_sec: float | None = Field(None, ge=0)
    end_sec: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _window_is_ordered(self):
        if self.start_sec is not None and self.end_sec is not None and not self.end_sec > self.start_sec:
            raise ValueError(f"end_sec {self.end_sec} must be after start_sec {self.start_sec}")
        return self


class VideoURL(_Window):
    model_config = ConfigDict(extra="forbid")

    url: str


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    detail: str | None = None  # OpenAI's image resolution hint; frames are resized to the model's size anyway


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class VideoURLPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["video_url"]
    video_url: Annotated[VideoURL, BeforeValidator(_url_object)]


class InputVideoPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["input_video"]
    video_url: Annotated[VideoURL, BeforeValidator(_url_object)]

    @model_validator(mode="before")
    @classmethod
    def _no_file_ids(cls, value):
        if isinstance(value, dict) and "file_id" in value:
            raise ValueError(
                "file_id is not accepted: this server stores no uploaded files; send the video as video_url (a "
                "file://, data: or, with --allow-remote-media, http(s):// URL)"
            )
        return value


class ImageURLPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: Annotated[ImageURL, BeforeValidator(_url_object)]


class VideoPart(_Window):
    """transformers' chat-template video: the file as "path", "url" or "video" (a list there: its frames)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["video"]
    path: str | None = None
    url: str | None = None
    video: str | list[str] | None = None

    @model_validator(mode="after")
    def _one_source(self):
        given = [name for name in ("path", "url", "video") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a 'video' part needs exactly one of 'path', 'url' or 'video', got {given or 'none'}")
        if isinstance(self.video, list):
            if not self.video:
                raise ValueError("a 'video' part's list of frames is empty")
            if self.start_sec is not None or self.end_sec is not None:
                raise ValueError("start_sec and end_sec window a video file, not a 'video' list of frames")
        return self


class ImagePart(BaseModel):
    """transformers' chat-template image: "image", "url" or "path", or its bytes as "base64"."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["image"]
    image: str | None = None
    url: str | None = None
    path: str | None = None
    base64: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        given = [name for name in ("image", "url", "path", "base64") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                f"an 'image' part needs exactly one of 'image', 'url', 'path' or 'base64', got {given or 'none'}"
            )
        return self


def _known_part_type(value):
    """A content part of an unknown type is refused naming its type and listing the accepted ones."""
    if isinstance(value, dict) and value.get("type") not in PART_TYPES:
        kind = value.get("type")
        shown = f"type {kind[:40]!r}" if isinstance(kind, str) else "without a 'type'"
        raise PydanticCustomError(
            "content_part_type", f"a content part {shown} is not accepted; this server takes {ACCEPTED_PARTS} parts"
        )
    return value


ContentPart = Annotated[
    Annotated[
        TextPart | VideoURLPart | InputVideoPart | ImageURLPart | VideoPart | ImagePart, Field(discriminator="type")
    ],
    BeforeValidator(_known_part_type),
]
MediaPartTypes = (VideoURLPart, InputVideoPart, ImageURLPart, VideoPart, ImagePart)


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


@dataclass
class MediaRef:
    """One media item of a request: a `url` (file://, http(s)://, data:) or a plain `path`, and a video's window.

    `location` is the part's place (`messages.0.content.1`; a frame of a `video` list: `messages.0.content.1.video.3`),
    `part_type` its type; `where` names both for error messages."""

    location: str
    part_type: str
    kind: Literal["video", "image"]
    url: str | None = None
    path: str | None = None
    start_sec: float | None = None
    end_sec: float | None = None

    @property
    def where(self) -> str:
        return f"{self.location} ({self.part_type})"


@dataclass
class MediaSource:
    """The one video a request may hold: a video file (`video`) or the frames of one message's images (`frames`)."""

    video: MediaRef | None = None
    frames: list[MediaRef] = field(default_factory=list)

    @property
    def where(self) -> str:
        if self.video is not None:
            return self.video.where
        if len(self.frames) == 1:
            return self.frames[0].where
        first, last = self.frames[0], self.frames[-1]
        return f"{first.location}..{last.location.rsplit('.', 1)[-1]} ({len(self.frames)} {first.part_type} frames)"


def _reference(location: str, part_type: str, kind: str, value: str, **window) -> MediaRef:
    """A media value: a URL when it names a scheme, otherwise a file path."""
    if is_url(value):
        return MediaRef(location, part_type, kind, url=value, **window)
    return MediaRef(location, part_type, kind, path=value, **window)


def _media_of(part, location: str) -> MediaRef | list[MediaRef]:
    """The media a content part names: one `MediaRef`, or the frames of a `video` part's list."""
    if isinstance(part, (VideoURLPart, InputVideoPart)):
        video = part.video_url
        return MediaRef(location, part.type, "video", url=video.url, start_sec=video.start_sec, end_sec=video.end_sec)
    if isinstance(part, ImageURLPart):
        return MediaRef(location, part.type, "image", url=part.image_url.url)
    if isinstance(part, VideoPart):
        if isinstance(part.video, list):
            return [
                _reference(f"{location}.video.{index}", "video", "image", url) for index, url in enumerate(part.video)
            ]
        window = {"start_sec": part.start_sec, "end_sec": part.end_sec}
        source = next(value for value in (part.path, part.url, part.video) if value is not None)
        return _reference(location, part.type, "video", source, **window)
    if part.base64 is not None:
        return MediaRef(location, part.type, "image", url=f"data:image/*;base64,{part.base64}")
    return _reference(
        location, part.type, "image", next(v for v in (part.image, part.url, part.path) if v is not None)
    )


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(f"this server answers in plain text only; {value!r} is not supported (send 'text')")
        return value


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    num_frames: int | None = Field(None, ge=1)
    media_io_kwargs: dict[str, dict[str, Any]] | None = None  # vLLM's: {"video": {"num_frames": N}}
    mm_processor_kwargs: dict[str, Any] | None = None  # vLLM's: {"num_frames": N}
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: ResponseFormat | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("this server returns no log-probabilities; send false or leave it out")
        return value

    @field_validator("top_logprobs")
    @classmethod
    def _no_top_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("this server returns no log-probabilities; send 0 or leave it out")
        return value

    @model_validator(mode="after")
    def _ends_with_user(self):
        if self.messages[-1].role != "user":
            raise ValueError(f"the last message must be the user's, not {self.messages[-1].role!r}")
        return self

    def media(self) -> list[MediaSource]:
        """The videos of the request, in order: each video part, and the image parts of each message as one video
        of their frames (placed where the first of them is)."""
        sources = []
        for index, message in enumerate(self.messages):
            if isinstance(message.content, str):
                continue
            images = None
            for number, part in enumerate(message.content):
                if not isinstance(part, MediaPartTypes):
                    continue
                media = _media_of(part, f"messages.{index}.content.{number}")
                if isinstance(media, list):
                    sources.append(MediaSource(frames=media))
                elif media.kind == "video":
                    sources.append(MediaSource(video=media))
                elif images is None:
                    images = MediaSource(frames=[media])
                    sources.append(images)
                else:
                    images.frames.append(media)
        return sources

    def requested_num_frames(self) -> int | None:
        """The frame count the request asks for, from `num_frames`, `media_io_kwargs.video.num_frames` or
        `mm_processor_kwargs.num_frames` (None: the processor's). Raises `RequestError` when they disagree or
        name options this server does not have."""
        given = [("num_frames", self.num_frames)] if self.num_frames is not None else []
        for modality, options in (self.media_io_kwargs or {}).items():
            if modality != "video":
                raise RequestError(
                    f"media_io_kwargs: {modality[:40]!r} options are not supported; this server takes only "
                    "media_io_kwargs.video.num_frames",
                    "media_io_kwargs",
                )
            given += _frame_options(options, "media_io_kwargs.video")
        given += _frame_options(self.mm_processor_kwargs or {}, "mm_processor_kwargs")
        if len({value for _, value in given}) > 1:
            counts = " and ".join(f"{name} {value}" for name, value in given)
            raise RequestError(f"{counts} disagree; send one frame count", given[-1][0])
        return given[0][1] if given else None


def _frame_options(options: dict, name: str) -> list[tuple[str, int]]:
    """[(field, num_frames)] of vLLM's media options `options` (named `name`), which may hold only num_frames."""
    for key in options:
        if key != "num_frames":
            raise RequestError(
                f"{name}: {key[:40]!r} is not supported; this server takes only num_frames (Exo2Ego samples "
                "num_frames frames at the midpoints of equal segments of the video)",
                name,
            )
    if "num_frames" not in options:
        return []
    value = options["num_frames"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{name}.num_frames must be a positive integer, got {str(value)[:20]}", name)
    return [(f"{name}.num_frames", value)]


def nesting_depth(value) -> int:
    """How deeply JSON objects and arrays nest in a parsed JSON value (0 for a scalar), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming the field path (`messages.0.content.1.video_url.url: Field required`)."""
    problems = error.errors(include_url=False)
    # A content list's errors make the plain-string alternative's "Input should be a valid string" noise.
    if len(problems) > 1:
        problems = [problem for problem in problems if "str" not in problem["loc"]] or problems
    lines = []
    for problem in problems:
        # Drop the union-branch names pydantic puts in locations ("list[tagged-union[TextPart,VideoURLPart]]") and
        # the part type it puts after a content part's index.
        location = [part for part in problem["loc"] if "[" not in str(part)]
        location = [
            part
            for index, part in enumerate(location)
            if not (part in PART_TYPES and index >= 2 and location[index - 2] == "content")
        ]
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{'.'.join(str(part) for part in location) or 'body'}: {message}")
    return "; ".join(lines)


def to_conversation(request: ChatCompletionRequest) -> list[dict]:
    """The processor's chat format, to render the prompt: a video part, or the first image part of a message,
    becomes `{"type": "video"}` (the `<video>` placeholder; the processor gets the frames apart), further image
    parts of that message are left out (their frames are that video's)."""
    conversation = []
    for message in request.messages:
        if isinstance(message.content, str):
            content = [{"type": "text", "text": message.content}]
        else:
            content, images = [], False
            for part in message.content:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                elif isinstance(part, (ImageURLPart, ImagePart)):
                    if not images:
                        content.append({"type": "video"})
                    images = True
                else:
                    content.append({"type": "video"})
        conversation.append({"role": message.role, "content": content})
    return conversation

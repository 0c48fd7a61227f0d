"""The OpenAI chat-completions request schema this server accepts, and its conversion to the processor's chat format.

A video is a content part `{"type": "video_url", "video_url": {"url": "file:///...", "start_sec": 2.0,
"end_sec": 6.5}}` (the window is optional, as vLLM-style servers take video URLs); `num_frames` is an extension
field (`extra_body={"num_frames": 8}` in the `openai` client). Fields that ask for what this server cannot give
(`logprobs: true`, `top_logprobs`, a `response_format` other than text, `n` > 1) are refused; other OpenAI fields
are ignored, as listed in `exo2ego/serve/README.md` (clients send several this server has no use for).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Deepest nesting of JSON objects and arrays a request body may have (a chat request needs about 6 levels).
MAX_JSON_DEPTH = 64


class VideoURL(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    start_sec: float | None = Field(None, ge=0)
    end_sec: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _window_is_ordered(self):
        if self.start_sec is not None and self.end_sec is not None and not self.end_sec > self.start_sec:
            raise ValueError(f"end_sec {self.end_sec} must be after start_sec {self.start_sec}")
        return self


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class VideoPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["video_url"]
    video_url: VideoURL


ContentPart = Annotated[TextPart | VideoPart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


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

    def videos(self) -> list[VideoURL]:
        return [
            part.video_url
            for message in self.messages
            if not isinstance(message.content, str)
            for part in message.content
            if isinstance(part, VideoPart)
        ]


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
        # Drop the union-branch names pydantic puts in locations ("list[tagged-union[TextPart,VideoPart]]").
        location = ".".join(str(part) for part in problem["loc"] if "[" not in str(part)) or "body"
        lines.append(f"{location}: {problem['msg']}")
    return "; ".join(lines)


def to_conversation(request: ChatCompletionRequest, video_paths: list[str]) -> list[dict]:
    """The processor's chat format: video parts become `{"type": "video", "path", "start_sec", "end_sec"}` with the
    local paths `video_paths` (in the order of `request.videos()`)."""
    paths = iter(video_paths)
    conversation = []
    for message in request.messages:
        if isinstance(message.content, str):
            content = [{"type": "text", "text": message.content}]
        else:
            content = []
            for part in message.content:
                if isinstance(part, TextPart):
                    content.append({"type": "text", "text": part.text})
                else:
                    video = {"type": "video", "path": next(paths)}
                    window = part.video_url
                    if window.start_sec is not None:
                        video["start_sec"] = window.start_sec
                    if window.end_sec is not None:
                        video["end_sec"] = window.end_sec
                    content.append(video)
        conversation.append({"role": message.role, "content": content})
    return conversation

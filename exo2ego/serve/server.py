"""The FastAPI app: OpenAI-compatible `/v1/chat/completions` (plain and streamed) and `/v1/models`.

Errors answer in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx status for every
request the client got wrong, so the `openai` client raises `BadRequestError` (400), `PermissionDeniedError` (403),
`NotFoundError` (404) and so on with the message, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from .engine import GenerationEngine, GenerationJob, QueueFullError, SamplingParams
from .media import MediaError, MediaPolicy
from .protocol import ChatCompletionRequest, describe_validation_error, to_conversation

logger = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, message: str, status_code: int = 400, param: str | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.param = param


@dataclass
class ServerSettings:
    """What the server allows. `max_frames` caps a request's `num_frames`; `default_max_tokens` is used when a
    request sets no `max_tokens`; `max_tokens_limit` caps it."""

    served_model_name: str
    max_frames: int
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048


def _error_body(message: str, status_code: int, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status_code}}


def create_app(engine: GenerationEngine, processor, policy: MediaPolicy, settings: ServerSettings) -> FastAPI:
    """The app around a not yet started `engine`; the app's lifespan starts and closes it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.close)

    app = FastAPI(title="Exo2Ego OpenAI-compatible server", lifespan=lifespan)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return JSONResponse(_error_body(str(error), error.status_code, error.param), status_code=error.status_code)

    @app.get("/health")
    async def health():
        sizes = engine.batch_sizes
        return {
            "status": "ok",
            "queue_depth": engine.queue_depth,
            "batches": len(sizes),
            "requests_generated": sum(sizes),
            "largest_batch": max(sizes, default=0),
        }

    @app.get("/v1/models")
    async def models():
        card = {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "exo2ego"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        chat = _parse(await request.body())
        if chat.model is not None and chat.model != settings.served_model_name:
            raise ApiError(
                f"model {chat.model!r} is not served here; this server serves "
                f"{settings.served_model_name!r} (see /v1/models)",
                404,
                "model",
            )
        params = _sampling_params(chat, engine.model.generation_config, settings)
        inputs = await run_in_threadpool(_prepare_inputs, chat, processor, policy, settings)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = GenerationJob(inputs, params, lambda *event: loop.call_soon_threadsafe(events.put_nowait, event))
        try:
            engine.submit(job)
        except QueueFullError as error:
            raise ApiError(str(error), 503) from error
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if chat.stream:
            include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
            return StreamingResponse(
                _stream(job, events, completion_id, created, settings.served_model_name, include_usage),
                media_type="text/event-stream",
            )
        try:
            while True:
                event = await events.get()
                if event[0] == "finish":
                    _, reason, text, completion_tokens = event
                    break
                if event[0] == "error":
                    raise ApiError(f"generation failed: {event[1]}", 500)
        finally:
            job.cancel()  # no-op after "finish"; stops the row if this handler was cancelled
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": settings.served_model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": _usage(job, completion_tokens),
        }

    return app


def _parse(body: bytes) -> ChatCompletionRequest:
    if not body.strip():
        raise ApiError("empty request body: send a JSON chat completion request with 'model' and 'messages'")
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(f"request body is not JSON: {error}") from error
    if not isinstance(payload, dict):
        raise ApiError(f"request body must be a JSON object, got {type(payload).__name__}")
    try:
        return ChatCompletionRequest.model_validate(payload)
    except ValidationError as error:
        raise ApiError(f"invalid chat completion request: {describe_validation_error(error)}") from error


def _sampling_params(chat: ChatCompletionRequest, generation_config, settings: ServerSettings) -> SamplingParams:
    max_tokens = (
        chat.max_completion_tokens or chat.max_tokens or min(settings.default_max_tokens, settings.max_tokens_limit)
    )
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            f"max_tokens {max_tokens} exceeds this server's limit of {settings.max_tokens_limit}", param="max_tokens"
        )
    temperature = chat.temperature
    if temperature is None:  # the model's own default, as its generation_config says
        temperature = (generation_config.temperature or 1.0) if generation_config.do_sample else 0.0
    return SamplingParams(max_tokens, temperature, 1.0 if chat.top_p is None else chat.top_p)


def _prepare_inputs(chat: ChatCompletionRequest, processor, policy: MediaPolicy, settings: ServerSettings):
    """Resolve the video URL, decode its frames and tokenize the prompt (runs in a worker thread)."""
    videos = chat.videos()
    if len(videos) > 1:
        raise ApiError(
            f"{len(videos)} videos in one request; Exo2Ego answers about one video per conversation", param="messages"
        )
    num_frames = chat.num_frames or processor.num_frames
    if num_frames > settings.max_frames:
        raise ApiError(
            f"num_frames {num_frames} is more than this server allows (--max-frames {settings.max_frames})",
            param="num_frames",
        )
    paths, temporary = [], []
    try:
        for video in videos:
            try:
                path, is_temporary = policy.local_path(video.url)
            except MediaError as error:
                raise ApiError(str(error), error.status_code, "messages") from error
            paths.append(path)
            if is_temporary:
                temporary.append(path)
        conversation = to_conversation(chat, paths)
        text = processor.apply_chat_template(conversation, add_generation_prompt=True)
        video_inputs = [item for message in conversation for item in message["content"] if item["type"] == "video"]
        try:
            # The template already wrote the BOS token, as apply_chat_template(tokenize=True) does.
            return processor(
                text=[text],
                videos=video_inputs or None,
                num_frames=num_frames,
                add_special_tokens=False,
                return_tensors="pt",
            )
        except (ValueError, OSError) as error:
            raise ApiError(f"cannot read the video: {error}", param="messages") from error
    finally:
        for path in temporary:
            os.unlink(path)


def _usage(job: GenerationJob, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": job.prompt_tokens + completion_tokens,
    }


async def _stream(
    job: GenerationJob, events: asyncio.Queue, completion_id: str, created: int, model: str, include_usage: bool
):
    """Server-sent events in OpenAI's `chat.completion.chunk` format, ending with `data: [DONE]`."""

    def chunk(delta: dict, finish_reason: str | None = None, usage: dict | None = None) -> str:
        payload = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage:
            payload["usage"] = usage
        return f"data: {json.dumps(payload)}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        while True:
            event = await events.get()
            if event[0] == "delta":
                yield chunk({"content": event[1]})
            elif event[0] == "finish":
                yield chunk({}, event[1])
                if include_usage:
                    yield chunk({}, usage=_usage(job, event[3]))
                break
            else:
                yield f"data: {json.dumps(_error_body(f'generation failed: {event[1]}', 500))}\n\n"
                break
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()

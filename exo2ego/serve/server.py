"""The FastAPI app: OpenAI-compatible `/v1/chat/completions` (plain and streamed) and `/v1/models`.

Errors answer in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with a 4xx status for every
request the client got wrong, so the `openai` client raises `BadRequestError` (400), `AuthenticationError` (401),
`PermissionDeniedError` (403), `NotFoundError` (404) and so on with the message, and the server goes on serving.
Every other failure, unknown paths and methods included, answers in the same shape.

A request is checked before any work: the API key (when set), `Content-Type: application/json` (415 otherwise: a
web page cannot post a JSON body cross-site without a CORS preflight), the body size (413, read no further than the
limit), the JSON nesting depth, the fields, and then, before the video is read or any tensor is made, that the
tokenized prompt plus `max_tokens` fits the model's context.

Every refused request (4xx) and failed one (5xx) is logged as one line (status, method, path, reason; a URL in the
reason is cut to 80 characters, a `data:` URL to its header) and every answer is counted by path and status code:
`GET /metrics` shows the counts in Prometheus' text format, with the queue depth and batch counts.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from .engine import GenerationEngine, GenerationJob, QueueFullError, SamplingParams
from .media import MediaError, MediaPolicy
from .protocol import (
    MAX_JSON_DEPTH,
    ChatCompletionRequest,
    RequestError,
    describe_validation_error,
    nesting_depth,
    to_conversation,
)
from .request_media import read_media

logger = logging.getLogger(__name__)

# Paths /metrics counts by name; any other path is counted as "other".
COUNTED_PATHS = ("/v1/chat/completions", "/v1/models", "/health", "/metrics")


class ApiError(Exception):
    def __init__(self, message: str, status_code: int = 400, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.param = param
        self.headers = headers


@dataclass
class ServerSettings:
    """What the server allows. `max_frames` caps a request's `num_frames`; `default_max_tokens` is used when a
    request sets no `max_tokens`; `max_tokens_limit` caps it; `context_length` (the model's
    `max_position_embeddings`) caps prompt tokens plus `max_tokens`; `max_body_bytes` caps the request body;
    `api_key`, when set, must come as `Authorization: Bearer <key>` on every `/v1` request."""

    served_model_name: str
    max_frames: int
    context_length: int
    default_max_tokens: int = 256
    max_tokens_limit: int = 2048
    max_body_bytes: int = 16 * 2**20
    api_key: str | None = None


def _error_body(message: str, status_code: int, param: str | None = None) -> dict:
    kind = "invalid_request_error" if status_code < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status_code}}


class RequestCounts:
    """Answers by (path, status code), counted by `CountRequests` as their status line goes out."""

    def __init__(self):
        self.counts: dict[tuple[str, int], int] = {}

    def add(self, path: str, status: int) -> None:
        key = (path if path in COUNTED_PATHS else "other", status)
        self.counts[key] = self.counts.get(key, 0) + 1

    def prometheus(self, engine: GenerationEngine) -> str:
        """The counts, queue depth and batch counts in Prometheus' text exposition format."""
        lines = [
            "# HELP exo2ego_requests_total HTTP requests answered, by path, status code and outcome "
            "(accepted: 1xx-3xx, refused: 4xx, failed: 5xx).",
            "# TYPE exo2ego_requests_total counter",
        ]
        for (path, status), count in sorted(self.counts.items()):
            outcome = "accepted" if status < 400 else "refused" if status < 500 else "failed"
            lines.append(f'exo2ego_requests_total{{path="{path}",code="{status}",outcome="{outcome}"}} {count}')
        sizes = list(engine.batch_sizes)
        for name, kind, text, value in (
            ("exo2ego_queue_depth", "gauge", "Requests waiting for the generation worker.", engine.queue_depth),
            ("exo2ego_batches_total", "counter", "generate calls run.", len(sizes)),
            ("exo2ego_generated_requests_total", "counter", "Requests answered by generate.", sum(sizes)),
            ("exo2ego_largest_batch", "gauge", "Most requests one generate call has run.", max(sizes, default=0)),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return "\n".join(lines) + "\n"


class CountRequests:
    """ASGI middleware: counts each HTTP answer's status in `counts` (a failure that escapes the app as a 500)."""

    def __init__(self, app, counts: RequestCounts):
        self.app = app
        self.counts = counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def counting_send(message):
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self.counts.add(scope["path"], message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:
                self.counts.add(scope["path"], 500)
            raise


def _log_refusal(request: Request, status_code: int, reason: str) -> None:
    """One log line for a refused (4xx) or failed (5xx) request: status, method, path and reason."""
    reason = " ".join(reason.split())
    if len(reason) > 500:
        reason = reason[:497] + "..."
    verdict = "refused" if status_code < 500 else "failed"
    logger.warning("%s %d %s %s: %s", verdict, status_code, request.method, request.url.path, reason)


def create_app(engine: GenerationEngine, processor, policy: MediaPolicy, settings: ServerSettings) -> FastAPI:
    """The app around a not yet started `engine`; the app's lifespan starts and closes it. `app.state` holds the
    engine and the processor (tests watch what the engine receives)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        try:
            yield
        finally:
            await run_in_threadpool(engine.close)

    app = FastAPI(title="Exo2Ego OpenAI-compatible server", lifespan=lifespan)
    app.state.engine, app.state.processor = engine, processor
    counts = RequestCounts()
    app.add_middleware(CountRequests, counts=counts)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        _log_refusal(request, error.status_code, str(error))
        return JSONResponse(
            _error_body(str(error), error.status_code, error.param),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):  # unknown path, wrong method
        _log_refusal(request, error.status_code, str(error.detail))
        return JSONResponse(
            _error_body(str(error.detail), error.status_code), status_code=error.status_code, headers=error.headers
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception):
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        message = f"internal server error ({type(error).__name__}); the server log has the details"
        return JSONResponse(_error_body(message, 500), status_code=500)

    def authorized(request: Request) -> None:
        _check_api_key(request, settings.api_key)

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

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(counts.prometheus(engine), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models():
        card = {"id": settings.served_model_name, "object": "model", "created": 0, "owned_by": "exo2ego"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", dependencies=[Depends(authorized)])
    async def chat_completions(request: Request):
        _check_content_type(request.headers.get("content-type"))
        chat = _parse(await _read_body(request, settings.max_body_bytes))
        if chat.model is not None and chat.model != settings.served_model_name:
            raise ApiError(
                f"model {chat.model[:80]!r} is not served here; this server serves "
                f"{settings.served_model_name!r} (see /v1/models)",
                404,
                "model",
            )
        params = _sampling_params(chat, engine.model.generation_config, settings)
        inputs = await run_in_threadpool(_prepare_inputs, chat, processor, policy, settings, params.max_new_tokens)
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


def _check_api_key(request: Request, api_key: str | None) -> None:
    """401 unless the server has no key or the request carries `Authorization: Bearer <api_key>`."""
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(
            "missing or wrong API key: send the server's --api-key as 'Authorization: Bearer <key>'",
            401,
            headers={"WWW-Authenticate": "Bearer"},
        )


def _check_content_type(content_type: str | None) -> None:
    """415 for a body that is not declared `application/json` (parameters such as charset are fine)."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(f"Content-Type must be application/json, got {content_type!r}", 415)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as its declared length or the bytes read so far pass `limit`,
    so an oversized body is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_too_large(f"{declared} bytes", limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _body_too_large(f"more than {limit} bytes", limit)
    return bytes(body)


def _body_too_large(size: str, limit: int) -> ApiError:
    return ApiError(f"request body of {size} is larger than this server's limit of {limit} bytes (--max-body-mb)", 413)


def _parse(body: bytes) -> ChatCompletionRequest:
    if not body.strip():
        raise ApiError("empty request body: send a JSON chat completion request with 'model' and 'messages'")
    too_deep = f"request body nests JSON objects and arrays more than {MAX_JSON_DEPTH} levels deep"
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ApiError(f"request body is not JSON: {error}") from error
    except RecursionError:
        raise ApiError(too_deep) from None
    if nesting_depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(too_deep)
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


def _prepare_inputs(
    chat: ChatCompletionRequest, processor, policy: MediaPolicy, settings: ServerSettings, max_tokens: int
):
    """Check the frame count and the prompt's length, then read the video (a file, or the frames of image parts)
    and tokenize the prompt (runs in a worker thread)."""
    sources = chat.media()
    if len(sources) > 1:
        raise ApiError(
            f"{len(sources)} videos in one request ({', '.join(source.where for source in sources)}); Exo2Ego answers "
            "about one video per conversation (the image parts of one message are the frames of one video)",
            param="messages",
        )
    try:
        num_frames = chat.requested_num_frames() or processor.num_frames
    except RequestError as error:
        raise ApiError(str(error), param=error.param) from error
    if num_frames > settings.max_frames:
        raise ApiError(
            f"num_frames {num_frames} is more than this server allows (--max-frames {settings.max_frames})",
            param="num_frames",
        )
    # The template writes the same text whatever the video: render it to check its length before anything is
    # fetched or decoded.
    text = processor.apply_chat_template(to_conversation(chat), add_generation_prompt=True)
    _check_context(processor, text, num_frames, max_tokens, settings.context_length)
    temporary: list[str] = []
    try:
        videos = [read_media(source, processor, policy, num_frames, temporary) for source in sources]
        try:
            # The template already wrote the BOS token, as apply_chat_template(tokenize=True) does.
            return processor(
                text=[text],
                videos=videos or None,
                num_frames=num_frames,
                add_special_tokens=False,
                return_tensors="pt",
            )
        except (ValueError, OSError) as error:
            where = f"{sources[0].where}: " if sources else ""
            raise ApiError(f"{where}cannot read the video: {error}", param="messages") from error
    except MediaError as error:  # a part that cannot be read names itself: refused as the request's `messages`
        raise ApiError(str(error), error.status_code, "messages") from error
    finally:
        for path in temporary:
            os.unlink(path)


def _check_context(processor, text: str, num_frames: int, max_tokens: int, context_length: int) -> None:
    """400 when the prompt's tokens (each `<video>` counted as the visual tokens it becomes) plus `max_tokens` pass
    the model's context; only token ids are computed, no tensor."""
    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    placeholders = ids.count(processor.video_token_id)
    prompt_tokens = len(ids) + placeholders * (processor.num_video_tokens(num_frames) - 1)
    if prompt_tokens + max_tokens > context_length:
        raise ApiError(
            f"the prompt is {prompt_tokens} tokens and max_tokens is {max_tokens}: {prompt_tokens + max_tokens} "
            f"tokens do not fit the model's context of {context_length} (max_position_embeddings); shorten the "
            "conversation or lower max_tokens",
            param="messages",
        )


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

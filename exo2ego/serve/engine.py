"""A worker thread that batches concurrent chat requests into `model.generate` calls.

Requests are prepared (video decoded, prompt tokenized) by the caller, then wait in a bounded queue. The worker
takes the oldest request and every waiting request that can share its `generate` call (same frame count and
sampling settings), up to `max_batch_size`, left-pads their prompts and generates them together. A streamer hands
each row's tokens to its request as they come; a stopping criterion ends each row at its own `max_tokens`, so a
greedy request gets the same tokens batched as alone (left padding is masked out).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

logger = logging.getLogger(__name__)

TEXT_KEYS = ("input_ids", "attention_mask")


class QueueFullError(RuntimeError):
    """The engine already holds `max_queue` waiting requests."""


@dataclass(frozen=True)
class SamplingParams:
    """`temperature` 0 means greedy decoding; `top_p` applies only when sampling."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0

    def batch_key(self) -> tuple:
        # max_new_tokens is per row (see _RowLimits), so it does not split batches.
        return ("greedy",) if self.temperature == 0 else ("sample", self.temperature, self.top_p)

    def generate_kwargs(self) -> dict:
        if self.temperature == 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


class GenerationJob:
    """One request: its processor outputs (batch of one), sampling settings and a callback for its events.

    `on_event` is called from the worker thread as `on_event("delta", text)` for each new piece of the answer,
    then once `on_event("finish", finish_reason, text, completion_tokens)` with `finish_reason` "stop" (end of
    sequence) or "length" (`max_new_tokens` reached), or `on_event("error", exception)`.
    """

    def __init__(self, inputs, params: SamplingParams, on_event: Callable[..., None]):
        self.inputs = inputs
        self.params = params
        self.on_event = on_event
        self.prompt_tokens = int(inputs["input_ids"].shape[1])
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop generating for this request (its client left); no more events are sent."""
        self.cancelled.set()

    def batch_key(self) -> tuple:
        shapes = tuple((key, tuple(value.shape[1:])) for key, value in self.inputs.items() if key not in TEXT_KEYS)
        return self.params.batch_key() + shapes


class GenerationEngine:
    """Owns the model: one worker thread runs every `generate` call.

    Args:
        model: an Exo2Ego generating model in eval mode.
        processor: its processor (the tokenizer pads batches and decodes answers).
        max_batch_size: most requests in one `generate` call.
        max_queue: most requests waiting for the worker; `submit` raises `QueueFullError` beyond it.
        batch_wait_s: how long the worker waits for more requests to fill a batch once one is waiting.
    """

    def __init__(self, model, processor, max_batch_size: int = 8, max_queue: int = 64, batch_wait_s: float = 0.005):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError(f"max_batch_size ({max_batch_size}) and max_queue ({max_queue}) must be at least 1")
        self.model = model
        self.tokenizer = processor.tokenizer
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        eos = model.generation_config.eos_token_id
        eos = self.tokenizer.eos_token_id if eos is None else eos
        self.eos_token_ids = {eos} if isinstance(eos, int) else set(eos)
        self.pad_token_id = self.tokenizer.pad_token_id
        if self.pad_token_id is None:
            self.pad_token_id = min(self.eos_token_ids)
        self.batch_sizes: list[int] = []  # size of every batch run, for logs and benchmarks
        self._waiting: deque[GenerationJob] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="exo2ego-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Take no more requests, answer those already waiting, then stop the worker."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def submit(self, job: GenerationJob) -> None:
        with self._condition:
            if self._closed:
                raise RuntimeError("the generation engine is closed")
            if len(self._waiting) >= self.max_queue:
                raise QueueFullError(f"the server's queue is full ({self.max_queue} requests waiting); retry later")
            self._waiting.append(job)
            self._condition.notify_all()

    # ----------------------------------------------------------------------------------------- worker thread
    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                self._generate(batch)
            except Exception as error:  # a failed batch fails its requests, not the server
                logger.exception("generate failed for a batch of %d", len(batch))
                for job in batch:
                    job.on_event("error", error)

    def _next_batch(self) -> list[GenerationJob] | None:
        """The oldest waiting request and those that can join it; None once closed and drained; [] if all were
        cancelled."""
        with self._condition:
            while not self._waiting and not self._closed:
                self._condition.wait()
            if not self._waiting:
                return None
            key = self._waiting[0].batch_key()
            deadline = time.monotonic() + self.batch_wait_s
            while (
                sum(job.batch_key() == key for job in self._waiting) < self.max_batch_size
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._condition.wait(remaining)
            batch = [job for job in self._waiting if job.batch_key() == key][: self.max_batch_size]
            for job in batch:
                self._waiting.remove(job)
        return [job for job in batch if not job.cancelled.is_set()]

    def _generate(self, jobs: list[GenerationJob]) -> None:
        self.batch_sizes.append(len(jobs))
        device, dtype = self.model.device, self.model.dtype
        inputs = dict(
            self.tokenizer.pad(
                {key: [job.inputs[key][0] for job in jobs] for key in TEXT_KEYS},
                padding=True,
                padding_side="left",
                return_tensors="pt",
            )
        )
        for key in jobs[0].inputs:
            if key not in TEXT_KEYS:
                inputs[key] = torch.cat([job.inputs[key] for job in jobs])
        inputs = {
            key: value.to(device, dtype=dtype if value.is_floating_point() else None) for key, value in inputs.items()
        }
        prompt_length = inputs["input_ids"].shape[1]
        streamer = _RowStreamer(jobs, self.tokenizer, self.eos_token_ids)
        limits = _RowLimits(jobs, prompt_length)
        with torch.inference_mode():
            self.model.generate(
                **inputs,
                max_new_tokens=max(job.params.max_new_tokens for job in jobs),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([limits]),
                pad_token_id=self.pad_token_id,
                **jobs[0].params.generate_kwargs(),
            )


class _RowLimits(StoppingCriteria):
    """Ends each row at its own request's `max_new_tokens`, or at once when its request was cancelled."""

    def __init__(self, jobs: list[GenerationJob], prompt_length: int):
        self.jobs = jobs
        self.prompt_length = prompt_length
        self.max_new_tokens = torch.tensor([job.params.max_new_tokens for job in jobs])

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        cancelled = torch.tensor([job.cancelled.is_set() for job in self.jobs])
        done = (input_ids.shape[1] - self.prompt_length >= self.max_new_tokens) | cancelled
        return done.to(input_ids.device)


class _RowStreamer(BaseStreamer):
    """Turns each generation step's tokens (one per row) into text deltas for the row's request.

    Text is decoded from all of a row's tokens so far and only the new suffix is sent; a suffix ending in an
    incomplete UTF-8 character waits for the next token.
    """

    def __init__(self, jobs: list[GenerationJob], tokenizer, eos_token_ids: set[int]):
        self.jobs = jobs
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.done = [False] * len(jobs)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first puts the prompt
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            job = self.jobs[row]
            if self.done[row] or job.cancelled.is_set():
                continue
            if token in self.eos_token_ids:
                self._finish(row, "stop")
                continue
            self.tokens[row].append(token)
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
            if text.startswith(self.sent[row]) and not text.endswith("\ufffd") and len(text) > len(self.sent[row]):
                job.on_event("delta", text[len(self.sent[row]) :])
                self.sent[row] = text
            if len(self.tokens[row]) >= job.params.max_new_tokens:
                self._finish(row, "length")

    def end(self) -> None:
        for row in range(len(self.jobs)):
            if not self.done[row] and not self.jobs[row].cancelled.is_set():
                self._finish(row, "length")

    def _finish(self, row: int, reason: str) -> None:
        self.done[row] = True
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
            self.jobs[row].on_event("delta", text[len(self.sent[row]) :])
        self.jobs[row].on_event("finish", reason, text, len(self.tokens[row]))

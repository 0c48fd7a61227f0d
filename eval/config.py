"""The settings of one evaluation run, :class:`EvalConfig`: what ``exo2ego eval`` takes as flags and ``results.json``
records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from . import scorers
from .prompts import DEFAULT_PROMPT, PROMPTS, get_prompt

# The file an evaluation writes last into its run folder (its marker): results, intervals, versions, config.
RESULTS_NAME = "results.json"


@dataclass
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``results.json``).

    Each field's ``help`` says what it does; ``exo2ego eval`` builds its flags from these fields with
    ``HfArgumentParser`` (the field name as the flag, ``--num-frames`` or ``--num_frames``; the other metadata
    keys, ``choices`` and ``metavar``, go to ``add_argument`` too).
    """

    tasks: str = field(
        default="all", metadata={"help": "'all' (every known task in the folder) or comma-separated task names"}
    )
    scorer: str = field(
        default="letter_logprob",
        metadata={
            "help": "how multiple-choice rows are scored (Charades-Ego class mAP and EK-100 MIR always use option "
            "log-likelihoods; open-ended rows always generate)",
            "choices": scorers.SCORERS,
        },
    )
    prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "system prompt variant", "choices": sorted(PROMPTS)})
    num_frames: int | None = field(default=None, metadata={"help": "frames per video (None: the processor's)"})
    limit: int | None = field(
        default=None, metadata={"help": "score only the first N rows (and N videos of side tables) of each task"}
    )
    split: str | None = field(default=None, metadata={"help": "dataset split (None: the only one, or 'test')"})
    video_roots: list[str] = field(
        default_factory=list,
        metadata={
            "help": "where relative video paths live: DIR (every task) and/or TASK=DIR entries (none: the data "
            "folder)",
            "metavar": "[TASK=]DIR",
        },
    )
    max_new_tokens: int = field(default=16, metadata={"help": "generation budget of the generate_parse scorer"})
    open_max_new_tokens: int = field(default=64, metadata={"help": "generation budget of open-ended answers"})
    option_score: Literal["mean", "sum"] = field(
        default="mean", metadata={"help": "mean or summed token log-prob ranks options, classes and sentences"}
    )
    option_chunk_size: int = field(
        default=64, metadata={"help": "continuations scored per batch from the cached prefixes"}
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "items whose options are scored by log-likelihood (option_loglik questions, class scores, "
            "retrieval) prefilled together; the other scorers take one item at a time"
        },
    )
    decoded_cache_mb: int = field(
        default=256,
        metadata={
            "help": "keep decoded clips in memory up to this many MiB, so that the questions about one clip "
            "(EgoBench asks two or three) decode it once (0 turns the cache off)"
        },
    )
    bootstrap_resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the 95%% intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and of torch"})
    judge_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible chat endpoint on loopback that judges open answers"}
    )
    judge_model: str | None = field(default=None, metadata={"help": "pinned judge model id (required with judge_url)"})
    sentence_encoder: str | None = field(
        default=None, metadata={"help": "sentence-transformers path for SentenceSim (None: offline MiniLM)"}
    )
    check_videos: bool = field(
        default=True,
        metadata={"help": "fail before scoring when a video file is missing (--no-check-videos: skip the check)"},
    )
    compare: str | None = field(
        default=None, metadata={"help": "comparison column of the report: another results.json or 'paper'"}
    )

    def validate(self) -> None:
        """Refuse settings that cannot work before anything is loaded or written (names the CLI flag)."""
        for name, optional in (
            ("num_frames", True),
            ("limit", True),
            ("max_new_tokens", False),
            ("open_max_new_tokens", False),
            ("option_chunk_size", False),
            ("batch_size", False),
            ("bootstrap_resamples", False),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be an integer >= 1, got {value!r}")
        cache_mb = self.decoded_cache_mb
        if isinstance(cache_mb, bool) or not isinstance(cache_mb, int) or cache_mb < 0:
            raise ValueError(
                f"decoded_cache_mb (--decoded-cache-mb) must be an integer >= 0 (0 turns the cache off), "
                f"got {self.decoded_cache_mb!r}"
            )
        if self.scorer not in scorers.SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {scorers.SCORERS}")
        if self.option_score not in ("mean", "sum"):
            raise ValueError(f"option_score must be 'mean' or 'sum', not {self.option_score!r}")
        if (self.judge_url is None) != (self.judge_model is None):
            raise ValueError("a judge needs both judge_url and judge_model (the pinned model id)")
        get_prompt(self.prompt)

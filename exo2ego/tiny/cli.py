"""`exo2ego tiny-model`: the command of :func:`exo2ego.tiny.checkpoint.save_tiny_model`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Literal

from exo2ego.tiny.checkpoint import VISION_REPORT, save_tiny_model
from exo2ego_base.command_line import add_command


@dataclass
class TinyModelArguments:
    """What `exo2ego tiny-model` takes for the checkpoint itself: the folder, the seed and the model's shape."""

    out: str = field(metadata={"help": "output folder (new or empty)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing non-empty --out folder"})
    seed: int = field(default=0, metadata={"help": "seed of the random weights and of the pretraining"})
    frames: int = field(default=4, metadata={"help": "frames per video"})
    connector: Literal["stc", "stc_v35"] = field(
        default="stc",
        metadata={"help": "STC connector variant: its Conv3d downsampler pads by 1 (stc) or 0 (stc_v35)"},
    )
    ego_only: bool = field(default=False, metadata={"help": "inference release without the exo tower and G"})


@dataclass
class TinyLanguageArguments:
    """The text-only pretraining of the tiny LLM (`exo2ego.tiny.language`): its data folders and steps."""

    language_egoit: str | None = field(
        default=None, metadata={"help": "EgoIT folder whose text the LLM is pretrained on (no video)"}
    )
    language_clips: str | None = field(
        default=None, metadata={"help": "Ego-ExoClip folder whose narrations the LLM is pretrained on"}
    )
    language_captions: str | None = field(
        default=None,
        metadata={"help": "caption folder (exo2ego data pretrain output) whose captions the LLM reads too"},
    )
    language_steps: int = field(
        default=0,
        metadata={"help": "steps of text-only LLM pretraining on the folders above (0: the LLM stays random)"},
    )


@dataclass
class TinyVisionArguments:
    """The bag-of-words pretraining of the tiny vision towers (`exo2ego.tiny.vision`): their clips, sizes and the
    optional probe of what the tower reads."""

    vision_clips: str | None = field(
        default=None, metadata={"help": "Ego-ExoClip folder whose clips the vision towers pretrain on"}
    )
    vision_captions: str | None = field(
        default=None,
        metadata={
            "help": "caption folder (exo2ego data pretrain output, e.g. the synthetic web-exo corpus) the towers "
            "pretrain on instead of Ego-ExoClip"
        },
    )
    vision_video_root: str | None = field(
        default=None, metadata={"help": "root the clips' video paths are relative to"}
    )
    vision_probe_world: str | None = field(
        default=None,
        metadata={
            "help": "synthetic world root: after pretraining, measure what the tower reads (pattern, colour, shape) "
            f"on held-out clips and on the world's ego and exo clips, into {VISION_REPORT}"
        },
    )
    vision_samples: int = field(
        default=1024, metadata={"help": "clips to decode (captions rows, or Ego-ExoClip samples)"}
    )
    vision_views: list[str] = field(
        default_factory=lambda: ["exo"],
        metadata={"help": "views whose frames are used", "choices": ["exo", "ego"]},
    )
    vision_learning_rate: float = field(
        default=3e-3, metadata={"help": "peak learning rate of the vision pretraining"}
    )
    vision_steps: int = field(
        default=0,
        metadata={
            "help": "steps of bag-of-words pretraining of the vision towers on those clips (0: they stay random)"
        },
    )


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_command(
        subparsers,
        "tiny-model",
        (TinyModelArguments, TinyLanguageArguments, TinyVisionArguments),
        _run,
        help="write a tiny random-weight Exo2Ego checkpoint with its processor",
    )


def _run(model: TinyModelArguments, language: TinyLanguageArguments, vision: TinyVisionArguments) -> int:
    try:
        save_tiny_model(
            model.out,
            seed=model.seed,
            overwrite=model.overwrite,
            num_frames=model.frames,
            connector_type=model.connector,
            include_exo_branch=not model.ego_only,
            language_data={
                "egoit": language.language_egoit,
                "clips": language.language_clips,
                "captions": language.language_captions,
                "steps": language.language_steps,
            },
            vision_data={
                "clips": vision.vision_clips,
                "captions": vision.vision_captions,
                "probe_world": vision.vision_probe_world,
                "video_root": vision.vision_video_root,
                "samples": vision.vision_samples,
                "views": vision.vision_views,
                "steps": vision.vision_steps,
                "learning_rate": vision.vision_learning_rate,
            },
        )
    except ValueError as error:
        print(f"exo2ego tiny-model: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote a tiny Exo2Ego checkpoint to {model.out}")
    return 0

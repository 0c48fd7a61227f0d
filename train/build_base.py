"""Build an Exo2Ego starting checkpoint from a CLIP checkpoint and a causal-LM checkpoint (the init stage's input).

    python -m train.build_base --vision openai/clip-vit-large-patch14-336 \
        --text mistralai/Mistral-7B-Instruct-v0.2 --out checkpoints/exo2ego-base [--num-frames 16] [--connector stc]

Both towers start from the CLIP vision weights, the LLM from the causal LM (with a `<video>` token added to its
tokenizer and embeddings); the connector, F and G are new
(`Exo2EgoForConditionalGeneration.from_vision_text_pretrained`).
The folder gets `exo2ego_stage.json` with stage "base"; nothing appears at `--out` until it is complete. Local
folders work offline; Hub ids need the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import AutoTokenizer

from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.tiny import build_processor
from modeling_exo2ego import Exo2EgoForConditionalGeneration
from train.saving import environment_versions
from train.stage_folder import stage_run_folder

VIDEO_TOKEN = "<video>"


def add_video_token(tokenizer) -> int:
    """Add `<video>` as a special token (and a pad token if missing); returns its id."""
    if tokenizer.convert_tokens_to_ids(VIDEO_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_tokens([VIDEO_TOKEN], special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)


def check_new_output_folder(out: str) -> None:
    """Refuse an `out` that exists (a folder or a file) before anything large is loaded: a base checkpoint is
    written into a new folder only."""
    if os.path.exists(out):
        kind = "folder" if os.path.isdir(out) else "file, not a folder"
        raise ValueError(f"--out {out!r} already exists (a {kind}); choose a new output folder")


def save_base_checkpoint(model, processor, out: str, metadata: dict) -> None:
    """Write model, processor and `exo2ego_stage.json` (stage "base", written last) into a staging folder that
    becomes `out` once complete (`RunFolder.staged` of the stage folder); an existing non-empty `out` is refused."""
    with stage_run_folder(out, error=FileExistsError).staged() as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        stage_metadata = {"stage": "base", **metadata, "versions": environment_versions()}
        stage_run_folder(staging).finish(stage_metadata, default=str)


def build_base(vision: str, text: str, out: str, dtype: str = "bfloat16", **config_kwargs) -> None:
    """Assemble and save the base checkpoint; `config_kwargs` set `Exo2EgoConfig` fields (num_frames, ...)."""
    tokenizer = AutoTokenizer.from_pretrained(text)
    video_token_id = add_video_token(tokenizer)
    model = Exo2EgoForConditionalGeneration.from_vision_text_pretrained(
        vision, text, video_token_id, torch_dtype=getattr(torch, dtype), **config_kwargs
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    save_base_checkpoint(
        model,
        build_processor(model.config, tokenizer),
        out,
        {"description": "built from a CLIP and a causal LM (connector, F and G new)", "vision": vision, "text": text},
    )


@dataclass
class BuildBaseArguments:
    """What `train/build_base.py` takes: the CLIP and causal-LM checkpoints, the output folder, and the model's
    frame count, connector and dtype."""

    vision: str = field(metadata={"help": "CLIP checkpoint (folder or Hub id)"})
    text: str = field(metadata={"help": "causal LM checkpoint with its tokenizer (folder or Hub id)"})
    out: str = field(metadata={"help": "output folder (must not exist)"})
    num_frames: int = field(default=16, metadata={"help": "frames per video the model takes"})
    connector: Literal["stc", "stc_v35"] = field(
        default="stc", metadata={"help": "VideoLLaMA2's STC connector with Conv3d padding 1 (stc) or 0 (stc_v35)"}
    )
    dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "dtype the weights are loaded and saved in"}
    )

    def __post_init__(self):
        check_new_output_folder(self.out)


def main(argv=None) -> int:
    args = parse_script_arguments(BuildBaseArguments, argv, __doc__.splitlines()[0])
    build_base(args.vision, args.text, args.out, args.dtype, num_frames=args.num_frames, connector_type=args.connector)
    print(f"wrote an Exo2Ego base checkpoint to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

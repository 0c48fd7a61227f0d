"""`exo2ego tiny-model`: save a tiny random-weight Exo2Ego checkpoint (`exo2ego_base.tiny`) with its processor,
optionally after the pretraining the paper's base models come with: its LLM on the synthetic world's text
(`exo2ego.tiny_language`, Mistral's premise) and its vision towers on Ego-ExoClip frames and their narrations
(`exo2ego.tiny_vision`, CLIP's premise)."""

from __future__ import annotations

import argparse
import os
import sys

from exo2ego_base.provenance import check_output_apart, staged_folder, write_json_atomic
from exo2ego_base.tiny import build_tiny_model
from train.stage_folder import read_stage_metadata

VISION_REPORT = "vision_pretraining.json"  # written next to the weights: what the pretrained tower reads (its probes)


def save_tiny_model(
    out_dir: str,
    seed: int = 0,
    overwrite: bool = False,
    language_data: dict | None = None,
    vision_data: dict | None = None,
    **config_overrides,
) -> None:
    """Write a tiny checkpoint (weights, config, processor) to `out_dir`; `language_data` (`egoit`, `clips`,
    `captions` folders, `steps`) pretrains its LLM on their text first (`exo2ego.tiny_language`), `vision_data`
    (`captions` or `clips` folder, `video_root`, `samples`, `steps`, `learning_rate`, `views`, `probe_world`) its
    vision towers on those clips' frames (`exo2ego.tiny_vision.pretrain_and_probe`; with `probe_world`, what the tower
    reads is written to `vision_pretraining.json`).

    The folder is written next to `out_dir` and renamed into place when complete. An existing non-empty `out_dir`
    (e.g. a trained stage output) is refused unless `overwrite`, which replaces the whole folder; a file, and a folder
    that is, contains or lies inside one of the data folders it reads, are always refused.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f"--out {out_dir!r} is a file, not a folder; choose another --out")
    inputs = [(language_data or {}).get(key) for key in ("egoit", "clips", "captions")]
    inputs += [(vision_data or {}).get(key) for key in ("clips", "captions", "video_root", "probe_world")]
    check_output_apart(out_dir, inputs)  # before minutes of pretraining, not after
    contents = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    if contents and not overwrite:
        metadata = read_stage_metadata(out_dir)
        state = (
            f"holds a finished {metadata.get('stage')} output with trained weights"
            if metadata is not None
            else f"is not empty ({', '.join(contents[:5])}{', ...' if len(contents) > 5 else ''})"
        )
        raise ValueError(
            f"--out {out_dir!r} {state}; choose another --out, or pass --overwrite to replace the whole folder"
        )
    model, processor = build_tiny_model(seed=seed, **config_overrides)
    if language_data and language_data.get("steps"):
        from exo2ego.tiny_language import language_corpus, pretrain_language

        texts = language_corpus(
            processor, language_data.get("egoit"), language_data.get("clips"), language_data.get("captions")
        )
        pretrain_language(model, processor, texts, steps=language_data["steps"], seed=seed)
    vision_report = None
    if vision_data and vision_data.get("steps"):
        from exo2ego.tiny_vision import pretrain_and_probe

        vision_report = pretrain_and_probe(model, processor, vision_data, seed=seed)
    with staged_folder(out_dir, overwrite=overwrite, marker="config.json", error=ValueError) as staging:
        processor.save_pretrained(staging)
        model.save_pretrained(staging)
        if vision_report is not None:
            write_json_atomic(os.path.join(staging, VISION_REPORT), vision_report)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiny-model", help="write a tiny random-weight Exo2Ego checkpoint with its processor"
    )
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=4, help="frames per video")
    parser.add_argument("--connector", choices=["stc", "stc_v35"], default="stc")
    parser.add_argument("--ego-only", action="store_true", help="inference release without the exo tower and G")
    parser.add_argument("--language-egoit", help="EgoIT folder whose text the LLM is pretrained on (no video)")
    parser.add_argument("--language-clips", help="Ego-ExoClip folder whose narrations the LLM is pretrained on")
    parser.add_argument(
        "--language-captions", help="caption folder (exo2ego data pretrain output) whose captions the LLM reads too"
    )
    parser.add_argument(
        "--language-steps",
        type=int,
        default=0,
        help="steps of text-only LLM pretraining on the folders above (0: the LLM stays random)",
    )
    parser.add_argument("--vision-clips", help="Ego-ExoClip folder whose clips the vision towers pretrain on")
    parser.add_argument(
        "--vision-captions",
        help="caption folder (exo2ego data pretrain output, e.g. the synthetic web-exo corpus) the towers pretrain on "
        "instead of Ego-ExoClip",
    )
    parser.add_argument("--vision-video-root", help="root the clips' video paths are relative to")
    parser.add_argument(
        "--vision-probe-world",
        help="synthetic world root: after pretraining, measure what the tower reads (pattern, colour, shape) on "
        f"held-out clips and on the world's ego and exo clips, into {VISION_REPORT}",
    )
    parser.add_argument(
        "--vision-samples", type=int, default=1024, help="clips to decode (captions rows, or Ego-ExoClip samples)"
    )
    parser.add_argument(
        "--vision-views", nargs="+", choices=["exo", "ego"], default=["exo"], help="views whose frames are used"
    )
    parser.add_argument(
        "--vision-learning-rate", type=float, default=3e-3, help="peak learning rate of the vision pretraining"
    )
    parser.add_argument(
        "--vision-steps",
        type=int,
        default=0,
        help="steps of bag-of-words pretraining of the vision towers on those clips (0: they stay random)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        save_tiny_model(
            args.out,
            seed=args.seed,
            overwrite=args.overwrite,
            num_frames=args.frames,
            connector_type=args.connector,
            include_exo_branch=not args.ego_only,
            language_data={
                "egoit": args.language_egoit,
                "clips": args.language_clips,
                "captions": args.language_captions,
                "steps": args.language_steps,
            },
            vision_data={
                "clips": args.vision_clips,
                "captions": args.vision_captions,
                "probe_world": args.vision_probe_world,
                "video_root": args.vision_video_root,
                "samples": args.vision_samples,
                "views": args.vision_views,
                "steps": args.vision_steps,
                "learning_rate": args.vision_learning_rate,
            },
        )
    except ValueError as error:
        print(f"exo2ego tiny-model: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote a tiny Exo2Ego checkpoint to {args.out}")
    return 0

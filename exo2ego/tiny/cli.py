"""`exo2ego tiny-model`: the command of :func:`exo2ego.tiny.checkpoint.save_tiny_model`."""

from __future__ import annotations

import argparse
import sys

from exo2ego.tiny.checkpoint import VISION_REPORT, save_tiny_model


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

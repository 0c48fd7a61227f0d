"""`exo2ego data ego-exoclip`: build Ego-ExoClip from a local Ego-Exo4D (`egoexo`) download."""

from __future__ import annotations

import argparse
import sys

from .clips import PAPER_ALPHA_SEC


def _alpha(value: str):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--alpha takes seconds or 'auto', got {value!r}") from None


def add_parser(data_subparsers) -> None:
    from .. import hub_export

    parser = data_subparsers.add_parser(
        "ego-exoclip", help="build Ego-ExoClip (clips + takes, Hub-ready) from an egoexo download", description=__doc__
    )
    parser.add_argument("--egoexo-root", required=True, help="root of the egoexo download (holds takes.json)")
    parser.add_argument("--out", required=True, help="output folder (Parquet configs clips/takes, README.md, ...)")
    parser.add_argument(
        "--alpha",
        type=_alpha,
        default=PAPER_ALPHA_SEC,
        help="eq. 1 alpha in seconds, or 'auto' to use the value recomputed from the data "
        f"(default {PAPER_ALPHA_SEC}, the paper's)",
    )
    parser.add_argument(
        "--sequence",
        choices=("take", "annotation"),
        default="take",
        help="narration sequence of eq. 1: both annotators merged per take (default) or one per annotator",
    )
    parser.add_argument(
        "--variant", choices=("full", "448"), default="full", help="video paths: full resolution or downscaled/448"
    )
    parser.add_argument(
        "--annotations-only",
        action="store_true",
        help="publishable export: text left null (text_sha1 kept); videos not needed",
    )
    parser.add_argument(
        "--restore-text",
        metavar="FOLDER_OR_REPO",
        default=None,
        help="fill the text of an annotations-only export from this download, checking every hash",
    )
    parser.add_argument("--no-check-videos", action="store_true", help="do not open every kept video")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="count and skip malformed entries and missing/unreadable videos instead of failing",
    )
    parser.add_argument("--num-proc", type=int, default=1, help="processes for the video checks and the builder")
    parser.add_argument(
        "--allow-text-upload",
        action="store_true",
        help="let --push-to-hub upload a build that contains description text (licence permitting)",
    )
    hub_export.add_push_to_hub_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import hub_export
    from ..source_io import RowError, SourceFileError
    from .export import build_ego_exoclip, restore_text
    from .plan import EgoExoClipOptions

    if args.push_to_hub and not (args.annotations_only or args.allow_text_upload):
        print(
            "error: --push-to-hub uploads only --annotations-only builds (Ego-Exo4D's licence covers the "
            "description text); pass --allow-text-upload if you may redistribute it",
            file=sys.stderr,
        )
        return 2
    recorded = {key: value for key, value in vars(args).items() if key not in ("func", "egoexo_root", "out")}
    try:
        options = EgoExoClipOptions(
            egoexo_root=args.egoexo_root,
            alpha=args.alpha,
            sequence=args.sequence,
            variant=args.variant,
            annotations_only=args.annotations_only,
            check_videos=not args.no_check_videos,
            skip_bad=args.skip_bad_rows,
            num_proc=args.num_proc,
        )
        if args.restore_text:
            info = restore_text(args.restore_text, options, args.out, overwrite=args.overwrite, args=recorded)
        else:
            info = build_ego_exoclip(options, args.out, overwrite=args.overwrite, args=recorded)
    except (SourceFileError, RowError, ValueError, hub_export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = info["counts"]
    print(
        f"Ego-ExoClip written to {args.out}: {counts['takes_kept']} takes, {counts['videos_kept']} videos, "
        f"{counts['narrations_kept']} narrations, {counts['ego_exo_pairs']} ego-exo pairs; "
        f"alpha {info['alpha'].get('used')}; drops {info['drops']}"
    )
    hub_export.maybe_push_to_hub(args, args.out)
    return 0

"""`exo2ego data ego-exoclip`: build Ego-ExoClip from a local Ego-Exo4D (`egoexo`) download."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Literal

from exo2ego_base.command_line import add_command

from .. import hub_export
from ..source_io import RowError, SourceFileError
from .clips import PAPER_ALPHA_SEC
from .export import build_ego_exoclip, restore_text
from .plan import EgoExoClipOptions


@dataclass
class EgoExoClipArguments:
    """What ``exo2ego data ego-exoclip`` takes besides the Hub options: the egoexo download and output folder, eq. 1's
    alpha and narration sequence, the video variant, the publishable (text-free) export and its restoring, and the
    video-check and bad-row policies."""

    egoexo_root: str = field(metadata={"help": "root of the egoexo download (holds takes.json)"})
    out: str = field(metadata={"help": "output folder (Parquet configs clips/takes, README.md, ...)"})
    alpha: str = field(
        default=str(PAPER_ALPHA_SEC),
        metadata={
            "help": "eq. 1 alpha in seconds (the default is the paper's), or 'auto' to use the value recomputed "
            "from the data"
        },
    )
    sequence: Literal["take", "annotation"] = field(
        default="take",
        metadata={"help": "narration sequence of eq. 1: both annotators merged per take or one per annotator"},
    )
    variant: Literal["full", "448"] = field(
        default="full", metadata={"help": "video paths: full resolution or downscaled/448"}
    )
    annotations_only: bool = field(
        default=False, metadata={"help": "publishable export: text left null (text_sha1 kept); videos not needed"}
    )
    restore_text: str | None = field(
        default=None,
        metadata={
            "help": "fill the text of an annotations-only export from this download, checking every hash",
            "metavar": "FOLDER_OR_REPO",
        },
    )
    check_videos: bool = field(default=True, metadata={"help": "open every kept video (--no-check-videos: do not)"})
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "count and skip malformed entries and missing/unreadable videos instead of failing"},
    )
    num_proc: int = field(default=1, metadata={"help": "processes for the video checks and the builder"})
    allow_text_upload: bool = field(
        default=False,
        metadata={"help": "let --push-to-hub upload a build that contains description text (licence permitting)"},
    )

    def __post_init__(self):
        if self.alpha != "auto":
            try:
                float(self.alpha)
            except ValueError:
                raise ValueError(f"--alpha takes seconds or 'auto', got {self.alpha!r}") from None


def add_parser(data_subparsers) -> None:
    add_command(
        data_subparsers,
        "ego-exoclip",
        (EgoExoClipArguments, hub_export.HubPushArguments),
        run,
        help="build Ego-ExoClip (clips + takes, Hub-ready) from an egoexo download",
        description=__doc__,
    )


def run(args: EgoExoClipArguments, push: hub_export.HubPushArguments) -> int:
    if push.push_to_hub and not (args.annotations_only or args.allow_text_upload):
        print(
            "error: --push-to-hub uploads only --annotations-only builds (Ego-Exo4D's licence covers the "
            "description text); pass --allow-text-upload if you may redistribute it",
            file=sys.stderr,
        )
        return 2
    try:
        options = EgoExoClipOptions(
            egoexo_root=args.egoexo_root,
            alpha=args.alpha,
            sequence=args.sequence,
            variant=args.variant,
            annotations_only=args.annotations_only,
            check_videos=args.check_videos,
            skip_bad=args.skip_bad_rows,
            num_proc=args.num_proc,
        )
        recorded = {
            **{key: value for key, value in asdict(args).items() if key not in ("egoexo_root", "out")},
            "alpha": options.alpha,
            **asdict(push),
        }
        if args.restore_text:
            info = restore_text(args.restore_text, options, args.out, overwrite=push.overwrite, args=recorded)
        else:
            info = build_ego_exoclip(options, args.out, overwrite=push.overwrite, args=recorded)
    except (SourceFileError, RowError, ValueError, hub_export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = info["counts"]
    print(
        f"Ego-ExoClip written to {args.out}: {counts['takes_kept']} takes, {counts['videos_kept']} videos, "
        f"{counts['narrations_kept']} narrations, {counts['ego_exo_pairs']} ego-exo pairs; "
        f"alpha {info['alpha'].get('used')}; drops {info['drops']}"
    )
    hub_export.maybe_push_to_hub(push, args.out)
    return 0

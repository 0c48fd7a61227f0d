"""``exo2ego data egoit``: build EgoIT from the user's downloads of its five sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datasets_scripts.build_command import SourceArguments, recorded_args, run_cli_build
from datasets_scripts.egoit.build import build_egoit
from datasets_scripts.egoit.sources import EgoITOptions
from datasets_scripts.hub_export import HubPushArguments
from exo2ego_base.command_line import add_command

SOURCE_NAMES = ("egtea", "ssv2", "egotimeqa", "openeqa", "egoexolearn")
EgoITSourceArguments = SourceArguments.for_sources(SOURCE_NAMES)


@dataclass
class EgoITArguments:
    """What ``exo2ego data egoit`` takes besides the shared source and Hub options: how each source is read and
    an optional LLaVA-format copy of the rows."""

    llava_json: str | None = field(
        default=None,
        metadata={
            "help": "also write the VideoLLaMA2/LLaVA 'conversations' JSON of all rows to FILE",
            "metavar": "FILE",
        },
    )
    egtea_split: Literal[1, 2, 3] = field(default=1, metadata={"help": "EGTEA train/test split to read"})
    ssv2_answer: Literal["label", "template"] = field(
        default="label", metadata={"help": "SSv2 answer: the filled-in label or the class template"}
    )
    egoexolearn_views: list[str] = field(
        default_factory=lambda: ["ego"],
        metadata={"help": "EgoExoLearn views whose rows are kept", "choices": ("ego", "exo")},
    )
    egoexolearn_text: Literal["narration_en", "narration_en_no_hand_prompt", "narration_en_hand_prompt"] = field(
        default="narration_en", metadata={"help": "EgoExoLearn narration column used as the answer"}
    )
    make_openeqa_videos: bool = field(
        default=False,
        metadata={
            "help": "encode OpenEQA frame folders (data/frames/<episode>/*-rgb.png) into the clips the rows use"
        },
    )


def add_parser(data_subparsers) -> None:
    add_command(
        data_subparsers,
        "egoit",
        (EgoITSourceArguments, EgoITArguments, HubPushArguments),
        run,
        help="build EgoIT (stage-3 instruction data) from EGTEA Gaze+, SSv2, EgoTimeQA, OpenEQA, EgoExoLearn",
        description="Read each downloaded source as released and write canonical EgoIT Parquet configs "
        "(one per source + 'all'), a dataset card and build_info.json. Sources without a root are skipped.",
    )


def run(source: SourceArguments, args: EgoITArguments, push: HubPushArguments) -> int:
    options = EgoITOptions(
        egtea_split=args.egtea_split,
        ssv2_answer=args.ssv2_answer,
        egoexolearn_views=tuple(args.egoexolearn_views),
        egoexolearn_text=args.egoexolearn_text,
        make_openeqa_videos=args.make_openeqa_videos,
    )

    def build():
        roots, skipped = source.roots()
        for message in skipped:
            print(message)
        build_egoit(
            roots,
            source.out,
            options=options,
            seed=source.seed,
            skip_bad_rows=source.skip_bad_rows,
            check_video_files=source.check_videos,
            overwrite=push.overwrite,
            llava_json=args.llava_json,
            skipped_messages=skipped,
            args=recorded_args(source, args, push),
        )

    return run_cli_build(build, source.out, push)

"""``exo2ego data egoit``: build EgoIT from the user's downloads of its five sources."""

from __future__ import annotations

SOURCE_NAMES = ("egtea", "ssv2", "egotimeqa", "openeqa", "egoexolearn")


def add_parser(data_subparsers) -> None:
    from datasets_scripts.source_io import add_source_arguments

    parser = data_subparsers.add_parser(
        "egoit",
        help="build EgoIT (stage-3 instruction data) from EGTEA Gaze+, SSv2, EgoTimeQA, OpenEQA, EgoExoLearn",
        description="Read each downloaded source as released and write canonical EgoIT Parquet configs "
        "(one per source + 'all'), a dataset card and build_info.json. Sources without a root are skipped.",
    )
    add_source_arguments(parser, SOURCE_NAMES)
    parser.add_argument(
        "--llava-json",
        default=None,
        metavar="FILE",
        help="also write the VideoLLaMA2/LLaVA 'conversations' JSON of all rows to FILE",
    )
    parser.add_argument("--egtea-split", type=int, choices=(1, 2, 3), default=1, help="EGTEA train/test split to read")
    parser.add_argument(
        "--ssv2-answer",
        choices=("label", "template"),
        default="label",
        help="SSv2 answer: the filled-in label (default) or the class template",
    )
    parser.add_argument("--egoexolearn-views", nargs="+", choices=("ego", "exo"), default=["ego"])
    parser.add_argument(
        "--egoexolearn-text",
        default="narration_en",
        choices=("narration_en", "narration_en_no_hand_prompt", "narration_en_hand_prompt"),
    )
    parser.add_argument(
        "--make-openeqa-videos",
        action="store_true",
        help="encode OpenEQA frame folders (data/frames/<episode>/*-rgb.png) into the clips the rows use",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from datasets_scripts.egoit.build import build_egoit
    from datasets_scripts.egoit.sources import EgoITOptions
    from datasets_scripts.source_io import parse_roots, recorded_args, run_cli_build

    options = EgoITOptions(
        egtea_split=args.egtea_split,
        ssv2_answer=args.ssv2_answer,
        egoexolearn_views=tuple(args.egoexolearn_views),
        egoexolearn_text=args.egoexolearn_text,
        make_openeqa_videos=args.make_openeqa_videos,
    )

    def build():
        roots, skipped = parse_roots(args.root, args.data_root, SOURCE_NAMES)
        for message in skipped:
            print(message)
        build_egoit(
            roots,
            args.out,
            options=options,
            seed=args.seed,
            skip_bad_rows=args.skip_bad_rows,
            check_video_files=args.check_videos,
            overwrite=args.overwrite,
            llava_json=args.llava_json,
            skipped_messages=skipped,
            args=recorded_args(args),
        )

    return run_cli_build(build, args.out, args)

"""``exo2ego data egobench``: build EgoBench from the user's downloads of its task sources."""

from __future__ import annotations


def add_parser(data_subparsers) -> None:
    from datasets_scripts.egobench.tasks import builder_tasks
    from datasets_scripts.source_io import add_source_arguments

    task_names = builder_tasks()  # the declared tasks with a reader (datasets_scripts/egobench/tasks.py)

    parser = data_subparsers.add_parser(
        "egobench",
        help=f"build EgoBench ({len(task_names)} tasks) with frozen option orders and mined distractors",
        description="Read each downloaded task source as released and write canonical EgoBench Parquet configs, "
        "a dataset card and build_info.json. Tasks without a root are skipped.",
    )
    add_source_arguments(parser, task_names)
    parser.add_argument("--tasks", nargs="+", choices=task_names, default=None, help="build only these tasks")
    parser.add_argument(
        "--keep-source-order",
        action="store_true",
        help="store options in the source's order instead of the seeded frozen shuffle",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        metavar="MODEL",
        help="sentence-transformers model folder for distractor mining (default: bundled all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--near-duplicate",
        type=float,
        default=0.9,
        help="cosine similarity at or above which a mined option counts as a near duplicate",
    )
    parser.add_argument("--qaego4d-split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--egotaskqa-split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--charades-csv", default="CharadesEgo_v1_test_only1st.csv")
    parser.add_argument(
        "--egomcq-pool",
        default=None,
        metavar="EGOCLIP_CSV",
        help="mine EgoMCQ's extra candidates from this egoclip.csv (default: EgoMCQ's own narrations)",
    )
    parser.add_argument("--egomcq-candidates", type=int, default=10)
    parser.add_argument(
        "--make-egotaskqa-clips",
        action="store_true",
        help="encode each EgoTaskQA interval of LEMMA frames into the clip its rows use",
    )
    parser.add_argument(
        "--frames-fps", type=float, default=30.0, help="frame rate of clips encoded from frame folders"
    )
    parser.add_argument(
        "--leakage-against",
        action="append",
        default=[],
        metavar="DIR",
        help="EgoIT / EgoClip / Ego-ExoClip export folder to check for shared video ids (repeatable)",
    )
    parser.add_argument(
        "--ego4d-metadata",
        default=None,
        metavar="EGO4D_JSON",
        help="Ego4D ego4d.json, to map clip uids to video uids in the leakage report",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from datasets_scripts.egobench.build import build_egobench
    from datasets_scripts.egobench.options import EgoBenchOptions
    from datasets_scripts.egobench.tasks import builder_tasks
    from datasets_scripts.source_io import parse_roots, recorded_args, run_cli_build

    options = EgoBenchOptions(
        option_seed=args.seed,
        keep_source_order=args.keep_source_order,
        encoder_model=args.encoder,
        near_duplicate=args.near_duplicate,
        qaego4d_split=args.qaego4d_split,
        egotaskqa_split=args.egotaskqa_split,
        charades_csv=args.charades_csv,
        egomcq_pool=args.egomcq_pool,
        egomcq_candidates=args.egomcq_candidates,
        make_egotaskqa_clips=args.make_egotaskqa_clips,
        frames_fps=args.frames_fps,
    )

    def build():
        roots, skipped = parse_roots(args.root, args.data_root, builder_tasks())
        if args.tasks:
            skipped = [message for message in skipped if message.split(":")[0] in args.tasks]
        for message in skipped:
            print(message)
        build_egobench(
            roots,
            args.out,
            options=options,
            tasks=args.tasks,
            skip_bad_rows=args.skip_bad_rows,
            check_video_files=args.check_videos,
            overwrite=args.overwrite,
            leakage_against=args.leakage_against,
            ego4d_metadata=args.ego4d_metadata,
            skipped_messages=skipped,
            args=recorded_args(args),
        )

    return run_cli_build(build, args.out, args)

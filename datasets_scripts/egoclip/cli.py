"""``exo2ego data egoclip``: EgoVLP's egoclip.csv as captioning rows for the initialization stage."""

from __future__ import annotations


def add_parser(data_subparsers) -> None:
    from datasets_scripts.source_io import add_source_arguments

    parser = data_subparsers.add_parser(
        "egoclip",
        help="build EgoClip captioning rows (ego encoder initialization)",
        description="Read egoclip.csv (tab-separated) and write Hub-ready Parquet shards.",
    )
    add_source_arguments(parser, ("egoclip",))
    parser.add_argument(
        "--video-layout",
        choices=("full_scale", "egovlp_chunks"),
        default="full_scale",
        help="v1/full_scale/<uid>.mp4 (default) or EgoVLP's 600 s chunks <uid>/<chunk>.mp4",
    )
    parser.add_argument("--max-rows", type=int, default=None, help="stop after this many rows (quick builds)")
    parser.add_argument("--shard-rows", type=int, default=500_000, help="rows per Parquet shard")
    parser.set_defaults(func=run)


def run(args) -> int:
    from datasets_scripts.egoclip.build import build_egoclip
    from datasets_scripts.source_io import check_videos, parse_roots, recorded_args, run_cli_build

    def build():
        roots, _ = parse_roots(args.root, args.data_root, ("egoclip",))
        if "egoclip" not in roots:
            raise ValueError("egoclip: pass --root egoclip=DIR (the folder holding egoclip.csv)")
        info = build_egoclip(
            roots["egoclip"],
            args.out,
            seed=args.seed,
            layout=args.video_layout,
            skip_bad_rows=args.skip_bad_rows,
            max_rows=args.max_rows,
            shard_rows=args.shard_rows,
            overwrite=args.overwrite,
            args=recorded_args(args),
        )
        print(f"egoclip: {info['counts']['egoclip']} rows, {info['skips']['skipped_rows']} skipped")
        if args.check_videos:
            import pyarrow.parquet as pq

            videos = [
                {"video": video}
                for video in sorted(
                    set(pq.read_table(f"{args.out}/data/egoclip", columns=["video"]).column("video").to_pylist())
                )
            ]
            report = check_videos(videos, roots["egoclip"])
            print(
                f"egoclip: {report['missing']} of {report['checked_videos']} videos missing under {roots['egoclip']}"
            )

    return run_cli_build(build, args.out, args)

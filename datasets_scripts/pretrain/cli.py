"""``exo2ego data pretrain``: VideoLLaMA2 / LLaVA pretraining JSON as initialization captions (exo tower)."""

from __future__ import annotations

from datasets_scripts.pretrain import SOURCES


def add_parser(data_subparsers) -> None:
    from datasets_scripts.source_io import add_source_arguments

    parser = data_subparsers.add_parser(
        "pretrain",
        help="build the exo tower's initialization captions from VideoLLaMA2/LLaVA pretraining JSON",
        description="Read VideoLLaMA2/LLaVA-style pretraining JSON ({id, video|image, conversations}) whose media "
        "paths are relative to --root NAME=DIR, and write Hub-ready caption Parquet (config 'captions'). "
        "With --check-videos a missing media file is a bad row (an error, or a counted skip with "
        "--skip-bad-rows).",
    )
    add_source_arguments(parser, SOURCES)
    parser.add_argument(
        "--annotations",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="annotation JSON/JSONL of source NAME (repeatable; default: every *.json/*.jsonl at the top of its root)",
    )
    parser.add_argument("--max-rows", type=int, default=None, help="stop after this many rows (quick builds)")
    parser.add_argument("--shard-rows", type=int, default=500_000, help="rows per Parquet shard")
    parser.set_defaults(func=run)


def run(args) -> int:
    from datasets_scripts.pretrain.build import build_pretrain
    from datasets_scripts.source_io import parse_roots, recorded_args, run_cli_build

    def build():
        roots, _ = parse_roots(args.root, args.data_root, SOURCES)
        annotations: dict[str, list[str]] = {}
        for item in args.annotations:
            name, sep, path = item.partition("=")
            if not sep or not path or name not in SOURCES:
                raise ValueError(f"--annotations {item!r}: expected NAME=FILE with NAME one of {', '.join(SOURCES)}")
            if name not in roots:
                raise ValueError(f"--annotations {item!r}: source {name!r} has no --root {name}=DIR")
            annotations.setdefault(name, []).append(path)
        info = build_pretrain(
            roots,
            args.out,
            annotations=annotations,
            skip_bad_rows=args.skip_bad_rows,
            check_media=args.check_videos,
            max_rows=args.max_rows,
            shard_rows=args.shard_rows,
            overwrite=args.overwrite,
            args={
                **recorded_args(args),
                "annotations": sorted(
                    f"{item.partition('=')[0]}={item.partition('=')[2].rsplit('/', 1)[-1]}"
                    for item in args.annotations
                ),
            },
        )
        print(f"pretrain: {info['counts']['captions']} rows, {info['skips']['skipped_rows']} skipped")

    return run_cli_build(build, args.out, args)

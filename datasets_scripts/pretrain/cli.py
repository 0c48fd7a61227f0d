"""``exo2ego data pretrain``: VideoLLaMA2 / LLaVA pretraining JSON as initialization captions (exo tower)."""

from __future__ import annotations

from dataclasses import dataclass, field

from datasets_scripts.build_command import SourceArguments, recorded_args, run_cli_build
from datasets_scripts.hub_export import HubPushArguments
from datasets_scripts.pretrain import SOURCES
from datasets_scripts.pretrain.build import build_pretrain
from exo2ego_base.command_line import add_command

PretrainSourceArguments = SourceArguments.for_sources(SOURCES)


@dataclass
class PretrainArguments:
    """What ``exo2ego data pretrain`` takes besides the shared source and Hub options: the annotation files of
    each source and how many rows are written, in shards of what size."""

    annotations: list[str] = field(
        default_factory=list,
        metadata={
            "help": "annotation JSON/JSONL of source NAME (repeatable; default: every *.json/*.jsonl at the top of "
            "its root)",
            "metavar": "NAME=FILE",
            "action": "extend",
        },
    )
    max_rows: int | None = field(default=None, metadata={"help": "stop after this many rows (quick builds)"})
    shard_rows: int = field(default=500_000, metadata={"help": "rows per Parquet shard"})


def add_parser(data_subparsers) -> None:
    add_command(
        data_subparsers,
        "pretrain",
        (PretrainSourceArguments, PretrainArguments, HubPushArguments),
        run,
        help="build the exo tower's initialization captions from VideoLLaMA2/LLaVA pretraining JSON",
        description="Read VideoLLaMA2/LLaVA-style pretraining JSON ({id, video|image, conversations}) whose media "
        "paths are relative to --root NAME=DIR, and write Hub-ready caption Parquet (config 'captions'). "
        "With --check-videos a missing media file is a bad row (an error, or a counted skip with "
        "--skip-bad-rows).",
    )


def run(source: SourceArguments, args: PretrainArguments, push: HubPushArguments) -> int:
    def build():
        roots, _ = source.roots()
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
            source.out,
            annotations=annotations,
            skip_bad_rows=source.skip_bad_rows,
            check_media=source.check_videos,
            max_rows=args.max_rows,
            shard_rows=args.shard_rows,
            overwrite=push.overwrite,
            args={
                **recorded_args(source, args, push),
                "annotations": sorted(
                    f"{item.partition('=')[0]}={item.partition('=')[2].rsplit('/', 1)[-1]}"
                    for item in args.annotations
                ),
            },
        )
        print(f"pretrain: {info['counts']['captions']} rows, {info['skips']['skipped_rows']} skipped")

    return run_cli_build(build, source.out, push)

"""``exo2ego data egoclip``: EgoVLP's egoclip.csv as captioning rows for the initialization stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pyarrow.parquet as pq

from datasets_scripts.build_command import SourceArguments, recorded_args, run_cli_build
from datasets_scripts.egoclip.build import build_egoclip
from datasets_scripts.hub_export import HubPushArguments
from datasets_scripts.source_io import check_videos
from exo2ego_base.command_line import add_command

EgoClipSourceArguments = SourceArguments.for_sources(("egoclip",))


@dataclass
class EgoClipArguments:
    """What ``exo2ego data egoclip`` takes besides the shared source and Hub options: where the videos lie and
    how many rows are written, in shards of what size."""

    video_layout: Literal["full_scale", "egovlp_chunks"] = field(
        default="full_scale",
        metadata={"help": "v1/full_scale/<uid>.mp4 or EgoVLP's 600 s chunks <uid>/<chunk>.mp4"},
    )
    max_rows: int | None = field(default=None, metadata={"help": "stop after this many rows (quick builds)"})
    shard_rows: int = field(default=500_000, metadata={"help": "rows per Parquet shard"})


def add_parser(data_subparsers) -> None:
    add_command(
        data_subparsers,
        "egoclip",
        (EgoClipSourceArguments, EgoClipArguments, HubPushArguments),
        run,
        help="build EgoClip captioning rows (ego encoder initialization)",
        description="Read egoclip.csv (tab-separated) and write Hub-ready Parquet shards.",
    )


def run(source: SourceArguments, args: EgoClipArguments, push: HubPushArguments) -> int:
    def build():
        roots, _ = source.roots()
        if "egoclip" not in roots:
            raise ValueError("egoclip: pass --root egoclip=DIR (the folder holding egoclip.csv)")
        info = build_egoclip(
            roots["egoclip"],
            source.out,
            seed=source.seed,
            layout=args.video_layout,
            skip_bad_rows=source.skip_bad_rows,
            max_rows=args.max_rows,
            shard_rows=args.shard_rows,
            overwrite=push.overwrite,
            args=recorded_args(source, args, push),
        )
        print(f"egoclip: {info['counts']['egoclip']} rows, {info['skips']['skipped_rows']} skipped")
        if source.check_videos:
            videos = [
                {"video": video}
                for video in sorted(
                    set(pq.read_table(f"{source.out}/data/egoclip", columns=["video"]).column("video").to_pylist())
                )
            ]
            report = check_videos(videos, roots["egoclip"])
            print(
                f"egoclip: {report['missing']} of {report['checked_videos']} videos missing under {roots['egoclip']}"
            )

    return run_cli_build(build, source.out, push)

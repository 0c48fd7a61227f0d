"""``exo2ego data egobench``: build EgoBench from the user's downloads of its task sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from datasets_scripts.build_command import SourceArguments, recorded_args, run_cli_build
from datasets_scripts.egobench.build import build_egobench
from datasets_scripts.egobench.options import EgoBenchOptions
from datasets_scripts.egobench.tasks import builder_tasks
from datasets_scripts.hub_export import HubPushArguments
from exo2ego_base.command_line import add_command


@dataclass
class EgoBenchArguments:
    """What ``exo2ego data egobench`` takes besides the shared source and Hub options: which tasks are built, how
    options are ordered and distractors mined, how each source is read and what the leakage report checks."""

    tasks: list[str] | None = field(
        default=None, metadata={"help": "build only these tasks (of the names --root takes)", "metavar": "TASK"}
    )
    keep_source_order: bool = field(
        default=False, metadata={"help": "store options in the source's order instead of the seeded frozen shuffle"}
    )
    encoder: str | None = field(
        default=None,
        metadata={
            "help": "sentence-transformers model folder for distractor mining (None: the bundled all-MiniLM-L6-v2)",
            "metavar": "MODEL",
        },
    )
    near_duplicate: float = field(
        default=0.9, metadata={"help": "cosine similarity at or above which a mined option counts as a near duplicate"}
    )
    qaego4d_split: Literal["train", "val", "test"] = field(default="test", metadata={"help": "QaEgo4D split to read"})
    egotaskqa_split: Literal["train", "val", "test"] = field(
        default="test", metadata={"help": "EgoTaskQA split to read"}
    )
    charades_csv: str = field(
        default="CharadesEgo_v1_test_only1st.csv", metadata={"help": "Charades-Ego annotation CSV under its root"}
    )
    egomcq_pool: str | None = field(
        default=None,
        metadata={
            "help": "mine EgoMCQ's extra candidates from this egoclip.csv (None: EgoMCQ's own narrations)",
            "metavar": "EGOCLIP_CSV",
        },
    )
    egomcq_candidates: int = field(default=10, metadata={"help": "candidates per EgoMCQ question"})
    make_egotaskqa_clips: bool = field(
        default=False, metadata={"help": "encode each EgoTaskQA interval of LEMMA frames into the clip its rows use"}
    )
    frames_fps: float = field(default=30.0, metadata={"help": "frame rate of clips encoded from frame folders"})
    leakage_against: list[str] = field(
        default_factory=list,
        metadata={
            "help": "EgoIT / EgoClip / Ego-ExoClip export folder to check for shared video ids (repeatable)",
            "metavar": "DIR",
            "action": "extend",
        },
    )
    ego4d_metadata: str | None = field(
        default=None,
        metadata={
            "help": "Ego4D ego4d.json, to map clip uids to video uids in the leakage report",
            "metavar": "EGO4D_JSON",
        },
    )

    def __post_init__(self):
        unknown = [name for name in self.tasks or () if name not in builder_tasks()]
        if unknown:
            raise ValueError(
                f"--tasks: unknown task {', '.join(map(repr, unknown))} (choose from {', '.join(builder_tasks())})"
            )


def add_parser(data_subparsers) -> None:
    task_names = builder_tasks()  # the declared tasks with a reader (datasets_scripts/egobench/tasks.py)
    add_command(
        data_subparsers,
        "egobench",
        (SourceArguments.for_sources(task_names), EgoBenchArguments, HubPushArguments),
        run,
        help=f"build EgoBench ({len(task_names)} tasks) with frozen option orders and mined distractors",
        description="Read each downloaded task source as released and write canonical EgoBench Parquet configs, "
        "a dataset card and build_info.json. Tasks without a root are skipped.",
    )


def run(source: SourceArguments, args: EgoBenchArguments, push: HubPushArguments) -> int:
    options = EgoBenchOptions(
        option_seed=source.seed,
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
        roots, skipped = source.roots()
        if args.tasks:
            skipped = [message for message in skipped if message.split(":")[0] in args.tasks]
        for message in skipped:
            print(message)
        build_egobench(
            roots,
            source.out,
            options=options,
            tasks=args.tasks,
            skip_bad_rows=source.skip_bad_rows,
            check_video_files=source.check_videos,
            overwrite=push.overwrite,
            leakage_against=args.leakage_against,
            ego4d_metadata=args.ego4d_metadata,
            skipped_messages=skipped,
            args=recorded_args(source, args, push),
        )

    return run_cli_build(build, source.out, push)

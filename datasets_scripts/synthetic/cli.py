"""`exo2ego data synth`: generate the synthetic Ego-Exo world (videos, Ego-Exo4D metadata, EgoIT, EgoBench)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from exo2ego_base.command_line import add_command

from .. import hub_export
from .render import EGO_SHIFT, EGO_SHIFTS
from .world import WorldConfig, generate_world


@dataclass
class SynthArguments:
    """What ``exo2ego data synth`` takes: the world folder, how many takes of what content are rendered at what
    size and frame rate, the held-out share, the ego camera's shift and the QA and web-exo extras."""

    out: str = field(metadata={"help": "world root to create (refused if it exists, see --overwrite)"})
    takes: int = field(default=24, metadata={"help": "number of rendered takes (>= 3)"})
    seed: int = field(default=0, metadata={"help": "seed of the world's scripts, scenes and splits"})
    fps: float = field(default=8.0, metadata={"help": "frame rate of the rendered videos"})
    actions_per_take: int = field(default=5, metadata={"help": "narrated actions in each take"})
    objects_per_take: int = field(default=4, metadata={"help": "objects on the table (>= 1)"})
    height: int = field(default=128, metadata={"help": "full-resolution frame height (ego is square)"})
    downscaled_height: int = field(default=64, metadata={"help": "frame height of the downscaled/448 variant"})
    downscaled_only: bool = field(
        default=False,
        metadata={
            "help": "write only the downscaled/448 videos (as Ego-Exo4D's --parts downscaled_takes/448), not full "
            "resolution"
        },
    )
    heldout_fraction: float = field(default=0.3, metadata={"help": "share of val + test takes (EgoBench)"})
    num_proc: int = field(default=1, metadata={"help": "render takes in this many processes"})
    qa: bool = field(
        default=True, metadata={"help": "write the egoit/, egobench/ and egoclip/ folders (--no-qa: skip them)"}
    )
    ego_shift: str = field(
        default=EGO_SHIFT,
        metadata={
            "help": f"what the ego camera's recording does to the picture: {' + '.join(EGO_SHIFTS)} joined by '+', "
            "or none"
        },
    )
    web_exo_per_take: int = field(
        default=10,
        metadata={
            "help": "captioned web-exo clips (separate scenes, patterns named) per rendered take; 0 writes none"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace an existing world at --out"})


def add_parser(data_subparsers) -> None:
    add_command(
        data_subparsers,
        "synth",
        (SynthArguments,),
        run,
        help="render the synthetic Ego-Exo world in the Ego-Exo4D layout (+ synthetic EgoIT/EgoBench)",
        description=__doc__,
    )


def run(args: SynthArguments) -> int:
    try:
        config = WorldConfig(
            num_takes=args.takes,
            seed=args.seed,
            fps=args.fps,
            actions_per_take=args.actions_per_take,
            objects_per_take=args.objects_per_take,
            height=args.height,
            downscaled_height=args.downscaled_height,
            downscaled_only=args.downscaled_only,
            heldout_fraction=args.heldout_fraction,
            num_proc=args.num_proc,
            write_qa=args.qa,
            ego_shift=args.ego_shift,
            web_exo_per_take=args.web_exo_per_take,
        )
        info = generate_world(args.out, config, overwrite=args.overwrite)
    except (ValueError, hub_export.ExportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    counts = info["counts"]
    print(
        f"synthetic world written to {args.out}: {counts['takes']} takes {counts['by_split']}, "
        f"{counts['videos']} videos, EgoIT {counts.get('egoit_rows', 0)} rows, "
        f"EgoBench {counts.get('egobench_rows', 0)} rows"
    )
    return 0

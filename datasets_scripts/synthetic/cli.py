"""`exo2ego data synth`: generate the synthetic Ego-Exo world (videos, Ego-Exo4D metadata, EgoIT, EgoBench)."""

from __future__ import annotations

import argparse
import sys

from .render import EGO_SHIFT, EGO_SHIFTS


def add_parser(data_subparsers) -> None:
    parser = data_subparsers.add_parser(
        "synth",
        help="render the synthetic Ego-Exo world in the Ego-Exo4D layout (+ synthetic EgoIT/EgoBench)",
        description=__doc__,
    )
    parser.add_argument("--out", required=True, help="world root to create (refused if it exists, see --overwrite)")
    parser.add_argument("--takes", type=int, default=24, help="number of rendered takes (>= 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--actions-per-take", type=int, default=5)
    parser.add_argument("--objects-per-take", type=int, default=4, help="objects on the table (>= 1)")
    parser.add_argument("--height", type=int, default=128, help="full-resolution frame height (ego is square)")
    parser.add_argument("--downscaled-height", type=int, default=64, help="frame height of the downscaled/448 variant")
    parser.add_argument(
        "--downscaled-only",
        action="store_true",
        help="write only the downscaled/448 videos (as Ego-Exo4D's --parts downscaled_takes/448), not full resolution",
    )
    parser.add_argument("--heldout-fraction", type=float, default=0.3, help="share of val + test takes (EgoBench)")
    parser.add_argument("--num-proc", type=int, default=1, help="render takes in this many processes")
    parser.add_argument("--no-qa", action="store_true", help="skip the egoit/, egobench/ and egoclip/ folders")
    parser.add_argument(
        "--ego-shift",
        default=EGO_SHIFT,
        help=f"what the ego camera's recording does to the picture: {' + '.join(EGO_SHIFTS)} joined by '+', or none "
        f"(default {EGO_SHIFT})",
    )
    parser.add_argument(
        "--web-exo-per-take",
        type=int,
        default=10,
        help="captioned web-exo clips (separate scenes, patterns named) per rendered take; 0 writes none",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing world at --out")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .. import hub_export
    from .world import WorldConfig, generate_world

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
            write_qa=not args.no_qa,
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

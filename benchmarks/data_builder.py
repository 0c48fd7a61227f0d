"""Ego-ExoClip builder throughput (narrations/s) on a large synthetic Ego-Exo4D metadata set.

Writes takes.json / splits.json / atomic descriptions for many synthetic takes (no videos), then
times, in the same run: the planning step alone (JSON parsing, drops, eq. 1) and the whole
annotations-only export (datasets builder, Parquet, statistics plots, dataset card)::

    python -m benchmarks.data_builder --takes 1000 --actions 40
"""

from __future__ import annotations

import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic


@dataclass
class DataBuilderArguments:
    """The flags of `python -m benchmarks.data_builder`."""

    takes: int = field(default=1000, metadata={"help": "synthetic takes of the generated world"})
    actions: int = field(default=40, metadata={"help": "actions per take (2 narrations each)"})
    num_proc: int = field(default=1, metadata={"help": "processes of the EgoClip build"})
    seed: int = field(default=0, metadata={"help": "seed of the generated world"})
    json: str = field(default="benchmarks/results/data_builder.json", metadata={"help": "JSON output path"})


def main(argv=None) -> int:
    args = parse_script_arguments(DataBuilderArguments, argv, __doc__.splitlines()[0])

    from datasets_scripts.ego_exoclip import EgoExoClipOptions, build_ego_exoclip, plan_ego_exoclip
    from datasets_scripts.synthetic.world import WorldConfig, plan_world, write_metadata

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "egoexo"
        config = WorldConfig(num_takes=args.takes, seed=args.seed, actions_per_take=args.actions, heldout_fraction=0.1)
        started = time.perf_counter()
        plans, extras = plan_world(config)
        write_metadata(root, plans, extras, config)
        metadata_sec = time.perf_counter() - started
        options = EgoExoClipOptions(egoexo_root=str(root), annotations_only=True, num_proc=args.num_proc)

        started = time.perf_counter()
        plan = plan_ego_exoclip(options)
        plan_sec = time.perf_counter() - started
        started = time.perf_counter()
        info = build_ego_exoclip(options, Path(tmp) / "out")
        build_sec = time.perf_counter() - started

    narrations = info["counts"]["narrations_kept"]
    report = {
        "benchmark": "data_builder",
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "args": asdict(args),
        "narrations": narrations,
        "takes": info["counts"]["takes_kept"],
        "metadata_write_sec": metadata_sec,
        "narrations_per_sec": {"plan": len(plan.clips) / plan_sec, "full_export": narrations / build_sec},
        "seconds": {"plan": plan_sec, "full_export": build_sec},
        "estimated_full_ego_exoclip_sec": 261_300 / (narrations / build_sec),
    }
    print(f"CPU: {report['cpu']}; {report['takes']} takes, {narrations} narrations kept")
    print(f"{'step':<34}{'seconds':>10}{'narrations/s':>15}")
    print(f"{'plan (parse, drops, eq. 1)':<34}{plan_sec:>10.2f}{report['narrations_per_sec']['plan']:>15.0f}")
    print(
        f"{'full annotations-only export':<34}{build_sec:>10.2f}{report['narrations_per_sec']['full_export']:>15.0f}"
    )
    print(f"full Ego-ExoClip (261.3K narrations) at this rate: {report['estimated_full_ego_exoclip_sec']:.0f} s")
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

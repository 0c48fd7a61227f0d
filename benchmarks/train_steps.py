"""Tiny-model CPU training throughput per stage (optimizer steps/s and samples/s), on the synthetic world.

Runs init -> stage1 -> stage2 -> stage3 in one process, each from the previous output, with the tiny configs and
the stage scripts' own code path (data decoding with PyAV included), then prints a table and writes JSON::

    python -m benchmarks.train_steps --steps 10 --batch 2
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic

REPO = Path(__file__).resolve().parents[1]
STAGES = ("init", "stage1", "stage2", "stage3")


@dataclass
class TrainStepsArguments:
    """The flags of `python -m benchmarks.train_steps`."""

    steps: int = field(default=10, metadata={"help": "optimizer steps per stage"})
    batch: int = field(default=2, metadata={"help": "per-device batch size"})
    takes: int = field(default=4, metadata={"help": "synthetic takes"})
    threads: int | None = field(default=None, metadata={"help": "torch intra-op threads (None: torch's choice)"})
    json: str = field(default="benchmarks/results/train_steps.json", metadata={"help": "JSON output path"})


def main(argv=None) -> int:
    args = parse_script_arguments(TrainStepsArguments, argv, __doc__.splitlines()[0])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from datasets_scripts.ego_exoclip.export import build_ego_exoclip
    from datasets_scripts.ego_exoclip.plan import EgoExoClipOptions
    from datasets_scripts.synthetic.world import WorldConfig, generate_world
    from exo2ego.tiny import save_tiny_model
    from train.pipeline import run_stage
    from train.saving import environment_versions

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_world(root / "synth", WorldConfig(num_takes=args.takes, height=64, downscaled_height=32))
        build_ego_exoclip(EgoExoClipOptions(egoexo_root=str(root / "synth"), variant="448"), str(root / "clips"))
        save_tiny_model(str(root / "base"))
        start = root / "base"
        for stage in STAGES:
            data = (
                ["--dataset_path", str(root / "synth" / "egoit")]
                if stage == "stage3"
                else ["--dataset_path", str(root / "clips")]
            )
            trainer = run_stage(
                stage,
                [
                    "--config",
                    str(REPO / "train" / "configs" / f"tiny_{stage}.yaml"),
                    "--model_name_or_path",
                    str(start),
                    "--output_dir",
                    str(root / stage),
                    "--video_root",
                    str(root / "synth"),
                    *data,
                    "--max_steps",
                    str(args.steps),
                    "--per_device_train_batch_size",
                    str(args.batch),
                    "--save_strategy",
                    "no",
                    "--logging_steps",
                    str(args.steps),
                ],
            )
            summary = trainer.state.log_history[-1]
            rows.append(
                {
                    "stage": stage,
                    "steps": trainer.state.global_step,
                    "runtime_sec": summary["train_runtime"],
                    "steps_per_sec": summary["train_steps_per_second"],
                    "samples_per_sec": summary["train_samples_per_second"],
                    "failed_videos": trainer.failures.failed,
                }
            )
            start = root / stage

    print(f"tiny Exo2Ego, CPU: {cpu_name()}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    print(f"{'stage':8} {'steps':>5} {'steps/s':>8} {'samples/s':>10} {'vs stage1':>9}")
    reference = next(row["steps_per_sec"] for row in rows if row["stage"] == "stage1")
    for row in rows:
        print(
            f"{row['stage']:8} {row['steps']:5d} {row['steps_per_sec']:8.2f} {row['samples_per_sec']:10.2f} "
            f"{row['steps_per_sec'] / reference:9.2f}"
        )
    report = {
        "benchmark": "train_steps",
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "args": asdict(args),
        "versions": environment_versions(),
        "stages": rows,
    }
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

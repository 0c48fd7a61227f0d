"""`exo2ego plan-memory`: per-GPU memory of a training stage at paper scale under a distributed strategy, the
cheapest setting that fits 80 GB and 141 GB cards (`train/memory_plan.py`; nothing runs on a GPU), and the
DataLoader workers one GPU needs to stay fed."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from exo2ego_base.command_line import add_command
from exo2ego_base.provenance import write_json_atomic

logger = logging.getLogger(__name__)

STRATEGY_CHOICES = ("ddp", "zero2", "fsdp2", "zero3")
CHECKPOINTING_CHOICES = ("none", "full")
# The peer anchor's training rate (LLaVA-NeXT-Video + LoRA, about 2.3 samples/s per H200); Exo2Ego's stages do more
# work per sample, so feeding this rate feeds them.
LOADER_TARGET_SAMPLES_PER_SEC = 2.3
# Samples/s of one loader worker at paper sizes (16 frames at 336 px from 448-px takes, decoded-clip cache off):
# benchmarks/results/input_pipeline.json, measured on a 2-core AMD EPYC (tests check the two agree).
LOADER_WORKER_SAMPLES_PER_SEC = {"2": 2.75, "3": 5.19}
LOADER_HEADROOM = 1.5


def loader_workers_per_gpu(target: float, worker_rate: float, headroom: float = LOADER_HEADROOM) -> int:
    """DataLoader workers that deliver `headroom` x `target` samples/s when each delivers `worker_rate`."""
    if target <= 0 or worker_rate <= 0 or headroom < 1:
        raise ValueError(
            f"need target > 0, worker rate > 0 and headroom >= 1 (got {target}, {worker_rate}, {headroom})"
        )
    return max(1, math.ceil(headroom * target / worker_rate))


@dataclass
class PlanMemoryArguments:
    """What ``exo2ego plan-memory`` takes: the stage and its distributed setting, the checkpointing modes and card
    sizes to plan for, and the DataLoader rates the worker count is worked out from."""

    stage: Literal["2", "3"] = field(metadata={"help": "training stage (paper scale, 16 frames)"})
    gpus: int = field(default=8, metadata={"help": "processes (GPUs) over all nodes"})
    batch: int = field(default=8, metadata={"help": "local batch per GPU (global = batch x gpus)"})
    strategy: str = field(
        default="fsdp2", metadata={"help": "distributed strategy the memory is shown for", "choices": STRATEGY_CHOICES}
    )
    checkpointing: list[str] = field(
        default_factory=lambda: list(CHECKPOINTING_CHOICES),
        metadata={
            "help": "none, or full (`--activation_checkpointing true`: CLIP, LLM and conv blocks)",
            "choices": CHECKPOINTING_CHOICES,
        },
    )
    frames: int = field(default=16, metadata={"help": "frames per video"})
    text_tokens: int = field(default=128, metadata={"help": "text tokens per sample (prompt + target)"})
    cards: list[float] = field(default_factory=lambda: [80, 141], metadata={"help": "card sizes in GB"})
    reserve_gib: float = field(default=8.0, metadata={"help": "head-room above the counted floor"})
    loader_target: float = field(
        default=LOADER_TARGET_SAMPLES_PER_SEC,
        metadata={"help": "samples/s one GPU trains on (the default is the peer anchor's rate on an H200)"},
    )
    worker_samples_per_sec: float | None = field(
        default=None,
        metadata={
            "help": "samples/s of one DataLoader worker on your node (python -m benchmarks.input_pipeline; "
            "unset: the committed measurement)"
        },
    )
    json: str | None = field(default=None, metadata={"help": "also write the plan as JSON here"})
    tiny: bool = field(default=False, metadata={"help": "the test-sized model instead of the paper's"})


def add_parser(subparsers) -> None:
    add_command(
        subparsers,
        "plan-memory",
        (PlanMemoryArguments,),
        run_plan_memory,
        help="per-GPU memory of a stage at paper scale per strategy; the cheapest setting that fits",
        description=" ".join(__doc__.split()),
    )


def run_plan_memory(args: PlanMemoryArguments) -> int:
    # Deferred, heavy: train.memory_plan builds the model with transformers; exo2ego --help imports this module.
    from train.memory_plan import MemoryPlanner

    planner = MemoryPlanner(args.stage, args.frames, args.text_tokens, scale="tiny" if args.tiny else "paper")
    plan = {
        "stage": args.stage,
        "gpus": args.gpus,
        "batch": args.batch,
        "global_batch": args.batch * args.gpus,
        "strategy": args.strategy,
        "per_gpu_gib": {},
        "cheapest_fit": {},
    }
    print(
        f"stage {args.stage}, {args.gpus} GPUs x local batch {args.batch}, {args.frames} frames, {args.strategy} "
        "(GiB per GPU; counted floor of the peak)"
    )
    for checkpointing in args.checkpointing:
        memory = planner.memory(args.batch, checkpointing, args.strategy, args.gpus)
        plan["per_gpu_gib"][checkpointing] = memory
        print(f"  checkpointing {checkpointing}:")
        for key, value in memory.items():
            print(f"    {key:<24} {value:8.2f}")
    for card in args.cards:
        fit = planner.cheapest_fit(args.batch, args.gpus, card, args.reserve_gib)
        plan["cheapest_fit"][f"{card:g}GB"] = fit
        if fit is None:
            print(f"{card:g} GB card: nothing fits, even at local batch 1 with full checkpointing and ZeRO-3")
            continue
        print(
            f"{card:g} GB card ({fit['capacity_gib']:.1f} GiB): train/accelerate/{fit['strategy']}.yaml, "
            f"--activation_checkpointing {str(fit['checkpointing'] == 'full').lower()}, "
            f"--per_device_train_batch_size {fit['per_device_train_batch_size']} "
            f"(gradient accumulation {fit['gradient_accumulation_steps']}): {fit['total_gib']:.1f} GiB "
            f"+ {fit['reserve_gib']:g} reserve"
        )
    worker_rate = args.worker_samples_per_sec or LOADER_WORKER_SAMPLES_PER_SEC[args.stage]
    workers = loader_workers_per_gpu(args.loader_target, worker_rate)
    plan["loader"] = {
        "target_samples_per_s": args.loader_target,
        "worker_samples_per_s": worker_rate,
        "headroom": LOADER_HEADROOM,
        "workers_per_gpu": workers,
    }
    source = "given" if args.worker_samples_per_sec else "benchmarks/results/input_pipeline.json"
    print(
        f"data loading: --dataloader_num_workers {workers} per GPU ({LOADER_HEADROOM:g} x {args.loader_target:g} "
        f"samples/s at {worker_rate:.2f} samples/s per worker, {source}; {workers * args.gpus} workers over "
        f"{args.gpus} GPUs, one CPU core each)"
    )
    if args.json:
        write_json_atomic(args.json, plan)
        logger.info("wrote %s", args.json)
    return 0

"""`exo2ego plan-memory`: per-GPU memory of a training stage at paper scale under a distributed strategy, the
cheapest setting that fits 80 GB and 141 GB cards (`train/memory_plan.py`; nothing runs on a GPU), and the
DataLoader workers one GPU needs to stay fed."""

from __future__ import annotations

import logging
import math

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


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan-memory",
        help="per-GPU memory of a stage at paper scale per strategy; the cheapest setting that fits",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--stage", required=True, choices=("2", "3"), help="training stage (paper scale, 16 frames)")
    parser.add_argument("--gpus", type=int, default=8, help="processes (GPUs) over all nodes")
    parser.add_argument("--batch", type=int, default=8, help="local batch per GPU (global = batch x gpus)")
    parser.add_argument("--strategy", choices=STRATEGY_CHOICES, default="fsdp2")
    parser.add_argument(
        "--checkpointing",
        choices=CHECKPOINTING_CHOICES,
        nargs="+",
        default=list(CHECKPOINTING_CHOICES),
        help="none, or full (`--activation_checkpointing true`: CLIP, LLM and conv blocks)",
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--text-tokens", type=int, default=128, help="text tokens per sample (prompt + target)")
    parser.add_argument("--cards", type=float, nargs="+", default=[80, 141], help="card sizes in GB")
    parser.add_argument("--reserve-gib", type=float, default=8.0, help="head-room above the counted floor")
    parser.add_argument(
        "--loader-target",
        type=float,
        default=LOADER_TARGET_SAMPLES_PER_SEC,
        help="samples/s one GPU trains on (default: the peer anchor's rate on an H200)",
    )
    parser.add_argument(
        "--worker-samples-per-sec",
        type=float,
        default=None,
        help="samples/s of one DataLoader worker on your node (python -m benchmarks.input_pipeline; default: the "
        "committed measurement)",
    )
    parser.add_argument("--json", default=None, help="also write the plan as JSON here")
    parser.add_argument("--tiny", action="store_true", help="the test-sized model instead of the paper's")
    parser.set_defaults(func=run_plan_memory)


def run_plan_memory(args) -> int:
    from exo2ego_base.provenance import write_json_atomic
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

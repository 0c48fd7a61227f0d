"""Will a training step fit the card? GPU memory of one step, counted without a GPU.

The model is built at paper scale on PyTorch's meta device (shapes only: no memory, no arithmetic), set up exactly as
`gpu_train_step.py` sets it up (stage, LoRA, checkpointing), and run forward once while a saved-tensor hook records
every tensor autograd keeps for backward. Memory of a step is then

    weights      every parameter, bf16 (frozen) / fp32 (trainable, with `--precision mixed`)
    grads        one per trainable parameter, in its dtype
    AdamW        two states per trainable parameter, in its dtype
    activations  distinct storages saved for backward at the end of the forward (parameters excluded), with the
                 inputs kept by checkpointed layers; attention counted as the flash kernel keeps it (q, k, v, out,
                 log-sum-exp), as on an H100/H200 with sdpa
    autocast     bf16 copies of fp32 trainable weights (`mixed`): the forward on meta runs all in bf16, so they are
                 added as 2 bytes per trainable weight

The sum is a floor for the allocator's peak: backward transients (one checkpointed layer's recompute, gradient
buffers of the largest layer), cuBLAS/cuDNN workspaces and fragmentation come on top (a few GiB). Compare with
`peak_mem_gib` from `gpu_train_step.py` on the card.

The counting lives in `train/memory_count.py` (shared with `exo2ego plan-memory`); this script adds the peer
(LLaVA-NeXT-Video + LoRA) and prints the breakdown.

    python -m benchmarks.gpu_memory [--workload stage3] [--batch 8] [--frames 16] [--checkpointing full]
                                    [--checkpoint-convnets] [--reduced | --tiny]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from benchmarks.flops import peer_video_tokens
from benchmarks.gpu_setup import ScaleArguments, apply_peer_training
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import package_versions, write_json_atomic
from train import memory_count
from train.memory_count import MetaSetup
from train.model_at_scale import CHECKPOINTING_MODES, PRECISIONS, ModelSize, build_model

WORKLOADS = ("peer", *memory_count.WORKLOADS)


def peer_setup(
    frames: int, scale: str, lora_r: int, lora_alpha: int, lora_dropout: float, dtype: torch.dtype
) -> MetaSetup:
    """The peer on the meta device with the peer script's LoRA set-up."""
    from transformers import LlavaNextVideoForConditionalGeneration

    config = ModelSize(scale).peer_config()
    meta = torch.device("meta")
    model = build_model(LlavaNextVideoForConditionalGeneration, config, meta, dtype, "sdpa")
    with torch.device(meta):
        model = apply_peer_training(model, lora_r, lora_alpha, lora_dropout)
    return MetaSetup(
        model,
        peer_video_tokens(config, frames),
        config.text_config.vocab_size,
        config.video_token_index,
        config.vision_config.image_size,
    )


def estimate(
    workload: str,
    batch: int,
    frames: int,
    text_tokens: int,
    checkpointing: str,
    checkpoint_every: int = 1,
    checkpoint_convnets: bool = False,
    precision: str = "mixed",
    scale: str = "paper",
    lora_r: int = 128,
    lora_alpha: int = 256,
    lora_dropout: float = 0.1,
    hf_input_grads: bool = False,
    dtype: torch.dtype = torch.bfloat16,
) -> dict:
    """`train.memory_count.estimate` for `workload`, the peer included; bytes in GiB."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    setup = peer_setup(frames, scale, lora_r, lora_alpha, lora_dropout, dtype) if workload == "peer" else None
    return memory_count.estimate(
        workload,
        batch,
        frames,
        text_tokens,
        checkpointing,
        checkpoint_every,
        checkpoint_convnets,
        precision,
        scale,
        lora_r,
        lora_alpha,
        lora_dropout,
        hf_input_grads,
        dtype,
        setup=setup,
    )


def print_estimate(result: dict) -> None:
    print(
        f"{result['workload']}: batch {result['batch']}, {result['frames']} frames, seq {result['seq_len']}, "
        f"{result['precision']} precision, checkpointing {result['checkpointing']}"
    )
    for key, value in result["static_gib"].items():
        print(f"  {key:<28} {value:8.2f} GiB")
    for key, value in result["activations_gib"].items():
        print(f"  activations: {key:<15} {value:8.2f} GiB")
    print(f"  {'total (floor of the peak)':<28} {result['total_gib']:8.2f} GiB")


@dataclass
class MemoryArguments(ScaleArguments):
    """The flags of `python -m benchmarks.gpu_memory`: one estimate per workload and checkpointing mode."""

    workload: list[str] = field(
        default_factory=lambda: ["stage3"], metadata={"choices": WORKLOADS, "help": "workloads to count"}
    )
    batch: int = field(default=8, metadata={"help": "local batch"})
    frames: int = field(default=16, metadata={"help": "frames per video"})
    text_tokens: int = field(default=128, metadata={"help": "text tokens per sample"})
    checkpointing: list[str] = field(
        default_factory=lambda: ["full", "llm", "none"],
        metadata={"choices": CHECKPOINTING_MODES, "help": "activation checkpointing modes, one estimate each"},
    )
    checkpoint_every: int = field(default=1, metadata={"help": "checkpoint every k-th layer (selective)"})
    checkpoint_convnets: bool = field(
        default=False, metadata={"help": "also checkpoint the connector's and mappings' blocks"}
    )
    hf_input_grads: bool = field(
        default=False,
        metadata={
            "help": "keep transformers' input-grad hooks on the towers' patch embeddings (today's Trainer behaviour)"
        },
    )
    precision: str = field(
        default="mixed",
        metadata={"choices": PRECISIONS, "help": "mixed: fp32 trainables + bf16 autocast; bf16: all bf16"},
    )
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout (paper: 0.1; 0 keeps no copies)"})
    out: str | None = field(default=None, metadata={"help": "write the estimates as JSON here"})


def main(argv=None) -> int:
    args = parse_script_arguments(MemoryArguments, argv, __doc__.splitlines()[0])

    results = []
    for workload in args.workload:
        for mode in args.checkpointing:
            result = estimate(
                workload,
                args.batch,
                args.frames,
                args.text_tokens,
                mode,
                args.checkpoint_every,
                args.checkpoint_convnets,
                args.precision,
                args.scale,
                lora_dropout=args.lora_dropout,
                hf_input_grads=args.hf_input_grads,
            )
            print_estimate(result)
            results.append(result)
    if args.out:
        payload = {
            "benchmark": "gpu_memory",
            "settings": args.settings(),
            # The count follows the model code of these packages (attention, PEFT wrappers): a version change moves it.
            "versions": package_versions(("torch", "transformers", "peft", "accelerate")),
            "results": results,
        }
        write_json_atomic(args.out, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training-step speed at the paper's scale, Exo2Ego stages 2 and 3 side by side with the peer, on one card.

In one run, on the same device: the dense bf16 matmul peak (the MFU denominator); the peer step a user would run
instead (transformers' LLaVA-NeXT-Video, LoRA r128 on the LLM, vision tower and projector trainable; the definition
of `../shared/bench/peer_llava_video_step.py`); Exo2Ego stage 2 (both towers, F, G, KL, CCL; LLM, exo tower and
connector frozen) and stage 3 (LoRA r128/alpha 256 on the LLM's linear layers + ego tower + F + connector), with the
trainable sets taken from `train/stages.py`; and stage 3 with full (B, L, V) logits, the before of "loss only at
labelled positions". For each: samples/s, model TFLOP/s, MFU (model FLOPs from `benchmarks/flops.py`, no recompute,
over the measured peak), peak memory, and the bytes autograd keeps for backward. Prints a table and writes JSON with
the card, versions and settings.

Random weights, nothing downloaded. On a GPU (the paper-scale numbers; see BENCHMARKS.md for the commands):

    python -m benchmarks.gpu_train_step --checkpointing full llm --compile vision
    python -m benchmarks.gpu_train_step --reduced          # CPU-sized configs: every code path, slowly
    python -m benchmarks.gpu_train_step --tiny             # test-sized

The peer is measured with the same precision, optimizer, attention and checkpointing settings as Exo2Ego.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

from benchmarks.flops import StepShape, exo2ego_step_flops, peer_script_formula, peer_step_flops, peer_video_tokens
from benchmarks.gpu_setup import (
    DeviceRunArguments,
    apply_peer_training,
    apply_precision,
    autocast_context,
    compile_modules,
    device_facts,
    free_memory,
    make_optimizer,
    matmul_peak_tflops,
    parameter_counts,
    start_run,
    synchronize,
)
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic
from train.memory_count import GIB, SavedActivationCounter
from train.model_at_scale import (
    CHECKPOINTING_MODES,
    PRECISIONS,
    ModelSize,
    apply_stage,
    build_model,
    configure_checkpointing,
    synthetic_batch,
)

WORKLOADS = ("peer", "stage2", "stage3", "stage3_full_logits")
DESCRIPTIONS = {
    "peer": "LLaVA-NeXT-Video + LoRA (peer)",
    "stage2": "Exo2Ego stage 2 (VTG+KL+CCL)",
    "stage3": "Exo2Ego stage 3 (LoRA)",
    "stage3_full_logits": "stage 3, full (B,L,V) logits",
}


@dataclass
class TrainStepArguments(DeviceRunArguments):
    """The flags of `python -m benchmarks.gpu_train_step`; the scale fills the sizes left unset."""

    workloads: list[str] = field(
        default_factory=lambda: list(WORKLOADS), metadata={"choices": WORKLOADS, "help": "workloads to measure"}
    )
    batch: int | None = field(default=None, metadata={"help": "local batch (default 8; reduced 2; tiny 1)"})
    frames: int | None = field(default=None, metadata={"help": "frames per video (default 16; reduced 8; tiny 4)"})
    text_tokens: int | None = field(
        default=None, metadata={"help": "text tokens per sample, 4 prompt + targets (default 128; tiny 24)"}
    )
    steps: int | None = field(default=None, metadata={"help": "timed steps (default 5; reduced 3; tiny 1)"})
    warmup: int | None = field(default=None, metadata={"help": "untimed steps first (default 2; 3 with --compile)"})
    checkpointing: list[str] = field(
        default_factory=lambda: ["full"],
        metadata={
            "choices": CHECKPOINTING_MODES,
            "help": "activation checkpointing modes to measure, each one a row per workload",
        },
    )
    checkpoint_every: int = field(default=1, metadata={"help": "checkpoint every k-th layer (selective)"})
    checkpoint_convnets: bool = field(
        default=True,
        metadata={"help": "also checkpoint the connector's and mappings' blocks (needed to fit batch 8 in 80 GB)"},
    )
    hf_input_grads: bool = field(
        default=False,
        metadata={
            "help": "keep transformers' input-grad hooks on the towers' patch embeddings (today's Trainer "
            "behaviour: the frozen exo tower then runs a backward)"
        },
    )
    compile: Literal["none", "vision", "all"] = field(
        default="none",
        metadata={"help": "torch.compile the towers/mappings/connector (vision) and also the decoder layers (all)"},
    )
    precision: str = field(
        default="mixed",
        metadata={
            "choices": PRECISIONS,
            "help": "mixed: fp32 trainables + bf16 autocast; bf16: all bf16 (the peer script's)",
        },
    )
    lora_r: int = field(default=128, metadata={"help": "LoRA rank of stage 3 and the peer"})
    lora_alpha: int = field(default=256, metadata={"help": "LoRA alpha of stage 3 and the peer"})
    lora_dropout: float = field(default=0.1, metadata={"help": "LoRA dropout of stage 3 and the peer"})
    no_activation_count: bool = field(default=False, metadata={"help": "skip the saved-activation counting pass"})
    peak_size: int | None = field(
        default=None, metadata={"help": "matmul size for the peak (default 8192 GPU, 1024 CPU)"}
    )
    out: str | None = field(
        default=None, metadata={"help": "JSON path (default benchmarks/results/gpu_train_step[_reduced].json)"}
    )

    def __post_init__(self):
        super().__post_init__()
        self.batch = self.batch or self.scale_default(8, 2, 1)
        self.frames = self.frames or self.scale_default(16, 8, 4)
        self.text_tokens = self.text_tokens or self.scale_default(128, 128, 24)
        self.steps = self.steps or self.scale_default(5, 3, 1)
        if self.warmup is None:
            self.warmup = 3 if self.compile != "none" else self.scale_default(2, 2, 1)
        self.out = self.out or f"benchmarks/results/gpu_train_step{self.scale_default('', '_reduced', '_tiny')}.json"


def parse_args(argv=None) -> TrainStepArguments:
    return parse_script_arguments(TrainStepArguments, argv, __doc__.splitlines()[0])


# ---------------------------------------------------------------------------------------------------------------------
# Losses per workload (what train/trainer.py computes for one micro-batch without gradient accumulation)
# ---------------------------------------------------------------------------------------------------------------------


def peer_loss(model, batch):
    return model(**batch, use_cache=False).loss


def stage2_loss(model, batch, full_logits: bool = False):
    from train.losses import cycle_consistency_loss, kl_alignment_loss

    out = model(**batch, use_cache=False, output_mapping_features=True, skip_logits=not full_logits)
    # The stage-2 default: per-sample Gaussian KL over each clip's frames.
    kl = kl_alignment_loss(
        out.exo_features, out.ego_to_exo, mode="gaussian", frames_per_clip=batch["pixel_values_videos"].shape[1]
    )
    ccl = cycle_consistency_loss(out.ego_features, out.ego_cycle, out.exo_features, out.exo_cycle)
    return out.loss + kl + ccl


def stage3_loss(model, batch, full_logits: bool = False):
    return model(**batch, use_cache=False, skip_logits=not full_logits).loss


# ---------------------------------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------------------------------


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(error).lower()


def measure(model, batch, loss_fn, device: torch.device, warmup: int, steps: int, count_activations: bool) -> dict:
    """Median step time of `steps` optimizer steps after `warmup` ones, peak memory, and one extra forward that counts
    what autograd saves for backward."""
    optimizer = make_optimizer(model, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        with autocast_context(device):
            loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    try:
        for _ in range(warmup):
            step()
        synchronize(device)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            loss = step()
            synchronize(device)
            times.append(time.perf_counter() - start)
        result = {"status": "ok", "step_s": statistics.median(times), "step_s_all": times, "last_loss": float(loss)}
        if device.type == "cuda":
            result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / GIB
            result["reserved_gib"] = torch.cuda.max_memory_reserved(device) / GIB
        if count_activations:
            with SavedActivationCounter(model) as counter, autocast_context(device):
                loss = loss_fn(model, batch)
                saved = counter.live_bytes()
            del loss
            result["saved_activations_gib"] = sum(saved.values()) / GIB
            result["saved_activations_by_module_gib"] = {
                k: v / GIB for k, v in sorted(saved.items(), key=lambda kv: -kv[1])
            }
        return result
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        return {"status": "oom", "error": str(error).splitlines()[0][:200]}
    finally:
        optimizer.zero_grad(set_to_none=True)
        optimizer.state.clear()  # the moments are what takes memory; `step` above still refers to the optimizer
        free_memory()


def finish_row(row: dict, step_flops, peak_tflops: float) -> dict:
    """Add throughput, model TFLOP/s and MFU to a measured row."""
    row["model_tflop_per_step"] = step_flops.total / 1e12
    row["flops"] = step_flops.as_dict()
    if row["status"] == "ok":
        row["samples_per_s"] = row["batch"] / row["step_s"]
        row["model_tflops"] = step_flops.total / row["step_s"] / 1e12
        row["mfu"] = row["model_tflops"] / peak_tflops
    return row


def run_peer(args, size: ModelSize, device, dtype, peak_tflops: float) -> list[dict]:
    from transformers import LlavaNextVideoForConditionalGeneration

    config = size.peer_config()
    start = time.perf_counter()
    model = build_model(LlavaNextVideoForConditionalGeneration, config, device, dtype, args.attn)
    build_s = time.perf_counter() - start
    # The peer script's parameter counts, taken before LoRA adds "language_model" names of its own.
    n_llm = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n or "lm_head" in n)
    n_vision = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n)
    model = apply_peer_training(model, args.lora_r, args.lora_alpha, args.lora_dropout)
    apply_precision(model, args.precision, device)
    model.train()
    compiled = compile_modules(model, args.compile, args.compile_backend)
    shape = StepShape(args.batch, args.frames, args.text_tokens)
    video_tokens = peer_video_tokens(config, args.frames)
    batch = synthetic_batch(
        config.text_config.vocab_size,
        config.video_token_index,
        video_tokens,
        args.batch,
        args.frames,
        config.vision_config.image_size,
        args.text_tokens,
        device,
        dtype,
        seed=args.seed,
    )
    step_flops = peer_step_flops(config, args.lora_r, shape)
    executed = peer_step_flops(config, args.lora_r, shape, include_waste=True)
    patches = (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    script_flops = peer_script_formula(n_llm, n_vision, config.text_config, shape, step_flops.seq_len, patches)
    rows = []
    for mode in args.checkpointing:
        summary = configure_checkpointing(model, mode, args.checkpoint_every, False, args.hf_input_grads)
        row = {
            "workload": "peer",
            "description": DESCRIPTIONS["peer"],
            "checkpointing": summary,
            "batch": args.batch,
            "frames": args.frames,
            "seq_len": step_flops.seq_len,
            "params_m": parameter_counts(model),
            "build_s": build_s,
            "compiled": compiled,
        }
        row.update(measure(model, batch, peer_loss, device, args.warmup, args.steps, not args.no_activation_count))
        row["executed_tflop_per_step"] = executed.total / 1e12
        row["peer_script_formula_tflop_per_step"] = script_flops / 1e12
        if row["status"] == "ok":
            row["mfu_peer_script_formula"] = script_flops / row["step_s"] / 1e12 / peak_tflops
        rows.append(finish_row(row, step_flops, peak_tflops))
        print_row(rows[-1])
    del model, batch
    free_memory(drop_compiled=True)
    return rows


def run_exo2ego(args, size: ModelSize, device, dtype, peak_tflops: float) -> list[dict]:
    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    config = size.exo2ego_config(args.frames)
    start = time.perf_counter()
    model = build_model(Exo2EgoForConditionalGeneration, config, device, dtype, args.attn)
    build_s = time.perf_counter() - start
    shape = StepShape(args.batch, args.frames, args.text_tokens)
    video_tokens = 2 * config.tokens_per_stream(args.frames)
    image_size = config.ego_vision_config.image_size
    rows = []
    stages = [("stage2", "stage2", False)] if "stage2" in args.workloads else []
    stages += [
        (name, "stage3", name.endswith("full_logits"))
        for name in ("stage3", "stage3_full_logits")
        if name in args.workloads
    ]
    compiled = compile_modules(model, args.compile, args.compile_backend)
    current_stage = None
    for workload, stage, full_logits in stages:
        if stage != current_stage:
            model = model.to(dtype)  # the previous stage's fp32 trainables back to bf16 before the next stage's set-up
            model, resolved = apply_stage(model, stage, args.lora_r, args.lora_alpha, args.lora_dropout)
            apply_precision(model, args.precision, device)
            model.train()
            current_stage = stage
        batch = synthetic_batch(
            config.text_config.vocab_size,
            config.video_token_id,
            video_tokens,
            args.batch,
            args.frames,
            image_size,
            args.text_tokens,
            device,
            dtype,
            exo=stage == "stage2",
            seed=args.seed,
        )
        lora_r = args.lora_r if resolved.lora else 0
        step_flops = exo2ego_step_flops(
            config, resolved.trainable, resolved.losses, lora_r, shape, full_logits=full_logits
        )
        executed = exo2ego_step_flops(
            config,
            resolved.trainable,
            resolved.losses,
            lora_r,
            shape,
            full_logits=full_logits,
            include_waste=True,
            hf_input_grads=args.hf_input_grads,
        )
        loss_fn = stage2_loss if stage == "stage2" else stage3_loss

        def loss(model, batch, loss_fn=loss_fn, full_logits=full_logits):
            return loss_fn(model, batch, full_logits=full_logits)

        for mode in args.checkpointing:
            summary = configure_checkpointing(
                model, mode, args.checkpoint_every, args.checkpoint_convnets, args.hf_input_grads
            )
            row = {
                "workload": workload,
                "description": DESCRIPTIONS[workload],
                "checkpointing": summary,
                "batch": args.batch,
                "frames": args.frames,
                "seq_len": step_flops.seq_len,
                "trainable_modules": sorted(resolved.trainable),
                "losses": sorted(resolved.losses),
                "lora": resolved.lora,
                "params_m": parameter_counts(model),
                "build_s": build_s,
                "compiled": compiled,
            }
            row.update(measure(model, batch, loss, device, args.warmup, args.steps, not args.no_activation_count))
            row["executed_tflop_per_step"] = executed.total / 1e12
            rows.append(finish_row(row, step_flops, peak_tflops))
            print_row(rows[-1])
        del batch
    del model
    free_memory(drop_compiled=True)
    return rows


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------

HEADER = (
    f"{'workload':<32} {'ckpt':<5} {'batch':>5} {'seq':>5} {'step s':>8} {'samples/s':>9} {'TFLOP/s':>8} {'MFU':>6} "
    f"{'peak GiB':>8} {'saved GiB':>9}"
)


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def print_row(row: dict) -> None:
    mode = row["checkpointing"]["mode"]
    if row["status"] != "ok":
        print(f"{row['description']:<32} {mode:<5} {row['batch']:>5} {row['seq_len']:>5} {row['status'].upper():>8}")
        return
    print(
        f"{row['description']:<32} {mode:<5} {row['batch']:>5} {row['seq_len']:>5} {row['step_s']:>8.3f} "
        f"{row['samples_per_s']:>9.2f} {row['model_tflops']:>8.2f} {_fmt(100 * row['mfu'], '5.1f'):>5}% "
        f"{_fmt(row.get('peak_mem_gib'), '8.1f'):>8} {_fmt(row.get('saved_activations_gib'), '9.3f'):>9}"
    )


def ratios(rows: list[dict]) -> dict:
    """Same-run ratios per checkpointing mode: Exo2Ego over the peer (MFU), and full logits over labelled-only."""
    result = {}
    by_key = {(r["workload"], r["checkpointing"]["mode"]): r for r in rows if r["status"] == "ok"}
    for (workload, mode), row in by_key.items():
        peer = by_key.get(("peer", mode))
        if peer and workload != "peer":
            result[f"{workload}_mfu_over_peer[{mode}]"] = row["mfu"] / peer["mfu"]
        labelled = by_key.get(("stage3", mode))
        if workload == "stage3_full_logits" and labelled:
            result[f"full_logits_step_time_over_labelled[{mode}]"] = row["step_s"] / labelled["step_s"]
            if "saved_activations_gib" in row and "saved_activations_gib" in labelled:
                result[f"full_logits_saved_activations_over_labelled[{mode}]"] = (
                    row["saved_activations_gib"] / labelled["saved_activations_gib"]
                )
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    device, dtype = start_run(args)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # the paper's bf16 + tf32
        torch.backends.cudnn.allow_tf32 = True
    size = ModelSize(args.scale)
    facts = device_facts(device)
    peak = matmul_peak_tflops(device, dtype, args.peak_size)
    print(
        f"{args.scale}-scale configs on {facts['device_name']} ({device.type}); "
        f"measured {str(dtype).removeprefix('torch.')} matmul peak {peak:.2f} TFLOP/s"
    )
    print(HEADER)
    rows = []
    if "peer" in args.workloads:
        rows += run_peer(args, size, device, dtype, peak)
    if any(w != "peer" for w in args.workloads):
        rows += run_exo2ego(args, size, device, dtype, peak)
    payload = {
        "benchmark": "gpu_train_step",
        "scale": args.scale,
        **facts,
        "dtype": str(dtype).removeprefix("torch."),
        "peak_matmul_tflops": peak,
        "settings": args.settings(),
        "results": rows,
        "ratios": ratios(rows),
    }
    for name, value in payload["ratios"].items():
        print(f"{name}: {value:.3f}")
    write_json_atomic(args.out, payload)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-GPU memory of each distributed strategy and the cheapest setting that fits a card: the planner behind
`exo2ego plan-memory` (`train/cli.py`; nothing runs on a GPU).

`MemoryPlanner` takes the single-GPU count of a stage's step (`train.memory_count.estimate`, made once per local batch
and checkpointing setting) and `per_gpu_memory` applies the sharding of DDP, ZeRO-2, FSDP2 and ZeRO-3 on N GPUs to
it; `cheapest_fit` walks local batch, checkpointing and strategy, cheapest first, until the count plus a reserve fits
an 80 GB or 141 GB card. See `train/README.md` ("Distributed training and memory").
"""

from __future__ import annotations

from train.memory_count import GIB, estimate

# Cheapest first: DDP and ZeRO-2 move the gradients once per step; FSDP2 and ZeRO-3 also gather the weights in forward
# and backward (FSDP2 first: it is the one verified here, on CPU processes).
STRATEGIES = ("ddp", "zero2", "fsdp2", "zero3")
# What the stage scripts can switch: `--activation_checkpointing false | true` (true: every CLIP encoder layer, LLM
# decoder layer, connector bottleneck and mapping block, i.e. BENCHMARKS.md's `full` + conv blocks). Cheapest first.
TRAINING_CHECKPOINTING = {"none": ("none", False), "full": ("full", True)}
# Backward transients (one checkpointed LLM layer's recompute is ~7 GiB at batch 8), workspaces, fragmentation.
DEFAULT_RESERVE_GIB = 8.0
PLAN_STAGES = {"2": "stage2", "3": "stage3"}


def per_gpu_memory(step: dict, strategy: str, gpus: int) -> dict[str, float]:
    """GiB per GPU of a step counted by `estimate` (one GPU holding everything) under `strategy` on `gpus` GPUs.

    - `ddp`: everything replicated;
    - `zero2`: gradients and AdamW states sharded, weights replicated;
    - `fsdp2`, `zero3`: weights sharded too; the bf16 autocast copies are replaced by the gathered bf16 weights of
      what is unsharded at once: everything outside the wrapped layers (the root group stays gathered through the
      step) and two layers (the one running and the one prefetched).
    Activations depend on the local batch only. Dtypes as counted (`mixed`: fp32 trainables, grads, AdamW states).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    memory = dict(step["static_gib"])
    if strategy != "ddp":
        memory["grads"] /= gpus
        memory["adamw_states"] /= gpus
    if strategy in ("fsdp2", "zero3"):
        memory["weights_frozen_bf16"] /= gpus
        memory["weights_trainable"] /= gpus
        del memory["autocast_weight_copies"]
        units = step["shard_units_m"]
        memory["gathered_bf16_weights"] = 2e6 * (units["outside_units"] + 2 * units["largest_unit"]) / GIB
    memory["activations"] = step["activations_total_gib"]
    memory["total"] = sum(memory.values())
    return memory


def gib_of_card(card_gb: float) -> float:
    """A card's memory in GiB (cards are sold in GB: 80 GB = 74.5 GiB)."""
    return card_gb * 1e9 / GIB


class MemoryPlanner:
    """Per-GPU memory of a stage at paper scale for every strategy, checkpointing setting and local batch; each
    meta-device count (about 15 s at paper scale) is made once and reused."""

    def __init__(self, stage: str, frames: int = 16, text_tokens: int = 128, scale: str = "paper", **estimate_kwargs):
        if stage not in PLAN_STAGES:
            raise ValueError(
                f"stage must be one of {sorted(PLAN_STAGES)} (the planner counts stages 2 and 3), got {stage!r}"
            )
        self.workload = PLAN_STAGES[stage]
        self.frames, self.text_tokens, self.scale = frames, text_tokens, scale
        self.estimate_kwargs = estimate_kwargs
        self._steps: dict[tuple[int, str], dict] = {}

    def step(self, batch: int, checkpointing: str) -> dict:
        if checkpointing not in TRAINING_CHECKPOINTING:
            raise ValueError(f"checkpointing must be one of {sorted(TRAINING_CHECKPOINTING)}, got {checkpointing!r}")
        key = (batch, checkpointing)
        if key not in self._steps:
            mode, convnets = TRAINING_CHECKPOINTING[checkpointing]
            self._steps[key] = estimate(
                self.workload,
                batch,
                self.frames,
                self.text_tokens,
                mode,
                checkpoint_convnets=convnets,
                scale=self.scale,
                **self.estimate_kwargs,
            )
        return self._steps[key]

    def memory(self, batch: int, checkpointing: str, strategy: str, gpus: int) -> dict[str, float]:
        return per_gpu_memory(self.step(batch, checkpointing), strategy, gpus)

    def cheapest_fit(
        self, batch: int, gpus: int, card_gb: float, reserve_gib: float = DEFAULT_RESERVE_GIB
    ) -> dict | None:
        """The cheapest setting whose counted floor plus `reserve_gib` fits the card: the largest local batch (halving
        `batch`, gradient accumulation keeping the global batch), then no checkpointing before full, then DDP, ZeRO-2,
        FSDP2, ZeRO-3. None when nothing fits even at local batch 1."""
        capacity = gib_of_card(card_gb)
        local = batch
        while local >= 1:
            for checkpointing in TRAINING_CHECKPOINTING:
                for strategy in STRATEGIES:
                    total = self.memory(local, checkpointing, strategy, gpus)["total"]
                    if total + reserve_gib <= capacity:
                        return {
                            "card_gb": card_gb,
                            "strategy": strategy,
                            "checkpointing": checkpointing,
                            "per_device_train_batch_size": local,
                            "gradient_accumulation_steps": batch // local,
                            "total_gib": total,
                            "capacity_gib": capacity,
                            "reserve_gib": reserve_gib,
                        }
            if local == 1 or batch % (local // 2):
                break
            local //= 2
        return None

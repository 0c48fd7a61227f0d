"""`Exo2EgoTrainer`: a `transformers.Trainer` whose loss follows the stage table.

Why `Trainer` and not TRL's `SFTTrainer` (see `train/README.md`): SFTTrainer's VLM path is image-only, and its
stock loss patches the model with a fused LM head that keeps only `last_hidden_state`, dropping the feature grids
the stage-2 KL and cycle losses need; its dataset preparation must be switched off for video anyway, and `SFTConfig`
defaults (bf16 on, gradient checkpointing on, lr 2e-5, `max_length=1024`, which would cut visual tokens) differ from
every stage here. What is left of SFTTrainer (chat-template tokenization, completion-only masking) is the video
collator's job, so `Trainer` is the smaller, clearer base.

Loss (stage 2): `VTG + kl_weight * KL + ccl_weight * CCL`; every term is logged separately into the log history
(`vtg_loss`, `kl_loss`, `ccl_loss`; `vtg_exo_loss` / `vtg_ego_loss` in the two-branch init stage). The stage table
says which terms apply; the training arguments own their weights and the KL's form (`kl_mode`: per-sample Gaussian
KL by default; `kl_temperature`; `kl_gather_statistics`: `gaussian_batch` statistics over the micro-batch of all
data-parallel ranks).

Gradient accumulation: VTG is a token sum divided by the number of target tokens of the whole accumulated batch
(over all ranks), and KL/CCL are per-micro-batch means divided by the accumulation steps, so `k` micro-batches of
size `b` give the gradient of one batch of size `k*b` (`loss_is_scaled_for_ga = True` tells Trainer not to divide
again). The exception is `kl_mode="gaussian_batch"`, whose moments cover one micro-batch, not the accumulated batch.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from exo2ego_base.provenance import write_json_atomic
from exo2ego_base.run_folder import STAGING_NAME
from train.data import FailureTracker
from train.distributed import (
    enable_fsdp_on_cpu,
    gather_trainable_state,
    load_full_state,
    plain_class,
)
from train.losses import KL_MODES, cycle_consistency_loss, kl_alignment_loss
from train.stages import ResolvedStage

# Trainable parameters outside the LoRA adapter of a PEFT model (ego tower, F, connector in stage 3).
NON_LORA_WEIGHTS_NAME = "non_lora_trainables.safetensors"
# Unreadable-video counts per process at the checkpoint, so a resumed run keeps its count and its budget.
FAILED_VIDEOS_NAME = "failed_videos.json"

# Learning-rate groups: argument name -> parameter-name pattern (checked in this order; the rest uses learning_rate).
LR_GROUP_PATTERNS = (
    ("lora_lr", re.compile(r"\.lora_")),
    ("vision_tower_lr", re.compile(r"(^|\.)(ego|exo)_vision_tower\.")),
    ("mapping_lr", re.compile(r"(^|\.)(ego_to_exo|exo_to_ego)\.")),
    ("connector_lr", re.compile(r"(^|\.)connector\.")),
)


@dataclass
class Exo2EgoTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the paper's optimisation defaults (AdamW, weight decay 0.02, cosine schedule) and
    the Exo2Ego additions: loss weights, per-module learning rates, a global batch size and the tolerated share of
    unreadable videos."""

    weight_decay: float = field(default=0.02, metadata={"help": "AdamW weight decay (paper: 0.02)."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Learning-rate schedule (paper: cosine)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept off: the collator needs every field."})
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "Off: the stage table freezes every parameter its losses cannot reach."},
    )
    kl_weight: float = field(default=1.0, metadata={"help": "Weight of the stage-2 KL alignment loss (0 removes it)."})
    ccl_weight: float = field(default=1.0, metadata={"help": "Weight of the stage-2 cycle loss (0 removes it and G)."})
    kl_mode: str = field(
        default="gaussian",
        metadata={
            "help": "Form of the stage-2 KL: gaussian (paper default: per ego-exo pair, per-channel moments over each "
            "clip's tokens) | gaussian_batch (moments over the micro-batch, pairing ignored) | token_softmax | pooled."
        },
    )
    kl_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of token_softmax / pooled KL."})
    kl_gather_statistics: bool = field(
        default=True,
        metadata={
            "help": "gaussian_batch only: moments over the tokens of all data-parallel ranks (a small all-gather)."
        },
    )
    vision_tower_lr: float | None = field(
        default=None, metadata={"help": "LR of the vision towers (default: learning_rate)."}
    )
    mapping_lr: float | None = field(
        default=None, metadata={"help": "LR of the mappings F and G (default: learning_rate)."}
    )
    connector_lr: float | None = field(
        default=None, metadata={"help": "LR of the STC connector (default: learning_rate)."}
    )
    lora_lr: float | None = field(default=None, metadata={"help": "LR of the LoRA adapters (default: learning_rate)."})
    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "Samples per optimizer step over all processes; sets gradient_accumulation_steps."},
    )
    max_failed_fraction: float = field(
        default=0.01, metadata={"help": "Stop once more than this fraction of samples had unreadable videos."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.kl_mode not in KL_MODES:
            raise ValueError(f"kl_mode must be one of {KL_MODES}, got {self.kl_mode!r}")
        if self.kl_temperature <= 0:
            raise ValueError(f"kl_temperature must be > 0, got {self.kl_temperature}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be > 0, or -1 to train num_train_epochs epochs, got {self.max_steps}")
        if self.global_batch_size is not None:
            per_step = self.per_device_train_batch_size * self.world_size
            if self.global_batch_size % per_step:
                raise ValueError(
                    f"global_batch_size={self.global_batch_size} is not a multiple of per_device_train_batch_size "
                    f"({self.per_device_train_batch_size}) x processes ({self.world_size})"
                )
            self.gradient_accumulation_steps = self.global_batch_size // per_step
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")


class _DatasetEpochCallback(TrainerCallback):
    """Tells the training dataset the epoch, so its exo-camera draw changes per epoch (accelerate's seedable
    sampler takes `set_epoch` for itself and does not forward it to the dataset)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(math.floor((state.epoch or 0) + 1e-9))


class Exo2EgoTrainer(Trainer):
    """Trainer for one row of the stage table.

    Args:
        stage: the resolved stage (`train.stages.resolve_stage`): branches, loss terms and weights.
        *args, **kwargs: as for `transformers.Trainer` (`args` an `Exo2EgoTrainingArguments`).
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, stage: ResolvedStage, **kwargs):
        self.stage = stage
        super().__init__(*args, **kwargs)
        self._term_sums: dict[str, torch.Tensor] = {}
        self._term_weights: dict[str, torch.Tensor] = {}
        self._staging_run_dir: str | None = None
        self.failures = FailureTracker(
            self.args.max_failed_fraction,
            len(self.train_dataset) if self.train_dataset is not None else 0,
            self.args.world_size,
        )
        self.failed_videos_total: int | None = None  # over all processes, set when train() returns
        if hasattr(self.train_dataset, "set_epoch"):
            self.add_callback(_DatasetEpochCallback(self.train_dataset))

    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        if enable_fsdp_on_cpu(self.accelerator):  # accelerate enables FSDP on accelerators only
            self.is_fsdp_enabled = True

    # ---- batches -------------------------------------------------------------------------------------------------

    def branch_inputs(self, inputs: dict) -> dict[str, dict]:
        """{branch: model inputs}: a single-branch batch is flat, a multi-branch batch is keyed by branch."""
        if len(self.stage.branches) == 1:
            return {self.stage.branches[0]: {k: v for k, v in inputs.items() if k != "failed_videos"}}
        return {branch: inputs[branch] for branch in self.stage.branches}

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> dict[str, torch.Tensor] | None:
        """Target tokens per branch over all micro-batches of this optimizer step (and all ranks)."""
        counts: dict[str, torch.Tensor] = {}
        for batch in batch_samples:
            for branch, inputs in self.branch_inputs(batch).items():
                tokens = inputs["labels"][..., 1:].ne(-100).sum()  # labels are shifted inside the model
                counts[branch] = counts.get(branch, 0) + tokens
        for branch, count in counts.items():
            count = count.to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
            counts[branch] = count
        return counts or None

    def floating_point_ops(self, inputs: dict) -> int:
        return sum(
            super(Exo2EgoTrainer, self).floating_point_ops(batch) for batch in self.branch_inputs(inputs).values()
        )

    # ---- loss ----------------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        failed = inputs.get("failed_videos")
        if failed is not None and model.training:
            self.failures.add(int(failed))
        counts = num_items_in_batch if isinstance(num_items_in_batch, dict) else {}
        accumulation = getattr(self, "current_gradient_accumulation_steps", 1) if counts else 1
        # With token averaging across ranks each rank divides by the global count; DDP then averages gradients,
        # so the VTG term is scaled back by the number of processes (as Trainer does for its own loss).
        rank_scale = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        multi = len(self.stage.branches) > 1
        total, outputs = 0.0, None
        for branch, batch in self.branch_inputs(inputs).items():
            mapping = branch == "pair" and self.stage.needs_mapping_features
            extra = {"num_items_in_batch": counts[branch]} if branch in counts else {}
            outputs = model(**batch, use_cache=False, output_mapping_features=mapping, **extra)
            vtg = outputs.loss
            # Logged as a token-weighted mean over micro-batches and ranks: the token mean of the whole batch.
            local_tokens = batch["labels"][..., 1:].ne(-100).sum().clamp(min=1)
            if branch in counts:
                total = total + vtg * rank_scale
                # This micro-batch's own token mean, not its share of the accumulated sum.
                local_mean = vtg.detach() * counts[branch] / local_tokens
            else:
                total = total + vtg
                local_mean = vtg.detach()
            self._record(f"vtg_{branch}_loss" if multi else "vtg_loss", local_mean, weight=local_tokens)
            if not mapping:
                continue
            if "kl" in self.stage.losses:
                # The teacher target is fixed unless the exo tower trains (Table 8 #2), then it gets a KL gradient too.
                kl = kl_alignment_loss(
                    outputs.exo_features,
                    outputs.ego_to_exo,
                    mode=self.args.kl_mode,
                    temperature=self.args.kl_temperature,
                    detach_target="exo_vision_tower" not in self.stage.trainable,
                    gather_statistics=self.args.kl_gather_statistics,
                    frames_per_clip=batch["pixel_values_videos"].shape[1],  # (B, T, 3, H, W)
                )
                total = total + self.stage.loss_weights["kl"] * kl / accumulation
                self._record("kl_loss", kl.detach())
            if "ccl" in self.stage.losses:
                ccl = cycle_consistency_loss(
                    outputs.ego_features, outputs.ego_cycle, outputs.exo_features, outputs.exo_cycle
                )
                total = total + self.stage.loss_weights["ccl"] * ccl / accumulation
                self._record("ccl_loss", ccl.detach())
        return (total, outputs) if return_outputs else total

    def _record(self, name: str, value: torch.Tensor, weight: torch.Tensor | float = 1.0) -> None:
        """Add one micro-batch's loss term with its weight (target tokens for VTG, 1 for the per-batch means)."""
        if not self.model.training:
            return
        weight = torch.as_tensor(weight, dtype=torch.float32, device=value.device)
        self._term_sums[name] = self._term_sums.get(name, 0) + value.float() * weight
        self._term_weights[name] = self._term_weights.get(name, 0) + weight

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Merge the weighted per-term means since the last log into training logs. Sums and weights are summed
        over ranks before dividing (the same reduction under DDP, FSDP and DeepSpeed), so with the same global batch
        a multi-process run logs what one process would."""
        if "loss" in logs and self._term_sums:
            names = sorted(self._term_sums)
            sums = torch.stack(
                [self._term_sums[name] for name in names] + [self._term_weights[name] for name in names]
            )
            sums = self.accelerator.reduce(sums.to(self.args.device), reduction="sum")
            means = sums[: len(names)] / sums[len(names) :]
            logs.update({name: round(value, 6) for name, value in zip(names, means.tolist())})
            self._term_sums.clear()
            self._term_weights.clear()
            failed = torch.tensor(self.failures.failed, device=self.args.device)
            logs["failed_videos"] = int(self.accelerator.reduce(failed, reduction="sum"))  # all ranks, so far
        super().log(logs, start_time)

    # ---- optimizer -----------------------------------------------------------------------------------------------

    def create_optimizer(self, model=None):
        """AdamW over the trainable parameters in groups: (vision towers | mappings | connector | LoRA | rest) x
        (decay | no decay); a group's `lr` is its `*_lr` argument when set."""
        if self.optimizer is not None:
            return self.optimizer
        opt_model = self.model if model is None else model
        decay_names = set(self.get_decay_parameter_names(opt_model))
        groups: dict[tuple[str, bool], dict] = {}
        for name, parameter in opt_model.named_parameters():
            if not parameter.requires_grad:
                continue
            group_name = next((arg for arg, pattern in LR_GROUP_PATTERNS if pattern.search(name)), "learning_rate")
            decays = name in decay_names
            if (group_name, decays) not in groups:
                group = {"params": [], "weight_decay": self.args.weight_decay if decays else 0.0}
                group["group_name"] = f"{group_name.removesuffix('_lr')}/{'decay' if decays else 'no_decay'}"
                learning_rate = getattr(self.args, group_name)
                if learning_rate is not None:
                    group["lr"] = learning_rate
                groups[(group_name, decays)] = group
            groups[(group_name, decays)]["params"].append(parameter)
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)
        return self.optimizer

    # ---- checkpoints ---------------------------------------------------------------------------------------------

    def _failed_per_process(self) -> list[int]:
        """Every process's unreadable-video count (a collective: all processes call it)."""
        failed = torch.tensor([self.failures.failed], device=self.args.device)
        return [int(value) for value in self.accelerator.gather(failed).tolist()]

    def train(self, *args, **kwargs):
        output = super().train(*args, **kwargs)
        self.failed_videos_total = sum(self._failed_per_process())
        return output

    def _get_output_dir(self, trial) -> str:
        return self._staging_run_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model, trial) -> None:
        """Write the checkpoint into the run folder's staging folder (`<output_dir>/.staging/`) and rename it into
        place once complete, so a run killed while saving never leaves a `checkpoint-N` folder that
        `--resume_from_checkpoint` would pick up."""
        run_dir = super()._get_output_dir(trial)
        staging = os.path.join(run_dir, STAGING_NAME)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # leftovers of a save that was killed
        self.accelerator.wait_for_everyone()
        failed = self._failed_per_process()
        self._staging_run_dir = staging
        try:
            super()._save_checkpoint(model, trial)
            if self.is_fsdp_enabled and hasattr(self.model, "peft_config"):
                # Trainer's sharded FSDP checkpoint of a PEFT model holds the adapter only (accelerate's adapter_only).
                self._save_non_lora_trainables(os.path.join(staging, name), gather_trainable_state(self.model))
        finally:
            self._staging_run_dir = None
        self.accelerator.wait_for_everyone()  # every rank has written its RNG state
        if self.args.should_save:
            write_json_atomic(
                os.path.join(staging, name, FAILED_VIDEOS_NAME), {"per_process": failed, "total": sum(failed)}
            )
            final = os.path.join(run_dir, name)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(os.path.join(staging, name), final)
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, plus the in-place trained non-LoRA parameters of a PEFT model (PEFT saves only the
        adapter)."""
        with plain_class(self.accelerator.unwrap_model(self.model)):
            super()._save(output_dir, state_dict)
        if hasattr(self.model, "peft_config"):
            self._save_non_lora_trainables(output_dir or self.args.output_dir, state_dict)

    def _save_non_lora_trainables(self, output_dir: str, state_dict: dict | None) -> None:
        if not self.args.should_save:
            return
        source = state_dict if state_dict is not None else self.model.state_dict()
        names = [name for name, p in self.model.named_parameters() if p.requires_grad and "lora_" not in name]
        save_file(
            {name: source[name].detach().cpu().contiguous() for name in names},
            os.path.join(output_dir, NON_LORA_WEIGHTS_NAME),
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._restore_failures(resume_from_checkpoint)
        path = os.path.join(resume_from_checkpoint, NON_LORA_WEIGHTS_NAME)
        if os.path.isfile(path):
            target = model if model is not None else self.model
            result = load_full_state(target, load_file(path))
            if result.unexpected_keys:
                raise ValueError(f"{path} holds parameters this model does not have: {result.unexpected_keys[:5]}")

    def _restore_failures(self, checkpoint: str) -> None:
        """This process's unreadable-video count at the checkpoint (the total split evenly when the number of
        processes changed), so the count and the `max_failed_fraction` budget continue instead of restarting."""
        path = os.path.join(checkpoint, FAILED_VIDEOS_NAME)
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        per_process, world, rank = saved["per_process"], self.args.world_size, self.args.process_index
        if len(per_process) == world:
            self.failures.failed = int(per_process[rank])
        else:
            total = int(saved["total"])
            self.failures.failed = total // world + (rank < total % world)

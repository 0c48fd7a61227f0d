"""What a finished stage writes into its output folder: the weights and processor (merged, or the LoRA adapter next
to its base), staged and then moved into place so the stage knows its files, and the stage metadata that lists them
(`exo2ego_stage.json`, written last by the pipeline)."""

from __future__ import annotations

import json
import os
import shutil

from exo2ego_base.provenance import package_versions
from train.arguments import StageArguments
from train.distributed import distributed_setup
from train.stage_folder import ADAPTER_DIR_NAME, stage_run_folder
from train.stages import ResolvedStage

# Where, in the output folder's staging folder, the final weights are written before they are moved into place (so
# the stage knows its files).
OUTPUT_STAGING_NAME = "output"
# Written by the stage but never part of its release: pickled arguments.
LOCAL_ONLY_FILES = ("training_args.bin",)


def save_stage_output(
    trainer, resolved: ResolvedStage, stage_args: StageArguments, output_dir: str, build_model=None
) -> list[str]:
    """Weights + processor (+ LoRA adapter) into `output_dir`; stage 3 merges LoRA unless save_mode is adapter.

    Everything is written into a staging folder first and then moved into place, so the stage knows exactly which
    files it wrote: returns their paths relative to `output_dir` (on the saving process; [] elsewhere), the files
    `--push_to_hub` may upload. Under FSDP the sharded weights are first gathered into one state dict (every rank
    takes part); a LoRA model is then rebuilt unsharded on the main process by `build_model()` to be merged or split
    into adapter + base.
    """
    folder = stage_run_folder(output_dir)
    staging = os.path.join(folder.staging_dir, OUTPUT_STAGING_NAME)
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    model = trainer.model
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.args.should_save and not resolved.lora:
            trainer._save(staging, state_dict=state_dict)
        elif trainer.args.should_save:
            model = build_model()
            model.load_state_dict(state_dict)
    elif not resolved.lora:
        trainer.save_model(staging)
    if resolved.lora and trainer.args.should_save:
        processor = trainer.processing_class
        if stage_args.save_mode == "adapter":
            adapter_dir = os.path.join(staging, ADAPTER_DIR_NAME)
            model.save_pretrained(adapter_dir)
            base = model.unload()  # LoRA removed, the in-place trained ego tower, F and connector kept
            base.save_pretrained(staging)
            _point_adapter_at_base(adapter_dir)
        else:
            merged = model.merge_and_unload()
            merged.save_pretrained(staging)
        processor.save_pretrained(staging)
    trainer.accelerator.wait_for_everyone()
    if not trainer.args.should_save:
        return []
    moved = folder.move_staged(staging)
    folder.clear_staging()
    return [path for path in moved if path.rsplit("/", 1)[-1] not in LOCAL_ONLY_FILES]


def _point_adapter_at_base(adapter_dir: str) -> None:
    """The adapter's base model is the folder above it (relative, so the pair moves and uploads together)."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path) as handle:
        config = json.load(handle)
    config["base_model_name_or_path"] = ".."
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)


def environment_versions() -> dict[str, str]:
    return package_versions(("torch", "transformers", "accelerate", "peft", "trl", "datasets"))


def stage_metadata(resolved, started_from, model_args, training_args, trainer, arguments, unused, files) -> dict:
    return {
        "stage": resolved.name,
        **resolved.to_dict(),
        "started_from": {"path": os.path.abspath(model_args.model_name_or_path), "stage": started_from},
        "save_mode": arguments["stage"]["save_mode"] if resolved.lora else "full",
        "seed": training_args.seed,
        "global_step": trainer.state.global_step,
        "failed_videos": trainer.failed_videos_total,  # all processes, including before a resume
        "versions": environment_versions(),
        "distributed": distributed_setup(trainer.accelerator, trainer.model_wrapped),
        "arguments": arguments,
        "unused_arguments": list(unused),  # stage-specific arguments this stage ignores (at their defaults)
        "files": sorted(files),  # what the stage wrote; the only files `--push_to_hub` uploads (with the card)
    }

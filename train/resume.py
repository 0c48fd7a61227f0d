"""The folders a stage run reads and writes: the checkpoint it starts from (the stage table's chain), and its
output folder, which it may train into when new, resume with the arguments its run recorded (`RESUME_MAY_DIFFER`
lists those a resume may change), or replace with `--overwrite_output_dir`; never a folder another command wrote.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict

from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import get_last_checkpoint

from datasets_scripts.hub_export import BUILD_INFO_NAME, DATASET_FOLDER_KIND
from exo2ego_base.provenance import check_output_apart, check_output_location
from train.stage_folder import RUN_RECORD_NAME, STAGE_METADATA_NAME, read_stage_metadata, stage_run_folder
from train.stages import BASE_STAGE, STAGES

logger = logging.getLogger(__name__)


# Arguments a resumed run may change: where and how it logs, saves, pushes and loads data, not what it trains.
RESUME_MAY_DIFFER = {
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "local_rank",
    "push_to_hub",
    "card_eval_results",
    "report_to",
    "disable_tqdm",
    "run_name",
    "project",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "save_on_each_node",
    "save_only_model",
    "dataloader_num_workers",
    "dataloader_prefetch_factor",
    "dataloader_persistent_workers",
    "dataloader_pin_memory",
    "decoded_cache_mb",
    "skip_memory_metrics",
}
RESUME_MAY_DIFFER_PREFIXES = ("hub_", "logging_", "log_", "trackio_")
# Local paths among the arguments: compared as absolute paths, so a resume may name them relative to another folder.
PATH_ARGUMENTS = ("model_name_or_path", "dataset_path", "video_root")
CHECKPOINT_PREFIX = "checkpoint-"


def check_starting_point(folder: str, stage: str, allow_mismatch: bool = False) -> str:
    """The stage of the checkpoint in `folder` (BASE_STAGE for built/converted ones); raises a clear error when the
    stage table does not start `stage` from it, or when the folder is an unfinished stage output."""
    if not os.path.isdir(folder):
        raise ValueError(f"{stage} starts from a local checkpoint folder; {folder!r} is not a directory")
    metadata = read_stage_metadata(folder)
    if metadata is None:
        if os.path.exists(os.path.join(folder, "trainer_state.json")) or any(
            name.startswith(CHECKPOINT_PREFIX) for name in os.listdir(folder)
        ):
            raise ValueError(
                f"{folder} is an unfinished stage output (no {STAGE_METADATA_NAME}); resume that run with "
                "--resume_from_checkpoint instead of starting the next stage from it"
            )
        found = BASE_STAGE
    else:
        found = metadata.get("stage")
    expected = STAGES[stage].starts_from
    if found not in expected and not allow_mismatch:
        raise ValueError(
            f"{stage} starts from the output of {' or '.join(expected)}, but {folder} holds a {found!r} checkpoint "
            f"(from {STAGE_METADATA_NAME}); point --model_name_or_path at the right folder or pass "
            "--allow_stage_mismatch true"
        )
    return found


def recorded_arguments(model_args, data_args, stage_args, training_args, unused=()) -> dict:
    """{group: {name: value}} as JSON values, without the stage-specific arguments the stage does not use."""
    groups = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "stage": asdict(stage_args),
        "training": json.loads(training_args.to_json_string()),
    }
    groups = json.loads(json.dumps(groups, default=str))
    return {group: {k: v for k, v in values.items() if k not in unused} for group, values in groups.items()}


def _with_absolute_paths(arguments: dict) -> dict:
    """The recorded arguments with the local paths (`PATH_ARGUMENTS`) that exist made absolute."""
    return {
        group: {
            name: os.path.abspath(value) if name in PATH_ARGUMENTS and value and os.path.exists(value) else value
            for name, value in values.items()
        }
        for group, values in arguments.items()
    }


def _checkpoints(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.startswith(CHECKPOINT_PREFIX))


def _check_same_run(folder: str, stage: str, arguments: dict) -> None:
    """Refuse to resume the checkpoints in `folder` when they were trained for another stage or with other arguments
    than `arguments`."""
    run = stage_run_folder(folder)
    record = run.read_record()
    if record is None:
        if _checkpoints(folder):
            raise ValueError(
                f"{folder} holds checkpoints but no {RUN_RECORD_NAME}, so the arguments they were trained with are "
                "unknown; start over with --overwrite_output_dir true"
            )
        return  # nothing to resume: Trainer reports the missing checkpoint
    if record["stage"] != stage:
        raise ValueError(f"cannot resume the run in {folder} as {stage}: it trains {record['stage']}")
    run.check_resume(
        _with_absolute_paths(arguments),
        recorded=_with_absolute_paths(record["arguments"]),
        may_differ=RESUME_MAY_DIFFER,
        may_differ_prefixes=RESUME_MAY_DIFFER_PREFIXES,
        reason=f"cannot resume the run in {folder}: it was trained with other arguments",
        advice="resume with the same arguments, or start over with --overwrite_output_dir true "
        "(or another output_dir)",
        line="{short}: {before!r} in the earlier run, now {now!r}",
    )


def check_output_dir(
    output_dir: str, stage: str, arguments: dict, resume, overwrite: bool, inputs: tuple = ()
) -> dict | None:
    """Check that this run may train into `output_dir` (nothing is changed). Returns the folder's stage metadata
    when a resumed run finds its stage already finished there (nothing left to train), else None.

    A file, a finished stage output, checkpoints of an unfinished run and any other file refuse a new run unless
    `overwrite`; a resumed run (`resume`: True or a checkpoint path) must have the arguments of the run it resumes.
    A folder that cannot be created, one that is, contains or lies inside one of `inputs` (the starting checkpoint,
    datasets and video roots), and one another command wrote (an eval run, a dataset) are always refused.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file, not a folder; choose another output_dir")
    check_output_apart(output_dir, inputs, what="output_dir")
    check_output_location(output_dir, what="output_dir")
    stage_run_folder(output_dir, label=f"output_dir {output_dir!r}").refuse_foreign(
        {BUILD_INFO_NAME: DATASET_FOLDER_KIND},  # a downloaded dataset records no identity: its build file names it
        advice="a stage never trains into another command's folder: choose another output_dir",
    )
    if resume:
        if overwrite:
            raise ValueError(
                "--resume_from_checkpoint continues the run in output_dir, --overwrite_output_dir "
                "replaces it: pass only one"
            )
        checkpoint_dir = output_dir if resume is True else os.path.dirname(os.path.normpath(resume))
        _check_same_run(checkpoint_dir, stage, arguments)
        return read_stage_metadata(output_dir)
    contents = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if overwrite or not contents:
        return None
    metadata = read_stage_metadata(output_dir)
    if metadata is not None:
        raise ValueError(
            f"output_dir {output_dir!r} holds a finished {metadata.get('stage')} output ({STAGE_METADATA_NAME}); "
            "choose another output_dir, or pass --overwrite_output_dir true to replace it"
        )
    checkpoints = _checkpoints(output_dir)
    if checkpoints:
        raise ValueError(
            f"output_dir {output_dir!r} holds checkpoints of an unfinished run ({', '.join(checkpoints)}); "
            "continue it with --resume_from_checkpoint last (and the same arguments), or start over with "
            "--overwrite_output_dir true"
        )
    raise ValueError(
        f"output_dir {output_dir!r} is not empty ({', '.join(contents[:5])}{', ...' if len(contents) > 5 else ''}); "
        "choose a new or empty folder, or pass --overwrite_output_dir true to train there anyway (files the stage "
        "did not write are kept and never pushed)"
    )


def clear_previous_run(output_dir: str) -> None:
    """Remove what an earlier run left in `output_dir` (its stage marker first, then the files it lists, its
    checkpoints and records); files it did not write stay."""
    metadata = read_stage_metadata(output_dir)
    stage_run_folder(output_dir).clear([*(metadata or {}).get("files", []), *_checkpoints(output_dir)])


def completed_checkpoint(output_dir: str, resume) -> str | None:
    """The checkpoint a resumed run starts from when it already reached max_steps (a run killed after its last
    checkpoint, before its output was saved), else None. Trainer would train one step past max_steps from it."""
    if not resume:
        return None
    checkpoint = get_last_checkpoint(output_dir) if resume is True else resume
    path = os.path.join(checkpoint or "", "trainer_state.json")
    if not os.path.isfile(path):
        return None
    state = TrainerState.load_from_json(path)
    return checkpoint if state.max_steps > 0 and state.global_step >= state.max_steps else None


def finish_from_checkpoint(trainer, checkpoint: str) -> None:
    """Load a checkpoint that already reached max_steps (weights, LoRA adapter, trainer state) without a step."""
    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise ValueError(
            f"{checkpoint} already reached max_steps, and resuming it under DeepSpeed/FSDP would train a step past "
            "it (a Trainer limitation); use the weights in that checkpoint, or start over with "
            "--overwrite_output_dir true"
        )
    logger.info("%s already reached max_steps: saving its weights as the stage output without training", checkpoint)
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))

"""What every stage script does: parse yaml + CLI, check the starting folder, build data, model and trainer, train,
save the stage output (with its `exo2ego_stage.json` written last) and optionally push it to the Hub.

`python train/stage2.py --config train/configs/stage2.yaml --learning_rate 5e-5` (or under `accelerate launch`):
the yaml sets the defaults of the argument dataclasses (`train.arguments`) and of `Exo2EgoTrainingArguments`, the
command line overrides them (TRL's `TrlParser`). The steps live by concern: `train.arguments` (parsing and checks),
`train.resume` (the starting folder, the output folder, resuming), `train.dataset_setup`, `train.model_setup`
(loading, LoRA, the trainable set) and `train.saving` (the stage output and its metadata).
"""

from __future__ import annotations

import json
import logging
import sys

from accelerate import PartialState
from transformers import set_seed

from modeling_exo2ego import Exo2EgoConfig
from train.arguments import (
    DataArguments,
    StageArguments,
    check_data_arguments,
    check_stage_arguments,
    input_paths,
    parse_arguments,
    two_source_init,
)
from train.collator import Exo2EgoCollator
from train.dataset_setup import build_dataset
from train.distributed import check_launch_config
from train.hub import push_stage_output
from train.model_setup import load_model, prepare_model
from train.resume import (
    check_output_dir,
    check_starting_point,
    clear_previous_run,
    completed_checkpoint,
    finish_from_checkpoint,
    recorded_arguments,
)
from train.saving import save_stage_output, stage_metadata
from train.stage_folder import STAGE_METADATA_NAME, stage_run_folder
from train.stages import ResolvedStage, resolve_stage
from train.trainer import Exo2EgoTrainer

logger = logging.getLogger(__name__)


def build_trainer(model, processor, dataset, resolved: ResolvedStage, training_args, data_args: DataArguments):
    return Exo2EgoTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=Exo2EgoCollator(processor, resolved.branches, max_length=data_args.max_length),
        processing_class=processor,
        stage=resolved,
    )


def run_stage(stage: str, argv=None):
    """Run one stage of the table from command-line arguments; returns the finished trainer, or None when a resumed
    run finds its stage already finished in output_dir (nothing is trained)."""
    model_args, data_args, stage_args, training_args = parse_arguments(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    # Everything that can be wrong with the inputs is checked before the model is loaded.
    resolved = resolve_stage(
        stage,
        stage_args.ablations,
        stage_args.train_modules,
        stage_args.freeze_modules,
        stage_args.connector_trainable,
        training_args.kl_weight,
        training_args.ccl_weight,
    )
    check_data_arguments(stage, data_args)
    unused = check_stage_arguments(stage, model_args, data_args, stage_args, training_args)
    started_from = check_starting_point(model_args.model_name_or_path, stage, model_args.allow_stage_mismatch)
    check_launch_config(resolved.lora, training_args.activation_checkpointing)
    per_epoch_draw = two_source_init(data_args) or (
        resolved.spec.data != "egoit" and data_args.exo_sampling == "random"
    )
    if training_args.dataloader_persistent_workers and per_epoch_draw:
        raise ValueError(
            "dataloader_persistent_workers keeps the workers' dataset copies of the first epoch, so the per-epoch "
            "draw (exo camera, or init's source mixing) would never change; turn it off"
        )
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "true", "True"):
        resume = True
    arguments = recorded_arguments(model_args, data_args, stage_args, training_args, unused)
    output_dir = training_args.output_dir
    finished = check_output_dir(
        output_dir, stage, arguments, resume, stage_args.overwrite_output_dir, input_paths(model_args, data_args)
    )
    push = training_args.push_to_hub
    if finished is not None:
        logger.info(
            "%s in %s is already finished (global_step %s, %s); nothing to train",
            finished.get("stage"),
            output_dir,
            finished.get("global_step"),
            STAGE_METADATA_NAME,
        )
        if push and training_args.should_save:
            _push(output_dir, training_args, stage_args)
        return None
    training_args.push_to_hub = False  # one commit of the finished folder below, not a push per checkpoint

    set_seed(training_args.seed)  # before LoRA and any re-initialised mapping are created

    config = Exo2EgoConfig.from_pretrained(model_args.model_name_or_path)
    dataset = build_dataset(resolved, data_args, data_args.num_frames or config.num_frames, training_args.seed)
    model, processor = load_model(model_args)
    model = prepare_model(model, resolved, stage_args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s: %s; %d trainable parameters", stage, json.dumps(resolved.to_dict()), trainable)

    trainer = build_trainer(model, processor, dataset, resolved, training_args, data_args)
    PartialState().wait_for_everyone()  # every process has checked output_dir before it changes
    folder = stage_run_folder(output_dir)
    if training_args.should_save:
        if stage_args.overwrite_output_dir:  # never together with a resume (check_output_dir)
            clear_previous_run(output_dir)
        folder.record({"stage": stage, "arguments": arguments})
    completed = completed_checkpoint(output_dir, resume)
    if completed is None:
        trainer.train(resume_from_checkpoint=resume)
    else:
        finish_from_checkpoint(trainer, completed)

    files = save_stage_output(
        trainer,
        resolved,
        stage_args,
        output_dir,
        build_model=lambda: prepare_model(load_model(model_args)[0], resolved, stage_args),
    )
    trainer.save_state()
    if trainer.args.should_save:
        metadata = stage_metadata(
            resolved,
            started_from,
            model_args,
            training_args,
            trainer,
            arguments,
            unused,
            [*files, "trainer_state.json"],
        )
        folder.finish(metadata, default=str)  # last: marks the folder complete
        if push:
            _push(output_dir, training_args, stage_args)
    trainer.accelerator.wait_for_everyone()
    return trainer


def _push(output_dir: str, training_args, stage_args: StageArguments) -> None:
    push_stage_output(
        output_dir,
        training_args.hub_model_id,
        private=training_args.hub_private_repo,
        token=training_args.hub_token,
        eval_results=stage_args.card_eval_results,
    )


def main(stage: str, argv=None) -> int:
    """Entry point of the stage scripts: bad input ends the run with one line naming it and exit status 2
    (`--log_level debug` also logs the traceback)."""
    try:
        run_stage(stage, argv)
    except ValueError as error:
        logger.debug("traceback of the error below", exc_info=True)
        print(f"train/{stage}.py: error: {error}", file=sys.stderr)
        return 2
    return 0

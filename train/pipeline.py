"""What every stage script does: parse yaml + CLI, check the starting folder, build data, model and trainer, train,
save the stage output (with its `exo2ego_stage.json` written last) and optionally push it to the Hub.

`python train/stage2.py --config train/configs/stage2.yaml --learning_rate 5e-5` (or under `accelerate launch`):
the yaml sets the defaults of the argument dataclasses below and of `Exo2EgoTrainingArguments`, the command line
overrides them (TRL's `TrlParser`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

from exo2ego.provenance import package_versions, write_json_atomic
from train.distributed import check_launch_config, distributed_setup
from train.stages import BASE_STAGE, DEFAULT_LORA_TARGET_REGEX, STAGES, ResolvedStage, apply_trainable, resolve_stage

logger = logging.getLogger(__name__)

STAGE_METADATA_NAME = "exo2ego_stage.json"
SAVE_MODES = ("merged", "adapter")
ADAPTER_DIR_NAME = "adapter"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=None, metadata={"help": "The previous stage's output folder (init: a built or converted checkpoint)."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager | sdpa | flash_attention_2 ..."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype at load (bf16 autocast comes from --bf16)."})
    allow_stage_mismatch: bool = field(
        default=False, metadata={"help": "Start from a folder of another stage than the table says (e.g. skip init)."}
    )


@dataclass
class DataArguments:
    dataset_path: str = field(default=None, metadata={"help": "Hub-ready dataset folder or Hub id (load_dataset)."})
    video_root: str = field(default=None, metadata={"help": "Root the dataset's relative video paths start from."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config name (Ego-ExoClip: clips)."})
    dataset_split: str = field(default="train")
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (default: the model's)."})
    exo_sampling: str = field(default="random", metadata={"help": "random | best_exo | all_pairs"})
    clip_prompt: str = field(
        default="Describe what the person in the video is doing.",
        metadata={"help": "User prompt of Ego-ExoClip samples; the target is the clip's narration."},
    )
    max_length: int | None = field(default=None, metadata={"help": "Cap on tokens per sample (target truncated)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N rows."})


@dataclass
class StageArguments:
    ablations: list[str] = field(default_factory=list, metadata={"help": "Ablation switches of paper Tables 7-8."})
    train_modules: list[str] = field(default_factory=list, metadata={"help": "Extra modules to train."})
    freeze_modules: list[str] = field(default_factory=list, metadata={"help": "Modules to freeze."})
    connector_trainable: bool | None = field(default=None, metadata={"help": "Override the table's connector."})
    mapping_type: str | None = field(
        default=None, metadata={"help": "stage2: rebuild F and G as 'mlp' (Table 7 #5) or 'resnet' before training."}
    )
    lora_r: int = field(default=128)
    lora_alpha: int = field(default=256)
    lora_dropout: float = field(default=0.1)
    lora_target_regex: str = field(default=DEFAULT_LORA_TARGET_REGEX)
    save_mode: str = field(default="merged", metadata={"help": "stage3: merged | adapter (adapter in <out>/adapter)."})
    card_eval_results: str | None = field(
        default=None, metadata={"help": "EgoBench results.json for the pushed model card (model-index results)."}
    )


def parse_arguments(argv=None):
    from trl import TrlParser

    from train.trainer import Exo2EgoTrainingArguments

    parser = TrlParser((ModelArguments, DataArguments, StageArguments, Exo2EgoTrainingArguments))
    model_args, data_args, stage_args, training_args = parser.parse_args_and_config(argv)
    for name, value in (
        ("model_name_or_path", model_args.model_name_or_path),
        ("dataset_path", data_args.dataset_path),
        ("video_root", data_args.video_root),
    ):
        if not value:
            raise ValueError(f"--{name} is required (in the yaml or on the command line)")
    if stage_args.save_mode not in SAVE_MODES:
        raise ValueError(f"save_mode must be one of {SAVE_MODES}, got {stage_args.save_mode!r}")
    return model_args, data_args, stage_args, training_args


# ---- stage chain -----------------------------------------------------------------------------------------------


def read_stage_metadata(folder: str) -> dict | None:
    path = os.path.join(folder, STAGE_METADATA_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def check_starting_point(folder: str, stage: str, allow_mismatch: bool = False) -> str:
    """The stage of the checkpoint in `folder` (BASE_STAGE for built/converted ones); raises a clear error when the
    stage table does not start `stage` from it, or when the folder is an unfinished stage output."""
    if not os.path.isdir(folder):
        raise ValueError(f"{stage} starts from a local checkpoint folder; {folder!r} is not a directory")
    metadata = read_stage_metadata(folder)
    if metadata is None:
        if os.path.exists(os.path.join(folder, "trainer_state.json")) or any(
            name.startswith("checkpoint-") for name in os.listdir(folder)
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


# ---- building blocks -------------------------------------------------------------------------------------------


def build_dataset(resolved: ResolvedStage, data_args: DataArguments, num_frames: int, seed: int):
    from train.data import EgoExoClipSamples, EgoITSamples, load_table

    table = load_table(data_args.dataset_path, data_args.dataset_config, data_args.dataset_split)
    if data_args.max_train_samples is not None:
        table = table.select(range(min(data_args.max_train_samples, len(table))))
    where = f"dataset {data_args.dataset_path!r} (split {data_args.dataset_split!r})"
    if resolved.spec.data == "egoit":
        return EgoITSamples(table, data_args.video_root, num_frames, where=where)
    return EgoExoClipSamples(
        table, data_args.video_root, num_frames, resolved.branches, data_args.clip_prompt,
        exo_sampling=data_args.exo_sampling, seed=seed, where=where,
    )


def load_model(model_args: ModelArguments):
    import torch

    from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor

    model = Exo2EgoForConditionalGeneration.from_pretrained(
        model_args.model_name_or_path,
        dtype=getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    )
    processor = Exo2EgoProcessor.from_pretrained(model_args.model_name_or_path)
    return model, processor


def rebuild_mappings(model, mapping_type: str) -> None:
    """Replace F and G by freshly initialised mappings of `mapping_type` (they are first trained in stage 2)."""
    from modeling_exo2ego.modeling_exo2ego import build_mapping

    model.config.mapping_type = mapping_type
    for name in ("ego_to_exo", "exo_to_ego"):
        if hasattr(model.model, name):
            mapping = build_mapping(model.config).to(model.dtype)
            for module in reversed(list(mapping.modules())):  # children first: the zero-init head wins
                model._init_weights(module)
            setattr(model.model, name, mapping)


def add_lora(model, stage_args: StageArguments):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=stage_args.lora_r,
        lora_alpha=stage_args.lora_alpha,
        lora_dropout=stage_args.lora_dropout,
        target_modules=stage_args.lora_target_regex,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    wrapped = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    stray = [name for name in wrapped if ".language_model." not in name]
    if not wrapped or stray:
        raise ValueError(
            f"lora_target_regex {stage_args.lora_target_regex!r} must match linear layers of the LLM only; it matched "
            f"{len(wrapped)} module(s), outside the LLM: {stray[:5]}"
        )
    return peft_model


def prepare_model(model, resolved: ResolvedStage, stage_args: StageArguments):
    """Apply the stage to a loaded model: optional mapping rebuild, LoRA, and the trainable set."""
    if stage_args.mapping_type and stage_args.mapping_type != model.config.mapping_type:
        if resolved.name != "stage2":
            raise ValueError(f"mapping_type can only change in stage2, where F and G are first trained (got {resolved.name})")
        rebuild_mappings(model, stage_args.mapping_type)
    prefix = ""
    if resolved.lora:
        model = add_lora(model, stage_args)
        prefix = "base_model.model."
    apply_trainable(model, resolved, name_prefix=prefix)
    return model


def build_trainer(model, processor, dataset, resolved: ResolvedStage, training_args, data_args: DataArguments):
    from train.collator import Exo2EgoCollator
    from train.trainer import Exo2EgoTrainer

    return Exo2EgoTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=Exo2EgoCollator(processor, resolved.branches, max_length=data_args.max_length),
        processing_class=processor,
        stage=resolved,
    )


# ---- outputs ---------------------------------------------------------------------------------------------------


def save_stage_output(
    trainer, resolved: ResolvedStage, stage_args: StageArguments, output_dir: str, build_model=None
) -> None:
    """Weights + processor (+ LoRA adapter) into `output_dir`; stage 3 merges LoRA unless save_mode is adapter.

    Under FSDP the sharded weights are first gathered into one state dict (every rank takes part); a LoRA model is
    then rebuilt unsharded on the main process by `build_model()` to be merged or split into adapter + base."""
    model = trainer.model
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if not trainer.args.should_save:
            return
        if not resolved.lora:
            trainer._save(output_dir, state_dict=state_dict)
            return
        model = build_model()
        model.load_state_dict(state_dict)
    elif not resolved.lora:
        trainer.save_model(output_dir)
        return
    if not trainer.args.should_save:
        return
    processor = trainer.processing_class
    if stage_args.save_mode == "adapter":
        adapter_dir = os.path.join(output_dir, ADAPTER_DIR_NAME)
        model.save_pretrained(adapter_dir)
        base = model.unload()  # LoRA removed, the in-place trained ego tower, F and connector kept
        base.save_pretrained(output_dir)
        _point_adapter_at_base(adapter_dir)
    else:
        merged = model.merge_and_unload()
        merged.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)


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


def stage_metadata(resolved, started_from, model_args, data_args, stage_args, training_args, trainer) -> dict:
    return {
        "stage": resolved.name,
        **resolved.to_dict(),
        "started_from": {"path": os.path.abspath(model_args.model_name_or_path), "stage": started_from},
        "save_mode": stage_args.save_mode if resolved.lora else "full",
        "seed": training_args.seed,
        "global_step": trainer.state.global_step,
        "failed_videos": trainer.failures.failed,
        "versions": environment_versions(),
        "distributed": distributed_setup(trainer.accelerator, trainer.model_wrapped),
        "arguments": {
            "model": asdict(model_args), "data": asdict(data_args), "stage": asdict(stage_args),
            "training": json.loads(training_args.to_json_string()),
        },
    }


# ---- entry point -----------------------------------------------------------------------------------------------


def run_stage(stage: str, argv=None):
    """Run one stage of the table from command-line arguments; returns the finished trainer."""
    model_args, data_args, stage_args, training_args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level())
    # Everything that can be wrong with the inputs is checked before the model is loaded.
    resolved = resolve_stage(
        stage, stage_args.ablations, stage_args.train_modules, stage_args.freeze_modules,
        stage_args.connector_trainable, training_args.kl_weight, training_args.ccl_weight,
    )
    started_from = check_starting_point(model_args.model_name_or_path, stage, model_args.allow_stage_mismatch)
    check_launch_config(resolved.lora, training_args.activation_checkpointing)
    if training_args.dataloader_persistent_workers and resolved.spec.data == "ego_exo_clip" and data_args.exo_sampling == "random":
        raise ValueError(
            "dataloader_persistent_workers keeps the workers' dataset copies of the first epoch, so the per-epoch "
            "exo-camera draw would never change; turn it off (or use exo_sampling best_exo / all_pairs)"
        )
    push = training_args.push_to_hub
    training_args.push_to_hub = False  # one commit of the finished folder below, not a push per checkpoint

    from transformers import set_seed

    from modeling_exo2ego import Exo2EgoConfig

    set_seed(training_args.seed)  # before LoRA and any re-initialised mapping are created

    config = Exo2EgoConfig.from_pretrained(model_args.model_name_or_path)
    dataset = build_dataset(resolved, data_args, data_args.num_frames or config.num_frames, training_args.seed)
    model, processor = load_model(model_args)
    model = prepare_model(model, resolved, stage_args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s: %s; %d trainable parameters", stage, json.dumps(resolved.to_dict()), trainable)

    trainer = build_trainer(model, processor, dataset, resolved, training_args, data_args)
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "true", "True"):
        resume = True
    trainer.train(resume_from_checkpoint=resume)

    output_dir = training_args.output_dir
    save_stage_output(
        trainer, resolved, stage_args, output_dir,
        build_model=lambda: prepare_model(load_model(model_args)[0], resolved, stage_args),
    )
    trainer.save_state()
    if trainer.args.should_save:
        metadata = stage_metadata(resolved, started_from, model_args, data_args, stage_args, training_args, trainer)
        write_json_atomic(os.path.join(output_dir, STAGE_METADATA_NAME), metadata, default=str)  # last: marks the folder complete
        if push:
            from train.hub import push_stage_output

            push_stage_output(
                output_dir, training_args.hub_model_id, private=training_args.hub_private_repo,
                token=training_args.hub_token, eval_results=stage_args.card_eval_results,
            )
    trainer.accelerator.wait_for_everyone()
    return trainer


def main(stage: str, argv=None) -> int:
    run_stage(stage, argv)
    return 0

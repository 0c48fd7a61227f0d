"""The model a stage trains: loaded from the previous stage's folder, F and G optionally rebuilt, LoRA added, and
the stage table's trainable set applied."""

from __future__ import annotations

import re

import torch
from peft import LoraConfig, get_peft_model

from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor
from modeling_exo2ego.modeling_exo2ego import build_mapping
from train.arguments import ModelArguments, StageArguments
from train.stages import DEFAULT_LORA_TARGET_REGEX, ResolvedStage, apply_trainable


def load_model(model_args: ModelArguments):
    model = Exo2EgoForConditionalGeneration.from_pretrained(
        model_args.model_name_or_path,
        dtype=getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    )
    processor = Exo2EgoProcessor.from_pretrained(model_args.model_name_or_path)
    return model, processor


def rebuild_mappings(model, mapping_type: str) -> None:
    """Replace F and G by freshly initialised mappings of `mapping_type` (they are first trained in stage 2)."""
    model.config.mapping_type = mapping_type
    for name in ("ego_to_exo", "exo_to_ego"):
        if hasattr(model.model, name):
            mapping = build_mapping(model.config).to(model.dtype)
            for module in reversed(list(mapping.modules())):  # this order draws what earlier seeded runs drew
                model._init_weights(module)
            setattr(model.model, name, mapping)


def add_lora(model, stage_args: StageArguments):
    # PEFT matches a regex against full module names with re.fullmatch; one that matches nothing is a raw PEFT error.
    pattern = re.compile(stage_args.lora_target_regex)
    if not any(pattern.fullmatch(name) for name, _ in model.named_modules()):
        example = next((name for name, _ in model.named_modules() if ".language_model.layers." in name), "")
        raise ValueError(
            f"lora_target_regex {stage_args.lora_target_regex!r} matches no linear layer of the model (it must match "
            f"full module names such as {example!r}; the default is {DEFAULT_LORA_TARGET_REGEX!r})"
        )
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
            raise ValueError(
                f"mapping_type can only change in stage2, where F and G are first trained (got {resolved.name})"
            )
        rebuild_mappings(model, stage_args.mapping_type)
    prefix = ""
    if resolved.lora:
        model = add_lora(model, stage_args)
        prefix = "base_model.model."
    apply_trainable(model, resolved, name_prefix=prefix)
    return model

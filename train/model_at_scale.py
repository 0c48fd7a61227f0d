"""Exo2Ego (and the sizes its peer shares) built at a chosen size with random weights, and set up for a training step
exactly as `train/` sets it up: the stage's trainable set and LoRA (`train.stages`, `train.model_setup`), activation
checkpointing, and synthetic batches.

Sizes (`ModelSize`, `SCALES`): `paper` (two CLIP-L/14-336 towers, the `stc` connector, Mistral-7B), `reduced` (every
module type at paper depth, CPU-sized widths) and `tiny` (the test model of `exo2ego_base.tiny`). Nothing is
downloaded: every model comes from configs.

One home for the model set-up that the meta-device memory count (`train/memory_count.py`, behind
`exo2ego plan-memory`) and the GPU benchmarks (`benchmarks/gpu_*.py`) share, so a count and a measurement build the
same model the same way.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch
from transformers import CLIPVisionConfig, LlavaNextVideoConfig, MistralConfig, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer

from exo2ego_base.tiny import tiny_config_kwargs
from modeling_exo2ego import Exo2EgoConfig
from modeling_exo2ego.modeling_exo2ego import RegNetBottleneck, ResnetBlock
from train.arguments import StageArguments
from train.model_setup import add_lora
from train.stages import apply_trainable, resolve_stage

# Tokens before the video placeholder in the synthetic training sequences (chat prefix); every text token after the
# video is a target, as in the peer script (`labels[:, :4 + video_tokens] = -100`).
PROMPT_TOKENS = 4

PAPER_VISION = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
# Reduced: a 112 px image on patch 14 gives an 8x8 grid, the smallest the ResNet mapping accepts; three layers so the
# feature layer (-2) still leaves one unused layer, as CLIP-L's 24th. Paper connector depth and mapping depth.
REDUCED_VISION = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=112,
    patch_size=14,
    projection_dim=64,
)
REDUCED_TEXT = dict(
    hidden_size=256,
    intermediate_size=768,
    num_hidden_layers=2,
    num_attention_heads=8,
    num_key_value_heads=2,
    vocab_size=4096,
    max_position_embeddings=4096,
)
# Tiny: the test model's sizes, taken from `exo2ego_base.tiny` (one source for both).
_TINY = tiny_config_kwargs()
TINY_VISION = dict(_TINY["ego_vision_config"])
TINY_TEXT = {key: value for key, value in _TINY["text_config"].items() if not key.endswith("_token_id")}
TINY_MODEL = {key: _TINY[key] for key in ("mapping_ngf", "mapping_n_blocks", "connector_depth")}
SCALES = {
    "paper": (PAPER_VISION, None, {}),
    "reduced": (REDUCED_VISION, REDUCED_TEXT, dict(mapping_ngf=16)),
    "tiny": (TINY_VISION, TINY_TEXT, TINY_MODEL),
}

CHECKPOINTING_MODES = ("none", "full", "llm")
PRECISIONS = ("mixed", "bf16")


@dataclass(frozen=True)
class ModelSize:
    """Which configs to build: `paper`, `reduced` (CPU-sized, every module at paper depth) or `tiny` (tests)."""

    scale: str = "paper"

    def __post_init__(self):
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {sorted(SCALES)}, got {self.scale!r}")

    def vision_kwargs(self) -> dict:
        return dict(SCALES[self.scale][0])

    def text_config(self):
        text = SCALES[self.scale][1]
        return MistralConfig(**text) if text else MistralConfig()

    def exo2ego_config(
        self, frames: int, include_exo_branch: bool = True, video_token_id: int | None = None, **overrides
    ):
        """An `Exo2EgoConfig`; the `<video>` id defaults to the last vocabulary id (as the peer script does)."""
        text = self.text_config()
        kwargs = {**SCALES[self.scale][2], **overrides}
        return Exo2EgoConfig(
            ego_vision_config=self.vision_kwargs(),
            exo_vision_config=self.vision_kwargs(),
            text_config=text.to_dict(),
            video_token_id=text.vocab_size - 1 if video_token_id is None else video_token_id,
            num_frames=frames,
            connector_type="stc",
            include_exo_branch=include_exo_branch,
            **kwargs,
        )

    def peer_config(self):
        """LLaVA-NeXT-Video with the same CLIP tower and LLM (the peer script's definition)."""
        text = self.text_config()
        return LlavaNextVideoConfig(
            vision_config=CLIPVisionConfig(**self.vision_kwargs()),
            text_config=text,
            video_token_index=text.vocab_size - 1,
            image_token_index=text.vocab_size - 2,
            vision_feature_layer=-2,
        )


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in `dtype` (a 7B model built in fp32 first would need twice the memory)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_model(cls_or_factory, config, device: torch.device, dtype: torch.dtype, attn_implementation: str):
    """Instantiate `cls_or_factory(config)` with random weights directly on `device` in `dtype`."""
    config._attn_implementation = attn_implementation
    with torch.device(device), default_dtype(dtype):
        model = cls_or_factory(config)
    return model.to(device=device, dtype=dtype)


def apply_stage(model, stage: str, lora_r: int, lora_alpha: int, lora_dropout: float):
    """Freeze/unfreeze (and wrap with LoRA) exactly as `train/` does for `stage`; returns (model, resolved stage).

    Uses `train.stages.resolve_stage` + `apply_trainable` and `train.model_setup.add_lora`, so the benchmark trains the
    modules the stage scripts train (including the frozen, unused last CLIP layer).
    """
    resolved = resolve_stage(stage)
    prefix = ""
    if resolved.lora:
        model = add_lora(model, StageArguments(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout))
        prefix = "base_model.model."
    apply_trainable(model, resolved, name_prefix=prefix)
    return model, resolved


# ---------------------------------------------------------------------------------------------------------------------
# Activation checkpointing
# ---------------------------------------------------------------------------------------------------------------------


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _layer_stacks(model) -> dict[str, list[torch.nn.Module]]:
    """{qualified name: layers} for every ModuleList of transformers' checkpointable layers (CLIP encoder layers,
    decoder layers)."""
    stacks = {}
    for name, module in model.named_modules():
        if (
            isinstance(module, torch.nn.ModuleList)
            and module
            and all(isinstance(m, GradientCheckpointingLayer) for m in module)
        ):
            stacks[name] = list(module)
    return stacks


def _is_llm_stack(name: str) -> bool:
    return re.search(r"(^|\.)language_model(\.|$)", name) is not None


def _frozen_vision_tower(model, stack_name: str) -> bool:
    """Whether the stack sits in a vision tower with no trainable parameter (its input, pixels, needs no grad)."""
    match = re.match(r"(.*vision_tower)(\.|$)", stack_name)
    if match is None:
        return False
    return not any(p.requires_grad for p in model.get_submodule(match.group(1)).parameters())


def convnet_blocks(model) -> list[torch.nn.Module]:
    """The connector's RegNet bottlenecks and the mappings' residual blocks: the repeated blocks of the conv nets,
    checkpointed or not independently of the transformer layers (`convnets`)."""
    return [m for m in model.modules() if isinstance(m, (RegNetBottleneck, ResnetBlock))]


def llm_only_input_grads(model) -> None:
    """Make only the LLM's token embeddings output require grad (what non-LoRA-aware checkpointing needs).

    `transformers`' default `enable_input_require_grads` (called by `activation_checkpointing_enable` and so by
    Trainer's `gradient_checkpointing=True`) hooks the input embeddings of every sub-model, the CLIP towers' patch
    embeddings included: a frozen tower then builds a graph, keeps its activations and runs its whole backward, for
    nothing. Exo2Ego's own `enable_input_require_grads` does what this does; applying it here treats the peer alike.
    """
    base = _base_model(model)
    base.disable_input_require_grads()

    def make_output_require_grad(module, args, output):
        output.requires_grad_(True)

    handle = base.get_input_embeddings().register_forward_hook(make_output_require_grad)
    base._require_grads_hooks = [handle]
    base._require_grads_hook = handle


def configure_checkpointing(
    model, mode: str, every: int = 1, convnets: bool = False, hf_input_grads: bool = False
) -> dict:
    """Activation checkpointing (non-reentrant) of transformers' layers in `mode`'s scope:

    - `none`: nothing recomputed;
    - `full`: every CLIP encoder layer and decoder layer (a frozen tower's layers excepted: no backward runs
      through them, unless `hf_input_grads` makes one);
    - `llm`: decoder layers only (selective: the towers keep their activations; the LLM, whose 32 layers at 3k
      tokens hold most activation memory, recomputes);
    - `every`: checkpoint every `every`-th layer of each stack in scope (selective by depth);
    - `convnets`: also the connector's bottlenecks and the mappings' residual blocks (a benchmark-side wrapper;
      see BENCHMARKS.md for the model change that would make `activation_checkpointing_enable` cover them);
    - `hf_input_grads`: keep transformers' input-grad hooks on every sub-model's embeddings (the towers' too), as
      Trainer does today; off by default (see `llm_only_input_grads`).
    Returns a summary of what is checkpointed.
    """
    if mode not in CHECKPOINTING_MODES:
        raise ValueError(f"checkpointing must be one of {CHECKPOINTING_MODES}, got {mode!r}")
    if every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {every}")
    base = _base_model(model)
    # transformers' enable overwrites its list of hook handles: remove the current ones first, or they would leak.
    base.disable_input_require_grads()
    if mode != "none":
        enable = getattr(base, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # transformers < 5.20
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hf_input_grads:  # the "before": transformers' default hooks on every sub-model's embeddings
            base.disable_input_require_grads()
            PreTrainedModel.enable_input_require_grads(base)
        else:
            llm_only_input_grads(base)
    checkpointed = 0
    for name, layers in _layer_stacks(base).items():
        in_scope = mode == "full" or (mode == "llm" and _is_llm_stack(name))
        if not hf_input_grads and _frozen_vision_tower(base, name):
            in_scope = False  # no backward runs through it: nothing to recompute (and compile rejects such regions)
        for index, layer in enumerate(layers):
            layer.gradient_checkpointing = in_scope and index % every == 0
            checkpointed += layer.gradient_checkpointing
    blocks = convnet_blocks(base) if hasattr(base.config, "mapping_type") else []
    for block in blocks:  # the connector's and mappings' blocks are checkpointing layers of the model
        block.gradient_checkpointing = convnets and mode != "none"
    return {
        "mode": mode,
        "every": every,
        "layers": checkpointed,
        "convnet_blocks": len(blocks) if convnets and mode != "none" else 0,
        "hf_input_grads": hf_input_grads and mode != "none",
    }


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic batches
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_batch(
    vocab_size: int,
    video_token_id: int,
    video_tokens: int,
    batch: int,
    frames: int,
    image_size: int,
    text_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
    exo: bool = False,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """`PROMPT_TOKENS` text tokens, `video_tokens` placeholders, then `text_tokens - PROMPT_TOKENS` target tokens.

    Returns input_ids, attention_mask (all ones: no padding), labels (-100 up to the end of the video),
    pixel_values_videos (B, T, 3, S, S) and, with `exo`, exo_pixel_values_videos.
    """
    if text_tokens <= PROMPT_TOKENS:
        raise ValueError(f"text_tokens must exceed the {PROMPT_TOKENS} prompt tokens, got {text_tokens}")
    generator = torch.Generator().manual_seed(seed)
    seq_len = video_tokens + text_tokens
    ids = torch.randint(10, vocab_size - 10, (batch, seq_len), generator=generator)
    ids[:, PROMPT_TOKENS : PROMPT_TOKENS + video_tokens] = video_token_id
    labels = ids.clone()
    labels[:, : PROMPT_TOKENS + video_tokens] = -100
    pixels = torch.randn(batch, frames, 3, image_size, image_size, generator=generator)
    result = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "pixel_values_videos": pixels,
    }
    if exo:
        result["exo_pixel_values_videos"] = torch.randn(batch, frames, 3, image_size, image_size, generator=generator)
    return {k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in result.items()}

"""GPU memory of one training step, counted without a GPU, and the per-GPU memory of each distributed strategy.

The model is built at paper scale on PyTorch's meta device (shapes only: no memory, no arithmetic), set up as the
stage scripts set it up (stage, LoRA, checkpointing), and run forward once while a saved-tensor hook records every
tensor autograd keeps for backward. Memory of a step on one GPU holding the whole model is then

    weights      every parameter, bf16 (frozen) / fp32 (trainable, with `precision="mixed"`)
    grads        one per trainable parameter, in its dtype
    AdamW        two states per trainable parameter, in its dtype
    activations  distinct storages saved for backward at the end of the forward (parameters excluded), with the
                 inputs kept by checkpointed layers; attention counted as the flash kernel keeps it (q, k, v, out,
                 log-sum-exp), as on an H100/H200 with sdpa
    autocast     bf16 copies of fp32 trainable weights (`mixed`): the forward on meta runs all in bf16, so they are
                 added as 2 bytes per trainable weight

The sum is a floor for the allocator's peak: backward transients (one checkpointed layer's recompute, gradient
buffers of the largest layer), cuBLAS/cuDNN workspaces and fragmentation come on top (a few GiB).

`plan_memory` turns that single-GPU count into the per-GPU memory of DDP, ZeRO-2, ZeRO-3 and FSDP2 on N GPUs
(`exo2ego plan-memory`, see `train/README.md`); `benchmarks/gpu_memory.py` prints the same counts with a breakdown.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import weakref
from dataclasses import dataclass
from unittest import mock

import torch

from exo2ego_base.tiny import tiny_config_kwargs
from train.losses import cycle_consistency_loss, kl_alignment_loss

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
        from transformers import MistralConfig

        text = SCALES[self.scale][1]
        return MistralConfig(**text) if text else MistralConfig()

    def exo2ego_config(
        self, frames: int, include_exo_branch: bool = True, video_token_id: int | None = None, **overrides
    ):
        """An `Exo2EgoConfig`; the `<video>` id defaults to the last vocabulary id (as the peer script does)."""
        from modeling_exo2ego import Exo2EgoConfig

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
        from transformers import CLIPVisionConfig, LlavaNextVideoConfig

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
    from train.arguments import StageArguments
    from train.model_setup import add_lora
    from train.stages import apply_trainable, resolve_stage

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
    from transformers.modeling_layers import GradientCheckpointingLayer

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
    from modeling_exo2ego.modeling_exo2ego import RegNetBottleneck, ResnetBlock

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
            from transformers import PreTrainedModel

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


# ---------------------------------------------------------------------------------------------------------------------
# Counting a step on the meta device
# ---------------------------------------------------------------------------------------------------------------------

GIB = 2**30
WORKLOADS = ("stage2", "stage3")
# Top-level submodules the activation bytes are attributed to (innermost active one wins).
COMPONENTS = (
    "ego_vision_tower",
    "exo_vision_tower",
    "ego_to_exo",
    "exo_to_ego",
    "connector",
    "language_model",
    "lm_head",
    "vision_tower",
    "multi_modal_projector",
)


class SavedActivationCounter:
    """Bytes of the distinct storages autograd saves for backward during a forward, parameters excluded.

    Tensors saved inside non-reentrant checkpointed regions are not kept (the checkpoint's own hooks take them) and
    are not seen; the inputs a checkpointed layer keeps for its recompute are counted through a forward pre-hook on
    that layer. A storage counts only while something still refers to it (graphs of discarded outputs free theirs).
    Attribution: each storage goes to the innermost `COMPONENTS` module running when it was first saved.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.parameter_storages = {p.untyped_storage()._cdata for p in model.parameters()}
        self.parameter_storages |= {b.untyped_storage()._cdata for b in model.buffers()}
        self.entries: dict[int, tuple[int, str, list]] = {}
        self.stack: list[str] = []
        self.handles = []
        self.hooks = None

    def _record(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.is_sparse:
            return
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.parameter_storages:
            return
        entry = self.entries.get(key)
        if entry is None or not any(ref() is not None for ref in entry[2]):
            # A new storage (an address is reused once the storage it named is freed).
            self.entries[key] = (storage.nbytes(), self.stack[-1] if self.stack else "other", [])
        self.entries[key][2].append(weakref.ref(tensor))

    def _pack(self, tensor):
        self._record(tensor)
        return tensor

    def __enter__(self):
        for name, module in self.model.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in COMPONENTS:
                self.handles.append(module.register_forward_pre_hook(functools.partial(self._enter, leaf)))
                self.handles.append(module.register_forward_hook(self._leave))
            if getattr(module, "gradient_checkpointing", False) is True:
                self.handles.append(module.register_forward_pre_hook(self._checkpoint_inputs, with_kwargs=True))
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def _enter(self, component: str, module, args) -> None:
        self.stack.append(component)

    def _leave(self, module, args, output) -> None:
        self.stack.pop()

    def _checkpoint_inputs(self, module, args, kwargs):
        if module.training and torch.is_grad_enabled():
            for value in list(args) + list(kwargs.values()):
                if isinstance(value, torch.Tensor) and value.requires_grad:
                    self._record(value)

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        return False

    def live_bytes(self) -> dict[str, int]:
        """{component: bytes} of saved storages still referred to (read while the loss is alive; reference cycles,
        e.g. checkpoint frames of layers whose outputs need no grad, are collected first)."""
        gc.collect()
        totals: dict[str, int] = {}
        for nbytes, component, refs in self.entries.values():
            if any(ref() is not None for ref in refs):
                totals[component] = totals.get(component, 0) + nbytes
        return totals


# ---------------------------------------------------------------------------------------------------------------------
# Meta-device forward
# ---------------------------------------------------------------------------------------------------------------------


def _flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """Meta-device stand-in for `F.scaled_dot_product_attention` that saves what the flash kernel saves on a GPU
    (the math fallback on meta would save the full attention matrix). With GQA (`enable_gqa`) the kernel reads the
    shared k/v heads, so only the unexpanded k/v are kept."""
    if attn_mask is not None:
        raise ValueError("the memory estimate assumes no attention mask (unpadded batches), as flash attention needs")
    return torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, dropout_p, is_causal, scale=scale)[0]


@contextlib.contextmanager
def meta_forward_patches(model):
    """What a forward on meta tensors needs: no data-dependent checks (placeholder count, packed-sequence search in
    transformers' mask code: the synthetic batches are one unpadded sequence per row), flash-like attention."""
    from transformers import masking_utils

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    core = getattr(inner, "model", inner)
    patches = [
        mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", _flash_like_sdpa),
        mock.patch.object(masking_utils, "find_packed_sequence_indices", lambda position_ids: None),
    ]
    config = core.config
    if hasattr(config, "mapping_type"):  # Exo2Ego

        def placeholder_mask(input_ids, inputs_embeds, video_tokens):
            return (input_ids == config.video_token_id).unsqueeze(-1)

    else:  # LLaVA-NeXT-Video: (image mask, video mask)

        def placeholder_mask(input_ids, inputs_embeds, image_features=None, video_features=None):
            return (input_ids == config.image_token_id).unsqueeze(-1), (input_ids == config.video_token_id).unsqueeze(
                -1
            )

    patches.append(mock.patch.object(core, "get_placeholder_mask", placeholder_mask))
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield


def _labelled_suffix_loss(
    hidden: torch.Tensor, lm_head: torch.nn.Module, labels: torch.Tensor, targets: int
) -> torch.Tensor:
    """Cross-entropy on the last `targets` positions (the synthetic batches label exactly that suffix), the same
    computation as the model's `loss_on_labels` without its boolean indexing (data-dependent on meta)."""
    logits = lm_head(hidden[:, -targets - 1 : -1])
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels[:, -targets:].flatten())


@dataclass
class MetaSetup:
    """A model on the meta device, set up for training, and what its synthetic batch needs."""

    model: torch.nn.Module
    video_tokens: int
    vocab_size: int
    video_token_id: int
    image_size: int
    losses: frozenset = frozenset()
    exo_input: bool = False


def exo2ego_setup(
    workload: str,
    frames: int,
    scale: str = "paper",
    lora_r: int = 128,
    lora_alpha: int = 256,
    lora_dropout: float = 0.1,
    dtype: torch.dtype = torch.bfloat16,
) -> MetaSetup:
    """Exo2Ego at `scale` on the meta device with the trainable set (and LoRA) of `workload` (`stage2`, `stage3`)."""
    from modeling_exo2ego import Exo2EgoForConditionalGeneration

    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {workload!r}")
    config = ModelSize(scale).exo2ego_config(frames)
    meta = torch.device("meta")
    model = build_model(Exo2EgoForConditionalGeneration, config, meta, dtype, "sdpa")
    with torch.device(meta):
        model, resolved = apply_stage(model, workload, lora_r, lora_alpha, lora_dropout)
    return MetaSetup(
        model,
        2 * config.tokens_per_stream(frames),
        config.text_config.vocab_size,
        config.video_token_id,
        config.ego_vision_config.image_size,
        resolved.losses,
        exo_input=workload == "stage2",
    )


def shard_unit_sizes(model) -> dict[str, int]:
    """Parameters of the largest layer FSDP2 / ZeRO-3 gathers as one unit (a `_no_split_modules` class, as the
    stage scripts' wrap policy) and of everything outside such layers (the root group: connector, F, G, embeddings,
    LM head), which stays gathered for the whole step."""
    base = _base_model(model)
    names = set(getattr(base, "_no_split_modules", None) or ())
    units = [module for module in base.modules() if type(module).__name__ in names]
    in_units = {id(p) for module in units for p in module.parameters()}
    return {
        "largest_unit": max((sum(p.numel() for p in module.parameters()) for module in units), default=0),
        "outside_units": sum(p.numel() for p in model.parameters() if id(p) not in in_units),
    }


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
    setup: MetaSetup | None = None,
) -> dict:
    """Memory of one training step of `workload` on one GPU holding the whole model (see the module docstring);
    bytes in GiB. `setup` replaces the Exo2Ego model of `workload` by another meta model (the benchmark's peer)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}")
    if setup is None:
        setup = exo2ego_setup(workload, frames, scale, lora_r, lora_alpha, lora_dropout, dtype)
    model, stage_losses = setup.model, setup.losses
    meta = torch.device("meta")
    model.train()
    for name, parameter in model.named_parameters():
        if "lora_" in name:  # bf16 LoRA matmuls, as under autocast on the card (the fp32 masters are counted below)
            parameter.data = parameter.data.to(dtype)
    summary = configure_checkpointing(model, checkpointing, checkpoint_every, checkpoint_convnets, hf_input_grads)

    trainable = [p for p in model.parameters() if p.requires_grad]
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    trainable_count = sum(p.numel() for p in trainable)
    frozen_count = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    # PEFT keeps LoRA adapters in fp32 in both modes; `mixed` also keeps the other trainables in fp32.
    trainable_bytes = 4 * trainable_count if precision == "mixed" else 4 * lora + 2 * (trainable_count - lora)
    static = {
        "weights_frozen_bf16": 2 * frozen_count,
        "weights_trainable": trainable_bytes,
        "grads": trainable_bytes,
        "adamw_states": 2 * trainable_bytes,
        # Autocast keeps a bf16 copy of every fp32 weight a matmul uses until the forward ends (the LoRA adapters in
        # both modes).
        "autocast_weight_copies": 2 * trainable_count if precision == "mixed" else 2 * lora,
    }

    inputs = synthetic_batch(
        setup.vocab_size,
        setup.video_token_id,
        setup.video_tokens,
        batch,
        frames,
        setup.image_size,
        text_tokens,
        torch.device("cpu"),
        dtype,
        exo=setup.exo_input,
    )
    inputs = {k: torch.empty_like(v, device=meta) for k, v in inputs.items()}
    inputs.pop("attention_mask")  # all ones: transformers drops it anyway, and flash attention needs none
    labels = inputs.pop("labels")
    targets = text_tokens - PROMPT_TOKENS
    base = _base_model(model)
    with meta_forward_patches(model), SavedActivationCounter(model) as counter:
        if hasattr(base.config, "mapping_type"):  # Exo2Ego
            outputs = base.model(**inputs, use_cache=False, output_mapping_features=bool(stage_losses & {"kl", "ccl"}))
        else:
            outputs = base.model(**inputs, use_cache=False)
        hidden = outputs.last_hidden_state
        loss = _labelled_suffix_loss(hidden, base.lm_head, labels, targets)
        if "kl" in stage_losses:
            frames = inputs["pixel_values_videos"].shape[1]  # the per-sample KL groups each clip's frames
            loss = loss + kl_alignment_loss(outputs.exo_features, outputs.ego_to_exo, frames_per_clip=frames)
        if "ccl" in stage_losses:
            loss = loss + cycle_consistency_loss(
                outputs.ego_features, outputs.ego_cycle, outputs.exo_features, outputs.exo_cycle
            )
        del hidden
        activations = counter.live_bytes()
    del loss
    total = sum(static.values()) + sum(activations.values())
    return {
        "workload": workload,
        "batch": batch,
        "frames": frames,
        "seq_len": setup.video_tokens + text_tokens,
        "precision": precision,
        "checkpointing": summary,
        "params_m": {"trainable": trainable_count / 1e6, "lora": lora / 1e6, "frozen": frozen_count / 1e6},
        "shard_units_m": {k: v / 1e6 for k, v in shard_unit_sizes(model).items()},
        "static_gib": {k: v / GIB for k, v in static.items()},
        "activations_gib": {k: v / GIB for k, v in sorted(activations.items(), key=lambda kv: -kv[1])},
        "activations_total_gib": sum(activations.values()) / GIB,
        "total_gib": total / GIB,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Per-GPU memory of the distributed strategies, and the cheapest setting that fits a card
# ---------------------------------------------------------------------------------------------------------------------

# Cheapest first: DDP and ZeRO-2 move the gradients once per step; FSDP2 and ZeRO-3 also gather the weights in forward
# and backward (FSDP2 first: it is the one verified here, on CPU processes).
STRATEGIES = ("ddp", "zero2", "fsdp2", "zero3")
# What the stage scripts can switch: `--activation_checkpointing false | true` (true: every CLIP encoder layer, LLM
# decoder layer, connector bottleneck and mapping block, i.e. BENCHMARKS.md's `full` + conv blocks). Cheapest first.
TRAINING_CHECKPOINTING = {"none": ("none", False), "full": ("full", True)}
CARDS_GB = (80, 141)
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

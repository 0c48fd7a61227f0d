"""GPU memory of one training step on one GPU holding the whole model, counted without a GPU.

The model is built at a given size (`train/model_at_scale.py`) on PyTorch's meta device (shapes only: no memory, no
arithmetic), set up as the stage scripts set it up (stage, LoRA, checkpointing), and run forward once while a
saved-tensor hook records every tensor autograd keeps for backward. Memory of a step on one GPU holding the whole
model is then

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

`estimate` is the count; `train/memory_plan.py` turns it into the per-GPU memory of each distributed strategy
(`exo2ego plan-memory`), and `benchmarks/gpu_memory.py` prints it with a breakdown, the peer included.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import weakref
from dataclasses import dataclass
from unittest import mock

import torch
from transformers import masking_utils

from modeling_exo2ego import Exo2EgoForConditionalGeneration
from train.losses import cycle_consistency_loss, kl_alignment_loss
from train.model_at_scale import (
    PRECISIONS,
    PROMPT_TOKENS,
    ModelSize,
    _base_model,
    apply_stage,
    build_model,
    configure_checkpointing,
    synthetic_batch,
)

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

"""Shared set-up of the GPU benchmarks: random-init paper-scale (or reduced) Exo2Ego and peer models, the stage
settings, activation checkpointing, torch.compile, precision, synthetic batches, and the device facts every result
records.

Paper scale (DESIGN section 2): two CLIP-L/14-336 towers (hidden 1024, 24 layers, 16 heads, MLP 4096, 336 px,
patch 14), the `stc` connector, Mistral-7B (`MistralConfig()` defaults), 16 frames. Nothing is downloaded: every
model is built from configs with random weights. The `reduced` scale keeps every module type at CPU-sized widths;
`tiny` is the test size.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import re
import sys
from dataclasses import dataclass

import torch

from benchmarks.common import cpu_name
from benchmarks.flops import PROMPT_TOKENS

PAPER_VISION = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336, patch_size=14,
    projection_dim=768,
)
# Reduced: a 112 px image on patch 14 gives an 8x8 grid, the smallest the ResNet mapping accepts; three layers so the
# feature layer (-2) still leaves one unused layer, as CLIP-L's 24th. Paper connector depth and mapping depth.
REDUCED_VISION = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, image_size=112, patch_size=14,
    projection_dim=64,
)
REDUCED_TEXT = dict(
    hidden_size=256, intermediate_size=768, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2,
    vocab_size=4096, max_position_embeddings=4096,
)
# Tiny: the sizes of `exo2ego.tiny` (tests): 32 px on patch 4, one connector block, two mapping blocks.
TINY_VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32, patch_size=4,
    projection_dim=32,
)
TINY_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=512, max_position_embeddings=2048,
)
SCALES = {
    "paper": (PAPER_VISION, None, {}),
    "reduced": (REDUCED_VISION, REDUCED_TEXT, dict(mapping_ngf=16)),
    "tiny": (TINY_VISION, TINY_TEXT, dict(mapping_ngf=8, mapping_n_blocks=2, connector_depth=1)),
}

# Modules compiled by `compile_modules(..., "vision")` (the towers, F, G and the connector; the peer's tower and
# projector): convolution-heavy code with many small kernels, where fusion pays most.
EXO2EGO_VISION_MODULES = ("ego_vision_tower", "exo_vision_tower", "ego_to_exo", "exo_to_ego", "connector")
PEER_VISION_MODULES = ("vision_tower", "multi_modal_projector")
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

    def exo2ego_config(self, frames: int, include_exo_branch: bool = True, video_token_id: int | None = None, **overrides):
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


def add_scale_arguments(parser) -> None:
    """`--reduced` / `--tiny` (default: the paper's scale)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--reduced", dest="scale", action="store_const", const="reduced",
                       help="CPU-sized configs: every module type at paper depth, small widths")
    group.add_argument("--tiny", dest="scale", action="store_const", const="tiny", help="test-sized configs")
    parser.set_defaults(scale="paper")


def scale_default(scale: str, paper, reduced, tiny):
    return {"paper": paper, "reduced": reduced, "tiny": tiny}[scale]


# ---------------------------------------------------------------------------------------------------------------------
# Device and dtype
# ---------------------------------------------------------------------------------------------------------------------


def pick_device(requested: str | None = None) -> torch.device:
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def start_run(args) -> tuple[torch.device, torch.dtype]:
    """Device and compute dtype of a benchmark run, with its seed and thread count (`args.device/seed/threads`)."""
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    return device, compute_dtype(device)


def compute_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs (the paper's setting); fp32 on CPUs, where bf16 matmuls are emulated on many machines."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


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


def free_memory(drop_compiled: bool = False) -> None:
    """Release freed memory; `drop_compiled` also forgets compiled code, which keeps the modules it was traced from
    (and so a dropped model's weights) alive."""
    if drop_compiled and "torch._dynamo" in sys.modules:
        torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_facts(device: torch.device) -> dict:
    """Card or CPU name and library versions, recorded with every result."""
    import peft
    import transformers

    facts = {
        "device_type": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        },
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        facts["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        facts["multiprocessors"] = props.multi_processor_count
    try:
        import flash_attn  # noqa: F401

        facts["versions"]["flash_attn"] = flash_attn.__version__
    except ImportError:
        facts["versions"]["flash_attn"] = None
    return facts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 10) -> float:
    """Measured dense matmul rate of this device in `dtype` (TFLOP/s): the MFU denominator.

    8192^3 on GPUs as the peer script; 1024^3 on CPUs. Random data (zeros run faster on some cards).
    """
    import time

    size = size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    seconds = time.perf_counter() - start
    return 2 * size**3 * repeats / seconds / 1e12


# ---------------------------------------------------------------------------------------------------------------------
# Stages, LoRA, precision
# ---------------------------------------------------------------------------------------------------------------------


def apply_stage(model, stage: str, lora_r: int, lora_alpha: int, lora_dropout: float):
    """Freeze/unfreeze (and wrap with LoRA) exactly as `train/` does for `stage`; returns (model, resolved stage).

    Uses `train.stages.resolve_stage` + `apply_trainable` and `train.pipeline.add_lora`, so the benchmark trains the
    modules the stage scripts train (including the frozen, unused last CLIP layer).
    """
    from train.pipeline import StageArguments, add_lora
    from train.stages import apply_trainable, resolve_stage

    resolved = resolve_stage(stage)
    prefix = ""
    if resolved.lora:
        model = add_lora(model, StageArguments(lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout))
        prefix = "base_model.model."
    apply_trainable(model, resolved, name_prefix=prefix)
    return model, resolved


def apply_peer_training(model, lora_r: int, lora_alpha: int, lora_dropout: float):
    """The peer script's set-up: LoRA on the LLM's linear layers, vision tower and projector trainable."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
    )
    model = get_peft_model(model, lora)
    for name, parameter in model.named_parameters():
        if "vision_tower" in name or "multi_modal_projector" in name:
            parameter.requires_grad_(True)
    return model


def apply_precision(model, precision: str, device: torch.device) -> None:
    """`mixed`: trainable parameters (and so their grads and AdamW states) in fp32, frozen ones in bf16, matmuls under
    bf16 autocast; `bf16`: every parameter in bf16 except PEFT's fp32 LoRA adapters (the peer script's setting).
    On CPUs everything stays fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if device.type != "cuda" or precision != "mixed":
        return
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


def autocast_context(device: torch.device):
    """bf16 autocast on GPUs (fp32 trainable weights meet bf16 activations); nothing on CPUs."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def make_optimizer(model, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as in the paper (0.9, 0.999; weight decay 0.02), fused on GPUs."""
    return torch.optim.AdamW(
        trainable_parameters(model), lr=1e-5, betas=(0.9, 0.999), weight_decay=0.02, fused=device.type == "cuda"
    )


def parameter_counts(model) -> dict[str, float]:
    """Millions of parameters: all, trainable, LoRA."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return {"total_m": total / 1e6, "trainable_m": trainable / 1e6, "lora_m": lora / 1e6}


# ---------------------------------------------------------------------------------------------------------------------
# Activation checkpointing and torch.compile
# ---------------------------------------------------------------------------------------------------------------------


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _layer_stacks(model) -> dict[str, list[torch.nn.Module]]:
    """{qualified name: layers} for every ModuleList of transformers' checkpointable layers (CLIP encoder layers,
    decoder layers)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    stacks = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and module and all(isinstance(m, GradientCheckpointingLayer) for m in module):
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


def configure_checkpointing(model, mode: str, every: int = 1, convnets: bool = False, hf_input_grads: bool = False) -> dict:
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
        "mode": mode, "every": every, "layers": checkpointed,
        "convnet_blocks": len(blocks) if convnets and mode != "none" else 0,
        "hf_input_grads": hf_input_grads and mode != "none",
    }


def compile_modules(model, which: str, backend: str = "inductor") -> list[str]:
    """`torch.compile` submodules in place: `vision` = towers, mappings and connector (Exo2Ego) or tower and
    projector (peer); `all` also every decoder layer of the LLM. Returns the compiled module names."""
    if which == "none":
        return []
    if which not in ("vision", "all"):
        raise ValueError(f"compile must be none, vision or all, got {which!r}")
    base = _base_model(model)
    inner = getattr(base, "model", base)
    names = []
    for name in EXO2EGO_VISION_MODULES + PEER_VISION_MODULES:
        module = getattr(inner, name, None)
        if module is not None:
            module.compile(backend=backend)
            names.append(name)
    if which == "all":
        for stack_name, layers in _layer_stacks(base).items():
            if _is_llm_stack(stack_name):
                for layer in layers:
                    layer.compile(backend=backend)
                names.append(f"{stack_name}[*]")
    return names


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic batches
# ---------------------------------------------------------------------------------------------------------------------


def synthetic_batch(
    vocab_size: int, video_token_id: int, video_tokens: int, batch: int, frames: int, image_size: int,
    text_tokens: int, device: torch.device, dtype: torch.dtype, exo: bool = False, seed: int = 0,
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
    result = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "pixel_values_videos": pixels}
    if exo:
        result["exo_pixel_values_videos"] = torch.randn(batch, frames, 3, image_size, image_size, generator=generator)
    return {k: v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in result.items()}

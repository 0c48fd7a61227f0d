"""Shared set-up of the GPU benchmarks on top of `train/model_at_scale.py` (which builds the random-init Exo2Ego and
peer models at a scale and applies the stage settings, LoRA, activation checkpointing and synthetic batches, as the
memory planner does): the `--reduced` / `--tiny` flags and the other options the scripts share (`ScaleArguments`,
`DeviceRunArguments`), the peer's LoRA, torch.compile, precision, the optimizer, and
the device facts every result records.

Paper scale (DESIGN section 2): two CLIP-L/14-336 towers (hidden 1024, 24 layers, 16 heads, MLP 4096, 336 px,
patch 14), the `stc` connector, Mistral-7B (`MistralConfig()` defaults), 16 frames. Nothing is downloaded: every
model is built from configs with random weights. The `reduced` scale keeps every module type at CPU-sized widths;
`tiny` is the test size.
"""

from __future__ import annotations

import contextlib
import gc
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

from benchmarks.common import cpu_name
from train.model_at_scale import PRECISIONS, _base_model, _is_llm_stack, _layer_stacks

# Modules compiled by `compile_modules(..., "vision")` (the towers, F, G and the connector; the peer's tower and
# projector): convolution-heavy code with many small kernels, where fusion pays most.
EXO2EGO_VISION_MODULES = ("ego_vision_tower", "exo_vision_tower", "ego_to_exo", "exo_to_ego", "connector")
PEER_VISION_MODULES = ("vision_tower", "multi_modal_projector")


@dataclass
class ScaleArguments:
    """The model scale of a GPU benchmark: the paper's, or `--reduced` / `--tiny`. The scale is recorded as `scale`;
    `settings()` is what a result records (every field but the two flags, which `scale` records)."""

    reduced: bool = field(
        default=False, metadata={"help": "CPU-sized configs: every module type at paper depth, small widths"}
    )
    tiny: bool = field(default=False, metadata={"help": "test-sized configs"})
    scale: str = field(init=False, default="paper")  # paper, reduced or tiny: set from the two flags

    def __post_init__(self):
        if self.reduced and self.tiny:
            raise ValueError("argument --tiny: not allowed with argument --reduced")
        self.scale = "tiny" if self.tiny else "reduced" if self.reduced else "paper"

    def scale_default(self, paper, reduced, tiny):
        """The value of `paper`, `reduced` or `tiny` for this scale."""
        return scale_default(self.scale, paper, reduced, tiny)

    def settings(self) -> dict:
        """The settings a result JSON records: the fields, `scale` standing for `--reduced` / `--tiny`."""
        return {name: value for name, value in asdict(self).items() if name not in ("reduced", "tiny")}


@dataclass
class DeviceRunArguments(ScaleArguments):
    """What the benchmarks that run a model share (`gpu_train_step`, `gpu_eval`): the scale, the device, the CPU
    threads, the seed, the attention kernel and the torch.compile backend (`start_run` reads the first three)."""

    device: str | None = field(default=None, metadata={"help": "cuda | cpu (None: cuda when available)"})
    threads: int | None = field(
        default=None,
        metadata={"help": "CPU threads (torch.set_num_threads); 1 gives steadier CPU timings on a shared machine"},
    )
    seed: int = field(default=0, metadata={"help": "random seed of the weights and the synthetic inputs"})
    attn: Literal["sdpa", "flash_attention_2", "eager"] = field(
        default="sdpa", metadata={"help": "attention implementation of the models"}
    )
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend (with --compile)"})


def scale_default(scale: str, paper, reduced, tiny):
    """The value of `paper`, `reduced` or `tiny` for `scale`."""
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


def apply_peer_training(model, lora_r: int, lora_alpha: int, lora_dropout: float):
    """The peer script's set-up: LoRA on the LLM's linear layers, vision tower and projector trainable."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
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

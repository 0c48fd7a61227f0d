"""Distributed set-up of a stage run: FSDP2 on CPU processes, what actually ran, and accelerate configs that a stage
cannot use.

accelerate (1.15) switches to FSDP only on accelerator back-ends: on CPU processes (gloo) its state stays
`MULTI_CPU` and silently drops the FSDP plugin that `accelerate launch --config_file fsdp2.yaml` asked for, so the
run is plain DDP. torch's `fully_shard` itself runs on CPU with gloo, so `enable_fsdp_on_cpu` finishes what
accelerate left out: it installs the plugin accelerate built from the launcher's environment and marks the state
FSDP. From there the CPU run takes accelerate's and Trainer's own FSDP2 path (wrapping, sharded checkpoints, the
consolidated save), the same code a GPU run takes.
"""

from __future__ import annotations

import contextlib
import logging
import os

from accelerate import PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    set_model_state_dict,
)
from torch.distributed.fsdp import FSDPModule

logger = logging.getLogger(__name__)


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (or `ACCELERATE_USE_FSDP=true`)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def enable_fsdp_on_cpu(accelerator) -> bool:
    """Turn a multi-process CPU accelerator into an FSDP one when the launcher asked for FSDP; returns whether it did.

    Call right after the `Accelerator` is created and before anything is prepared."""
    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU or not fsdp_requested():
        return False
    plugin = FullyShardedDataParallelPlugin()  # from the launcher's FSDP_* environment, as accelerate builds it
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    logger.info("FSDP%d on %d CPU processes (gloo)", plugin.fsdp_version, state.num_processes)
    return True


@contextlib.contextmanager
def plain_class(model):
    """`fully_shard` swaps a module's class for a generated `FSDP<Name>` subclass defined in torch; while saving, give
    the model its own class back so `save_pretrained` copies the model's remote code, not torch's FSDP sources."""
    sharded_class = type(model)
    if not isinstance(model, FSDPModule):
        yield model
        return
    model.__class__ = next(base for base in sharded_class.__bases__ if base is not FSDPModule)
    try:
        yield model
    finally:
        model.__class__ = sharded_class


def sharded_units(model) -> dict[str, int]:
    """{class name: count} of the modules FSDP2 made into their own shard units (the model itself included)."""
    units: dict[str, int] = {}
    for module in model.modules():
        if isinstance(module, FSDPModule):
            name = next(base for base in type(module).__bases__ if base is not FSDPModule).__name__
            units[name] = units.get(name, 0) + 1
    return dict(sorted(units.items()))


def distributed_setup(accelerator, model=None) -> dict:
    """What ran, read from the live accelerator (and the prepared model), for `exo2ego_stage.json`."""
    state = accelerator.state
    setup = {
        "distributed_type": state.distributed_type.value,
        "num_processes": state.num_processes,
        "backend": state.backend,
        "device_type": accelerator.device.type,
        "mixed_precision": state.mixed_precision,
    }
    if state.distributed_type == DistributedType.FSDP:
        plugin = state.fsdp_plugin
        setup["fsdp"] = {
            "version": plugin.fsdp_version,
            "reshard_after_forward": _plain(plugin.reshard_after_forward),
            "state_dict_type": _plain(plugin.state_dict_type),
            "cpu_offload": type(plugin.cpu_offload).__name__ == "CPUOffloadPolicy",
            "mixed_precision_policy": _plain(plugin.mixed_precision_policy),
            # a functools.partial of torch's policy function once accelerate has set it up
            "auto_wrap_policy": getattr(
                getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy),
                "__name__",
                _plain(plugin.auto_wrap_policy),
            ),
            "transformer_cls_names_to_wrap": _plain(plugin.transformer_cls_names_to_wrap),
            "activation_checkpointing": plugin.activation_checkpointing,
            "cpu_ram_efficient_loading": plugin.cpu_ram_efficient_loading,
        }
        if model is not None:
            setup["fsdp"]["sharded_units"] = sharded_units(model)
    elif state.distributed_type == DistributedType.DEEPSPEED:
        setup["deepspeed"] = {"zero_stage": state.deepspeed_plugin.zero_stage}
    return setup


def _plain(value):
    """JSON-friendly form of a plugin setting (enums by name, policies by their repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set)):
        return sorted(_plain(item) for item in value)
    return getattr(value, "name", None) or str(value)


# FSDP1-only settings of an accelerate config: (environment variable `accelerate launch` sets, yaml key, FSDP2 default
# that the launcher also writes when the key is absent, what to use instead).
FSDP1_ONLY_SETTINGS = (
    ("FSDP_SHARDING_STRATEGY", "fsdp_sharding_strategy", "FULL_SHARD", "fsdp_reshard_after_forward"),
    ("FSDP_BACKWARD_PREFETCH", "fsdp_backward_prefetch", None, "nothing (FSDP2 prefetches itself)"),
    ("FSDP_FORWARD_PREFETCH", "fsdp_forward_prefetch", "false", "nothing (FSDP2 prefetches itself)"),
    ("FSDP_USE_ORIG_PARAMS", "fsdp_use_orig_params", "true", "nothing (FSDP2 keeps per-parameter sharding)"),
)


def check_launch_config(lora: bool, activation_checkpointing: bool = False) -> None:
    """Refuse an accelerate launch configuration the stage cannot use, naming its yaml key; call before the model
    loads. The launcher hands the config to the script as environment variables (`ACCELERATE_USE_FSDP`, `FSDP_*`).

    - FSDP must be version 2: per-parameter sharding is what lets frozen and trainable parameters (every stage
      freezes most of the model) share one wrapped layer, and FSDP1's flat parameters cannot.
    - FSDP1-only keys in an FSDP2 config would be silently ignored, so they are errors.
    - CPU offload of parameters is refused with LoRA (stage 3): unverified here, and the merged save re-gathers the
      whole model on rank 0 anyway.
    - FSDP's own activation checkpointing and the stage's `activation_checkpointing` exclude each other (Trainer
      says so too, but only once the model is loaded).
    (World sizes that do not divide `global_batch_size` are refused by `Exo2EgoTrainingArguments` while parsing.)
    """
    if not fsdp_requested():
        return
    version = os.environ.get("FSDP_VERSION", "1")
    if version != "2":
        raise ValueError(
            f"fsdp_version: {version} in the accelerate config; the stages support FSDP2 only (fsdp_version: 2), "
            "whose per-parameter sharding mixes frozen and trainable parameters in one wrapped layer"
        )
    for variable, key, default, instead in FSDP1_ONLY_SETTINGS:
        value = os.environ.get(variable)
        if value is not None and value != default:
            raise ValueError(
                f"{key}: {value} in the accelerate config is an FSDP1 setting; with fsdp_version: 2 use {instead}"
            )
    if activation_checkpointing and os.environ.get("FSDP_ACTIVATION_CHECKPOINTING", "false").lower() == "true":
        raise ValueError(
            "fsdp_activation_checkpointing: true in the accelerate config and activation_checkpointing: true in the "
            "stage arguments both checkpoint the layers; keep one (the stage's also covers the conv blocks)"
        )
    if lora and os.environ.get("FSDP_OFFLOAD_PARAMS", "false").lower() == "true":
        raise ValueError(
            "fsdp_offload_params: true in the accelerate config is not supported with LoRA (stage 3); set it to false"
        )


def is_sharded(model) -> bool:
    return isinstance(model, FSDPModule)


def gather_trainable_state(model) -> dict:
    """Full tensors (on CPU, main process; empty elsewhere) of the trainable parameters of an FSDP2 model; every
    rank must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    return get_model_state_dict(model, options=options)


def load_full_state(model, state: dict):
    """Load full tensors into `model`, sharding them when it is an FSDP2 model; returns (missing, unexpected) keys."""
    if not is_sharded(model):
        return model.load_state_dict(state, strict=False)
    return set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))

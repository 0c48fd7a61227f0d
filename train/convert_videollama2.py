"""Convert a VideoLLaMA2 checkpoint folder into an Exo2Ego starting checkpoint.

VideoLLaMA2 (`Videollama2MistralForCausalLM` and its Llama/Qwen2/Mixtral siblings) stores one CLIP tower, the STC
connector and the LLM. Exo2Ego starts both vision towers from that CLIP (the paper's ego and exo encoders share
their initialisation), takes the connector and the LLM as they are, and initialises F and G fresh (identity at
start). A `<video>` token is added to the tokenizer (the embedding matrix grows by the new rows).

    python -m train.convert_videollama2 --src VideoLLaMA2-7B --out checkpoints/exo2ego-base \
        [--vision-config clip-vit-large-patch14-336] [--num-frames 16] [--dtype bfloat16]

Weights are read from `*.safetensors` when present, otherwise from `*.bin` with `torch.load(weights_only=True)`
(never unpickling arbitrary objects). The converted folder gets `exo2ego_stage.json` with stage "base", which is
what the init stage starts from. Memory: about twice the checkpoint size in RAM (source tensors + model).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.tiny import build_processor
from modeling_exo2ego import Exo2EgoConfig, Exo2EgoForConditionalGeneration
from train.build_base import add_video_token, check_new_output_folder, save_base_checkpoint

# VideoLLaMA2 key -> Exo2Ego key(s). The CLIP tower goes to both towers; `vision_model.` is the pre-5.x CLIP prefix.
KEY_MAPPING: tuple[tuple[re.Pattern, tuple[str, ...]], ...] = tuple(
    (re.compile(pattern), targets)
    for pattern, targets in (
        (
            r"^model\.vision_tower\.vision_tower\.(?:vision_model\.)?(.+)$",
            (r"model.ego_vision_tower.\1", r"model.exo_vision_tower.\1"),
        ),
        (
            r"^model\.mm_projector\.sampler\.0\.(weight|bias)$",
            (r"model.connector.sampler.\1",),
        ),  # Sequential(conv, act)
        (r"^model\.mm_projector\.((?:s1|s2|readout)\..+)$", (r"model.connector.\1",)),
        (r"^model\.(embed_tokens|layers|norm)\.(.+)$", (r"model.language_model.\1.\2",)),
        (r"^lm_head\.weight$", ("lm_head.weight",)),
    )
)
# Buffers older checkpoints serialised; the model recomputes them.
SKIPPED_KEYS = re.compile(r"(position_ids|rotary_emb\.inv_freq)$")
CONNECTOR_TYPES = {"stc_connector": "stc", "stc_connector_v35": "stc_v35"}
TEXT_MODEL_TYPES = {
    "videollama2_mistral": "mistral",
    "videollama2_llama": "llama",
    "videollama2_mixtral": "mixtral",
    "videollama2_qwen2": "qwen2",
}


def map_key(key: str) -> tuple[str, ...]:
    """Exo2Ego names for one VideoLLaMA2 key; () for skipped buffers; `KeyError` for keys we do not know."""
    if SKIPPED_KEYS.search(key):
        return ()
    for pattern, targets in KEY_MAPPING:
        if pattern.match(key):
            return tuple(pattern.sub(target, key) for target in targets)
    raise KeyError(key)


def convert_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a VideoLLaMA2 state dict to Exo2Ego names (CLIP duplicated into both towers)."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        try:
            targets = map_key(key)
        except KeyError:
            unknown.append(key)
            continue
        for target in targets:
            converted[target] = tensor
    if unknown:
        raise ValueError(f"{len(unknown)} VideoLLaMA2 keys have no Exo2Ego counterpart, e.g. {unknown[:5]}")
    return converted


def read_checkpoint(folder: str) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: safetensors shards if any, else `.bin` files read with weights_only."""
    tensors: dict[str, torch.Tensor] = {}
    safetensors_files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
    if safetensors_files:
        for path in safetensors_files:
            tensors.update(load_file(path))
        return tensors
    bin_files = sorted(glob.glob(os.path.join(folder, "*.bin")))
    bin_files = [path for path in bin_files if os.path.basename(path) not in ("training_args.bin",)]
    if not bin_files:
        raise FileNotFoundError(f"{folder} has no *.safetensors or *.bin weights")
    for path in bin_files:
        tensors.update(torch.load(path, map_location="cpu", weights_only=True))
    return tensors


def vision_config_from_weights(state_dict: dict[str, torch.Tensor]) -> dict:
    """CLIP vision config fields read off the tower's weights; heads assume OpenAI CLIP's head width of 64."""
    prefix = next(
        (
            p
            for p in ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower.vision_tower.")
            if f"{p}embeddings.patch_embedding.weight" in state_dict
        ),
        None,
    )
    if prefix is None:
        raise ValueError("the checkpoint has no CLIP vision tower (model.vision_tower.vision_tower.*)")
    hidden, _, patch, _ = state_dict[f"{prefix}embeddings.patch_embedding.weight"].shape
    positions = state_dict[f"{prefix}embeddings.position_embedding.weight"].shape[0]
    layers = 1 + max(
        int(m.group(1)) for key in state_dict if (m := re.match(re.escape(prefix) + r"encoder\.layers\.(\d+)\.", key))
    )
    return {
        "hidden_size": hidden,
        "patch_size": patch,
        "image_size": round((positions - 1) ** 0.5) * patch,
        "num_hidden_layers": layers,
        "intermediate_size": state_dict[f"{prefix}encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_attention_heads": max(1, hidden // 64),
    }


def connector_depth_from_weights(state_dict: dict[str, torch.Tensor]) -> int:
    """RegNet blocks per connector stage (VideoLLaMA2 uses 4): the highest `s1.bN` index."""
    blocks = {int(m.group(1)) for key in state_dict if (m := re.match(r"model\.mm_projector\.s1\.b(\d+)\.", key))}
    if not blocks:
        raise ValueError("the checkpoint has no STC connector weights (model.mm_projector.s1.*)")
    return max(blocks)


def exo2ego_config(source_config: dict, vision_config: dict, video_token_id: int, num_frames: int | None, **overrides):
    """An `Exo2EgoConfig` from VideoLLaMA2's config.json and a CLIP vision config; `overrides` set other fields."""
    model_type = source_config.get("model_type", "")
    if model_type not in TEXT_MODEL_TYPES:
        raise ValueError(f"unsupported VideoLLaMA2 model_type {model_type!r}; known: {sorted(TEXT_MODEL_TYPES)}")
    projector = source_config.get("mm_projector_type")
    if projector not in CONNECTOR_TYPES:
        raise ValueError(f"mm_projector_type {projector!r} is not an STC connector ({sorted(CONNECTOR_TYPES)})")
    text = {
        k: v
        for k, v in source_config.items()
        if not k.startswith(("mm_", "tune_", "freeze_")) and k not in ("architectures", "model_type", "auto_map")
    }
    text_config = AutoConfig.for_model(TEXT_MODEL_TYPES[model_type], **text)
    return Exo2EgoConfig(
        ego_vision_config={"model_type": "clip_vision_model", **vision_config},
        exo_vision_config={"model_type": "clip_vision_model", **vision_config},
        text_config=text_config.to_dict(),
        video_token_id=video_token_id,
        num_frames=num_frames or source_config.get("num_frames", 16),
        vision_feature_layer=source_config.get("mm_vision_select_layer", -2),
        connector_type=CONNECTOR_TYPES[projector],
        **overrides,
    )


def load_vision_config(path: str) -> dict:
    """Vision fields from a CLIP folder or config.json (a full CLIPConfig or a vision-only one)."""
    config = AutoConfig.from_pretrained(path)
    config = getattr(config, "vision_config", config)
    return {
        k: v for k, v in config.to_dict().items() if k not in ("architectures", "transformers_version", "model_type")
    }


def convert(
    src: str,
    out: str,
    vision_config: dict | None = None,
    num_frames: int | None = None,
    dtype: str = "bfloat16",
    **config_overrides,
) -> None:
    """Write an Exo2Ego checkpoint (weights, processor, `exo2ego_stage.json`) converted from VideoLLaMA2 `src`;
    `config_overrides` set other `Exo2EgoConfig` fields (e.g. the mapping's `mapping_ngf`)."""
    with open(os.path.join(src, "config.json")) as handle:
        source_config = json.load(handle)
    state_dict = read_checkpoint(src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    video_token_id = add_video_token(tokenizer)
    config = exo2ego_config(
        source_config,
        vision_config or vision_config_from_weights(state_dict),
        video_token_id,
        num_frames,
        connector_depth=connector_depth_from_weights(state_dict),
        **config_overrides,
    )
    model = Exo2EgoForConditionalGeneration._from_config(config, dtype=getattr(torch, dtype))
    converted = convert_state_dict(state_dict)
    result = model.load_state_dict(converted, strict=False)
    fresh = ("model.ego_to_exo.", "model.exo_to_ego.")  # F and G are new
    missing = [key for key in result.missing_keys if not key.startswith(fresh)]
    if missing or result.unexpected_keys:
        raise ValueError(f"conversion mismatch: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}")
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    save_base_checkpoint(
        model,
        build_processor(config, tokenizer),
        out,
        {
            "description": "converted from VideoLLaMA2 (CLIP -> both towers, STC connector, LLM; F and G new)",
            "source": os.path.abspath(src),
            "converted_tensors": len(converted),
        },
    )


@dataclass
class ConvertArguments:
    """What `train/convert_videollama2.py` takes: the VideoLLaMA2 folder, the output folder, and optionally the CLIP
    vision config, frame count and dtype of the converted model."""

    src: str = field(metadata={"help": "VideoLLaMA2 checkpoint folder (config.json, weights, tokenizer)"})
    out: str = field(metadata={"help": "output folder (must not exist)"})
    vision_config: str | None = field(
        default=None, metadata={"help": "CLIP folder or config.json (unset: read off the weights)"}
    )
    num_frames: int | None = field(
        default=None, metadata={"help": "frames per video (unset: the checkpoint's num_frames)"}
    )
    dtype: Literal["bfloat16", "float16", "float32"] = field(
        default="bfloat16", metadata={"help": "dtype of the converted weights"}
    )

    def __post_init__(self):
        check_new_output_folder(self.out)


def main(argv=None) -> int:
    args = parse_script_arguments(ConvertArguments, argv, __doc__.splitlines()[0])
    convert(
        args.src,
        args.out,
        load_vision_config(args.vision_config) if args.vision_config else None,
        args.num_frames,
        args.dtype,
    )
    print(f"wrote an Exo2Ego base checkpoint to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

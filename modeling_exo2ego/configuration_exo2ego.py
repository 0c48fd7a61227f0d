"""Exo2Ego model configuration.

Exo2Ego (paper: "Exo2Ego: Exocentric Knowledge Guided MLLM for Egocentric Video Understanding") pairs two CLIP
vision towers (ego "student", exo "teacher"), CycleGAN-style mapping networks F (ego -> exo) and G (exo -> ego)
on per-frame feature grids, VideoLLaMA2's spatial-temporal convolution (STC) connector and a causal LLM.
"""

from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

CONNECTOR_PADDING = {"stc": 1, "stc_v35": 0}
# Training-only settings older configs held (now `Exo2EgoTrainingArguments.kl_mode` / `kl_temperature`).
LEGACY_TRAINING_KEYS = ("kl_mode", "kl_temperature")

# openai/clip-vit-large-patch14-336, the paper's vision encoder.
CLIP_L14_336 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
}

# Written into every saved config.json so the Auto factories find the remote code; AutoModel gives the generating
# class, as the model card's `AutoModel.from_pretrained("org/exo2ego", trust_remote_code=True)` promises.
AUTO_MAP = {
    "AutoConfig": "configuration_exo2ego.Exo2EgoConfig",
    "AutoModel": "modeling_exo2ego.Exo2EgoForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_exo2ego.Exo2EgoForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_exo2ego.Exo2EgoForConditionalGeneration",
}


def num_connector_tokens(num_frames: int, grid_size: int, connector_type: str) -> int:
    """Tokens the STC connector emits for one video stream.

    The connector's Conv3d downsampler has kernel 2, stride 2 and padding 1 (`stc`) or 0 (`stc_v35`), applied to
    (frames, grid, grid); e.g. 16 frames on CLIP-L/14-336's 24x24 grid give 9*13*13 = 1521 (`stc`) or 8*12*12 = 1152
    (`stc_v35`) tokens.
    """
    if connector_type not in CONNECTOR_PADDING:
        raise ValueError(f"connector_type must be one of {sorted(CONNECTOR_PADDING)}, got {connector_type!r}")
    padding = CONNECTOR_PADDING[connector_type]

    def downsampled(size: int) -> int:
        return (size + 2 * padding - 2) // 2 + 1

    if min(downsampled(num_frames), downsampled(grid_size)) < 1:
        raise ValueError(f"{num_frames} frames on a {grid_size}x{grid_size} grid are too few for `{connector_type}`")
    return downsampled(num_frames) * downsampled(grid_size) ** 2


@strict
class Exo2EgoConfig(PreTrainedConfig):
    r"""
    Configuration of an Exo2Ego model.

    Args:
        ego_vision_config / exo_vision_config (`CLIPVisionConfig` or dict):
            The two vision towers (same architecture; the ego tower is the student, the exo tower the teacher).
        text_config (any causal-LM config or dict, Mistral-7B by default):
            The language model.
        With no arguments, `Exo2EgoConfig()` is the paper's model: CLIP ViT-L/14-336 towers, 16 frames, Mistral-7B
        (vocabulary 32001 with `<video>` = 32000), the `stc` connector.
        video_token_id (`int`):
            Id of the `<video>` placeholder token; the processor repeats it once per inserted visual token.
        num_frames (`int`):
            Frames sampled per video by default (the processor's default too).
        vision_feature_layer (`int`):
            Hidden state of the towers used as features (-2: penultimate layer, CLS dropped).
        connector_type (`"stc"` or `"stc_v35"`):
            VideoLLaMA2's STC connector with Conv3d padding 1 (`stc`) or 0 (`stc_v35`).
        connector_depth (`int`):
            RegNet bottleneck blocks in each of the connector's two stages.
        mapping_type (`"resnet"` or `"mlp"`):
            F and G as CycleGAN ResNet generators on feature grids, or per-token MLPs (the paper's ablation).
        mapping_ngf, mapping_n_blocks, mapping_norm, mapping_residual:
            Generator width, residual blocks, normalisation (`instance`, `group`, `none`) and the global residual
            `F(x) = x + R(x)` with a zero-initialised last conv (F starts as the identity).
        include_exo_branch (`bool`):
            False for an ego-only inference release: no exo tower and no G are built.
    """

    model_type = "exo2ego"
    # Defaults are the paper's model: CLIP ViT-L/14-336 towers (24x24 patch grid) and Mistral-7B, whose vocabulary
    # gains the `<video>` token as id 32000.
    sub_configs_defaults = {
        "ego_vision_config": SubConfigSpec(AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_L14_336),
        "exo_vision_config": SubConfigSpec(AutoConfig, model_type="clip_vision_model", init_kwargs=CLIP_L14_336),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="mistral", init_kwargs={"vocab_size": 32001}),
    }

    ego_vision_config: dict | PreTrainedConfig | None = None
    exo_vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    video_token_id: int = 32000
    num_frames: int = 16
    vision_feature_layer: int = -2
    connector_type: Literal["stc", "stc_v35"] = "stc"
    connector_depth: int = 4
    mapping_type: Literal["resnet", "mlp"] = "resnet"
    mapping_ngf: int = 128
    mapping_n_blocks: int = 9
    mapping_norm: Literal["instance", "group", "none"] = "instance"
    mapping_residual: bool = True
    include_exo_branch: bool = True
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        # Configs saved before the KL settings moved to the training arguments carry them; they do not describe the
        # model (an inference release has no KL), so they are dropped on load.
        for legacy_training_key in LEGACY_TRAINING_KEYS:
            kwargs.pop(legacy_training_key, None)
        super().__post_init__(**kwargs)
        # @strict checked the types; these are the values no model can use.
        for name, lowest in (("num_frames", 1), ("video_token_id", 0)):
            if getattr(self, name) < lowest:
                raise ValueError(f"{name} must be an integer >= {lowest}, got {getattr(self, name)}")
        # Keys loaded from a Hub repo (e.g. "org/exo2ego--modeling_exo2ego...") win over the local defaults.
        self.auto_map = {**AUTO_MAP, **(getattr(self, "auto_map", None) or {})}
        ego, exo = self.ego_vision_config, self.exo_vision_config
        if (ego.image_size, ego.patch_size, ego.hidden_size) != (exo.image_size, exo.patch_size, exo.hidden_size):
            raise ValueError(
                "ego_vision_config and exo_vision_config must share image_size, patch_size and hidden_size"
            )
        if ego.image_size % ego.patch_size:
            raise ValueError(f"image_size {ego.image_size} is not a multiple of patch_size {ego.patch_size}")
        if self.mapping_type == "resnet" and (self.grid_size % 4 or self.grid_size < 8):
            raise ValueError(
                f"the ResNet mapping halves the {self.grid_size}x{self.grid_size} feature grid twice and needs a "
                "multiple of 4 that is at least 8 (e.g. CLIP-L/14-336 gives 24)"
            )

    @property
    def grid_size(self) -> int:
        """Side of a tower's patch grid, e.g. 336 // 14 = 24."""
        return self.ego_vision_config.image_size // self.ego_vision_config.patch_size

    def tokens_per_stream(self, num_frames: int | None = None) -> int:
        """Visual tokens one stream (x, F(x) or y) contributes for `num_frames` frames."""
        return num_connector_tokens(num_frames or self.num_frames, self.grid_size, self.connector_type)


__all__ = ["AUTO_MAP", "Exo2EgoConfig", "num_connector_tokens"]

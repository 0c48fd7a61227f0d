"""PyTorch Exo2Ego model.

Shapes below use B videos, T frames, a tower patch grid of g x g (24 for CLIP-L/14-336), tower width C (1024),
LLM width D (4096) and N visual tokens per stream (1521 for `stc` with 16 frames).

    ego pixels (B,T,3,S,S) -> ego tower -> x (B*T,C,g,g) -> F -> F(x) (B*T,C,g,g)
    [connector(x) ; connector(F(x))] (B,2N,D) -> scattered into the LLM's input embeddings at `<video>` positions
    exo pixels (B,T,3,S,S) -> exo tower -> y;  G(y), G(F(x)), F(G(y)) feed the stage-2 KL and cycle losses.

The model returns those feature grids (`output_mapping_features=True`); the losses are training code, in the
project's `train/losses.py`, not part of this bundle.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_exo2ego import CONNECTOR_PADDING, Exo2EgoConfig


class FanInInit:
    """A conv/linear layer initialised by He (fan-in) init with a zero bias (see `_init_weights`); the connector's and
    the mappings' layers are of the classes below.

    transformers' generic init (normal, std 0.02) suits wide transformer layers, but scales a signal by
    0.02 * sqrt(fan_in) per layer: about 0.16x per layer at the tiny models' width. Through the connector's convs,
    sampler and readout the video-dependent part of a visual token then ended about 10x below the constant part set
    by the biases, and the LLM learned to ignore the video. He init keeps the signal's scale through each layer at
    every width (timm, whose RegNet blocks VideoLLaMA2's connector uses, initialises its convs the same way).
    """


class FanInLinear(FanInInit, nn.Linear):
    """`nn.Linear` with He init."""


class FanInConv2d(FanInInit, nn.Conv2d):
    """`nn.Conv2d` with He init."""


class FanInConv3d(FanInInit, nn.Conv3d):
    """`nn.Conv3d` with He init."""


class FanInConvTranspose2d(FanInInit, nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` with He init."""


class ZeroInit(FanInInit):
    """The last layer of a residual mapping: weight and bias start at zero, so the mapping starts as the identity.

    It draws a He init first, which `_init_weights` then overwrites: the draw keeps the random stream of a seeded model
    the same as with a He-init layer here, so every other weight starts where it would."""


class ZeroInitLinear(ZeroInit, nn.Linear):
    """`nn.Linear` starting at zero."""


class ZeroInitConv2d(ZeroInit, nn.Conv2d):
    """`nn.Conv2d` starting at zero."""


# ---------------------------------------------------------------------------------------------------------------------
# STC connector (VideoLLaMA2), plain torch. Submodule names follow VideoLLaMA2/timm so checkpoints convert by prefix.
# ---------------------------------------------------------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (N, C, H, W) map."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    """Bias-free 2D conv -> LayerNorm2d -> optional SiLU; (N, C_in, H, W) -> (N, C_out, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = FanInConv2d(
            in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups, bias=False
        )
        self.bn = LayerNorm2d(out_channels)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(hidden)))


class SqueezeExcite(nn.Module):
    """Channel gating from globally pooled features (squeeze ratio 0.25 of the block input)."""

    def __init__(self, channels: int, reduced_channels: int):
        super().__init__()
        self.fc1 = FanInConv2d(channels, reduced_channels, 1)
        self.act = nn.SiLU()
        self.fc2 = FanInConv2d(reduced_channels, channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(hidden.mean((2, 3), keepdim=True))))
        return hidden * gate.sigmoid()


class RegNetBottleneck(GradientCheckpointingLayer):
    """RegNet bottleneck: 1x1 conv, 3x3 depthwise conv, squeeze-excite, 1x1 conv, residual, SiLU.

    A checkpointing layer: at paper scale the connector's activations dominate a step's memory (BENCHMARKS.md has
    the measured share), so activation checkpointing must cover these blocks too.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels)
        self.conv2 = ConvNormAct(out_channels, out_channels, kernel_size=3, groups=out_channels)
        self.se = SqueezeExcite(out_channels, max(1, round(in_channels * 0.25)))
        self.conv3 = ConvNormAct(out_channels, out_channels, act=False)
        self.downsample = ConvNormAct(in_channels, out_channels, act=False) if in_channels != out_channels else None
        self.act3 = nn.SiLU()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shortcut = hidden if self.downsample is None else self.downsample(hidden)
        hidden = self.conv3(self.se(self.conv2(self.conv1(hidden))))
        return self.act3(hidden + shortcut)


class RegStage(nn.Module):
    """`depth` RegNet bottlenecks named b1..b{depth}; only the first changes the width."""

    def __init__(self, depth: int, in_channels: int, out_channels: int):
        super().__init__()
        for index in range(depth):
            self.add_module(
                f"b{index + 1}", RegNetBottleneck(in_channels if index == 0 else out_channels, out_channels)
            )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            hidden = block(hidden)
        return hidden


class Exo2EgoSTCConnector(nn.Module):
    """VideoLLaMA2's spatial-temporal convolution connector.

    Per-frame RegNet stage `s1`, a 2x2x2 stride-2 Conv3d `sampler` over (T, g, g), a second per-frame stage `s2`
    and a two-layer MLP `readout`. Input (B, T, C, g, g); output (B, N, D) with N = T' * g' * g'.
    """

    def __init__(self, in_channels: int, hidden_size: int, depth: int, padding: int):
        super().__init__()
        self.s1 = RegStage(depth, in_channels, hidden_size)
        self.sampler = FanInConv3d(hidden_size, hidden_size, kernel_size=2, stride=2, padding=padding)
        self.sampler_act = nn.SiLU()
        self.s2 = RegStage(depth, hidden_size, hidden_size)
        self.readout = nn.Sequential(
            FanInLinear(hidden_size, hidden_size), nn.GELU(), FanInLinear(hidden_size, hidden_size)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, frames = features.shape[:2]
        hidden = self.s1(features.flatten(0, 1))  # (B*T, D, g, g)
        hidden = hidden.unflatten(0, (batch, frames)).transpose(1, 2)  # (B, D, T, g, g)
        hidden = self.sampler_act(self.sampler(hidden))  # (B, D, T', g', g')
        hidden = self.s2(hidden.transpose(1, 2).flatten(0, 1))  # (B*T', D, g', g')
        hidden = hidden.unflatten(0, (batch, -1)).permute(0, 1, 3, 4, 2).flatten(1, 3)  # (B, T'*g'*g', D)
        return self.readout(hidden)


# ---------------------------------------------------------------------------------------------------------------------
# Mapping networks F (ego -> exo) and G (exo -> ego)
# ---------------------------------------------------------------------------------------------------------------------


def _norm_2d(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class ResnetBlock(GradientCheckpointingLayer):
    """Two reflect-padded 3x3 convs with a residual connection (no activation after the sum, as in CycleGAN);
    checkpointed with the rest of the model when activation checkpointing is on."""

    def __init__(self, channels: int, norm: str):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ReflectionPad2d(1), FanInConv2d(channels, channels, 3), _norm_2d(norm, channels), nn.ReLU()
        )
        self.conv2 = nn.Sequential(nn.ReflectionPad2d(1), FanInConv2d(channels, channels, 3), _norm_2d(norm, channels))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.conv2(self.conv1(hidden))


class Exo2EgoResnetMapping(nn.Module):
    """CycleGAN-style ResNet generator on one frame's feature grid, (N, C, g, g) -> (N, C, g, g).

    `stem` (reflect-pad 7x7 conv to `ngf`), `down` (two stride-2 3x3 convs, ngf -> 4*ngf, g -> g/4), `blocks`
    (`n_blocks` residual blocks), `up` (two transposed convs back to ngf and g), `head` (7x7 conv to C). No tanh:
    CLIP features are unbounded. With `residual`, the output is x + head(...) and the head starts at zero, so the
    mapping starts as the identity (both towers start from the same CLIP).
    """

    def __init__(self, channels: int, ngf: int, n_blocks: int, norm: str, residual: bool):
        super().__init__()
        self.residual = residual
        self.stem = nn.Sequential(nn.ReflectionPad2d(3), FanInConv2d(channels, ngf, 7), _norm_2d(norm, ngf), nn.ReLU())
        self.down = nn.Sequential(
            *(
                nn.Sequential(
                    FanInConv2d(ngf * 2**i, ngf * 2 ** (i + 1), 3, stride=2, padding=1),
                    _norm_2d(norm, ngf * 2 ** (i + 1)),
                    nn.ReLU(),
                )
                for i in range(2)
            )
        )
        self.blocks = nn.Sequential(*(ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)))
        self.up = nn.Sequential(
            *(
                nn.Sequential(
                    FanInConvTranspose2d(
                        ngf * 2 ** (2 - i), ngf * 2 ** (1 - i), 3, stride=2, padding=1, output_padding=1
                    ),
                    _norm_2d(norm, ngf * 2 ** (1 - i)),
                    nn.ReLU(),
                )
                for i in range(2)
            )
        )
        head_conv = ZeroInitConv2d if residual else FanInConv2d
        self.head = nn.Sequential(nn.ReflectionPad2d(3), head_conv(ngf, channels, 7))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mapped = self.head(self.up(self.blocks(self.down(self.stem(features)))))
        return features + mapped if self.residual else mapped


class Exo2EgoMlpMapping(nn.Module):
    """Per-token two-layer MLP on (N, C, g, g) grids: the paper's "fully connected" mapping ablation."""

    def __init__(self, channels: int, hidden: int, residual: bool):
        super().__init__()
        self.residual = residual
        self.fc1 = FanInLinear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = (ZeroInitLinear if residual else FanInLinear)(hidden, channels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features.permute(0, 2, 3, 1)
        mapped = self.fc2(self.act(self.fc1(tokens))).permute(0, 3, 1, 2)
        return features + mapped if self.residual else mapped


def build_mapping(config: Exo2EgoConfig) -> nn.Module:
    channels = config.ego_vision_config.hidden_size
    if config.mapping_type == "mlp":
        return Exo2EgoMlpMapping(channels, 4 * config.mapping_ngf, config.mapping_residual)
    return Exo2EgoResnetMapping(
        channels, config.mapping_ngf, config.mapping_n_blocks, config.mapping_norm, config.mapping_residual
    )


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


MAPPING_FEATURE_NAMES = ("ego_features", "exo_features", "ego_to_exo", "exo_to_ego", "ego_cycle", "exo_cycle")


@dataclass
class Exo2EgoVideoOutput(BaseModelOutputWithPooling):
    """
    Output of `get_video_features`.

    last_hidden_state (B, T*g*g, C): patch features of `config.vision_feature_layer` (CLS dropped) of the tower that
        was run: the ego tower for ego pixels, the exo tower for exo pixels alone.
    pooler_output (B, M, D): the visual tokens the LLM receives, M = 2N for ego input ([x; F(x)]), N for exo alone.
    hidden_states / attentions: that tower's, per frame (B*T, 1+g*g, C), when `output_hidden_states` /
        `output_attentions` are asked.
    ego_features ... exo_cycle: with `output_mapping_features=True` (paired ego+exo pixels), the per-frame feature
        grids (B*T, C, g, g) of the stage-2 losses: x, y, F(x), G(y), G(F(x)), F(G(y)); otherwise None.
    """

    ego_features: torch.FloatTensor | None = None
    exo_features: torch.FloatTensor | None = None
    ego_to_exo: torch.FloatTensor | None = None
    exo_to_ego: torch.FloatTensor | None = None
    ego_cycle: torch.FloatTensor | None = None
    exo_cycle: torch.FloatTensor | None = None


@dataclass
class Exo2EgoModelOutput(ModelOutput):
    """
    last_hidden_state (B, L, D); cache; hidden_states/attentions of the LLM when requested; and, with
    `output_mapping_features=True` and both views given, per-frame feature grids (B*T, C, g, g):
    ego_features x, exo_features y, ego_to_exo F(x), exo_to_ego G(y), ego_cycle G(F(x)), exo_cycle F(G(y)).
    Field order follows transformers' multimodal outputs, so `outputs[0]` is the last hidden state.
    """

    last_hidden_state: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    ego_features: torch.FloatTensor | None = None
    exo_features: torch.FloatTensor | None = None
    ego_to_exo: torch.FloatTensor | None = None
    exo_to_ego: torch.FloatTensor | None = None
    ego_cycle: torch.FloatTensor | None = None
    exo_cycle: torch.FloatTensor | None = None


@dataclass
class Exo2EgoCausalLMOutput(ModelOutput):
    """
    loss (token cross-entropy where labels != -100) and logits (B, L, V) first, as in transformers' causal-LM and
    VLM outputs (`outputs[0]` is the loss when labels are given, else the logits), then the fields of
    `Exo2EgoModelOutput` except `last_hidden_state`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    ego_features: torch.FloatTensor | None = None
    exo_features: torch.FloatTensor | None = None
    ego_to_exo: torch.FloatTensor | None = None
    exo_to_ego: torch.FloatTensor | None = None
    ego_cycle: torch.FloatTensor | None = None
    exo_cycle: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


class Exo2EgoPreTrainedModel(PreTrainedModel):
    config_class = Exo2EgoConfig
    config: Exo2EgoConfig
    base_model_prefix = "model"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # Decoding steps carry no pixels and no data-dependent branches, so static-cache generation may compile them.
    _can_compile_fullgraph = True

    def post_init(self):
        super().post_init()
        # The towers' and LLM's `_no_split_modules` were gathered from the children; keep the layer classes this
        # model really contains (CLIP also lists its text embeddings), as FSDP's auto-wrap policy refuses absent ones.
        present = {type(module).__name__ for module in self.modules()}
        self._no_split_modules = {name for name in self._no_split_modules if name in present}

    def enable_input_require_grads(self):
        """Make the LLM's input embeddings require grad (what PEFT and reentrant checkpointing need).

        transformers' default also hooks both towers' patch embeddings, which under checkpointing makes the frozen exo
        tower of stage 2 recompute and run a backward for nothing (about 9% more work at paper scale)."""

        def make_inputs_require_grads(module, inputs, output):
            output.requires_grad_(True)

        self._require_grads_hooks = [self.get_input_embeddings().register_forward_hook(make_inputs_require_grads)]
        self._require_grads_hook = self._require_grads_hooks[0]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, FanInInit):
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        if isinstance(module, ZeroInit):
            init.zeros_(module.weight)
            init.zeros_(module.bias)


class Exo2EgoModel(Exo2EgoPreTrainedModel):
    """Vision towers, mappings, connector and the LLM backbone (no LM head)."""

    def __init__(self, config: Exo2EgoConfig):
        super().__init__(config)
        self.ego_vision_tower = AutoModel.from_config(config.ego_vision_config)
        self.ego_to_exo = build_mapping(config)
        if config.include_exo_branch:
            self.exo_vision_tower = AutoModel.from_config(config.exo_vision_config)
            self.exo_to_ego = build_mapping(config)
        else:  # an ego-only release made from a full checkpoint drops these weights on purpose
            self._keys_to_ignore_on_load_unexpected = [r"(^|\.)exo_vision_tower\.", r"(^|\.)exo_to_ego\."]
        self.connector = Exo2EgoSTCConnector(
            config.ego_vision_config.hidden_size,
            config.text_config.hidden_size,
            config.connector_depth,
            CONNECTOR_PADDING[config.connector_type],
        )
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.language_model.set_input_embeddings(value)

    def encode_frames(
        self, pixel_values_videos: torch.Tensor, tower: nn.Module, **kwargs
    ) -> tuple[torch.Tensor, BaseModelOutputWithPooling]:
        """(B, T, 3, S, S) pixels -> (B*T, C, g, g) patch features of `config.vision_feature_layer` (CLS dropped),
        and the tower's own output (its hidden states and attentions when `kwargs` ask for them)."""
        if pixel_values_videos.ndim != 5 or pixel_values_videos.shape[2] != 3:
            raise ValueError(
                "pixel_values_videos / exo_pixel_values_videos must be (batch, frames, 3, height, width), got "
                f"{tuple(pixel_values_videos.shape)}"
            )
        size = tower.config.image_size
        if pixel_values_videos.shape[-2:] != (size, size):
            raise ValueError(
                f"video frames must be {size}x{size} for this model, got {tuple(pixel_values_videos.shape[-2:])}"
            )
        frames = pixel_values_videos.flatten(0, 1).to(tower.dtype)
        kwargs["output_hidden_states"] = True  # the feature layer is a hidden state
        tower_outputs = tower(pixel_values=frames, return_dict=True, **kwargs)
        hidden = tower_outputs.hidden_states[self.config.vision_feature_layer]
        grid = self.config.grid_size
        return hidden[:, 1:].transpose(1, 2).unflatten(2, (grid, grid)), tower_outputs

    def connect(self, features: torch.Tensor, batch_size: int) -> torch.Tensor:
        """(B*T, C, g, g) -> (B, N, D) visual tokens."""
        return self.connector(features.unflatten(0, (batch_size, -1)))

    @can_return_tuple
    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor | None = None,
        exo_pixel_values_videos: torch.Tensor | None = None,
        output_mapping_features: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> Exo2EgoVideoOutput:
        """Visual tokens for the LLM (`pooler_output`) and, on request, the feature grids the stage-2 losses need.

        - ego pixels (inference, stages 2-3): tokens [connector(x); connector(F(x))], (B, 2N, D);
        - exo pixels alone (stage 1): tokens connector(y), (B, N, D);
        - both with `output_mapping_features` (stage 2): the ego tokens plus x, y, F(x), G(y), G(F(x)), F(G(y)).
          Without that flag the exo pixels are not encoded at all.
        `output_hidden_states` / `output_attentions` return the encoded tower's (ego, or exo alone).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        tower_kwargs = {"output_attentions": output_attentions} if output_attentions is not None else {}

        def output(features: torch.Tensor, tower_outputs, tokens: torch.Tensor, **mapping) -> Exo2EgoVideoOutput:
            patches = features.flatten(2).transpose(1, 2)  # (B*T, g*g, C)
            return Exo2EgoVideoOutput(
                last_hidden_state=patches.unflatten(0, (tokens.shape[0], -1)).flatten(1, 2),  # (B, T*g*g, C)
                pooler_output=tokens,
                hidden_states=tower_outputs.hidden_states if output_hidden_states else None,
                attentions=tower_outputs.attentions,
                **mapping,
            )

        if pixel_values_videos is None:
            if exo_pixel_values_videos is None:
                raise ValueError("get_video_features needs pixel_values_videos and/or exo_pixel_values_videos")
            self._require_exo_branch()
            exo, tower_outputs = self.encode_frames(exo_pixel_values_videos, self.exo_vision_tower, **tower_kwargs)
            return output(exo, tower_outputs, self.connect(exo, exo_pixel_values_videos.shape[0]))

        batch_size = pixel_values_videos.shape[0]
        ego, tower_outputs = self.encode_frames(pixel_values_videos, self.ego_vision_tower, **tower_kwargs)
        ego_to_exo = self.ego_to_exo(ego)
        tokens = self.connect(torch.cat([ego, ego_to_exo]), 2 * batch_size)  # one connector call for both streams
        tokens = torch.cat([tokens[:batch_size], tokens[batch_size:]], dim=1)
        if not output_mapping_features:
            return output(ego, tower_outputs, tokens)
        if exo_pixel_values_videos is None:
            raise ValueError("output_mapping_features=True needs exo_pixel_values_videos (paired ego+exo clips)")
        self._require_exo_branch()
        if exo_pixel_values_videos.shape[:2] != pixel_values_videos.shape[:2]:
            raise ValueError(
                f"ego and exo videos must have the same (batch, frames): {tuple(pixel_values_videos.shape[:2])} vs "
                f"{tuple(exo_pixel_values_videos.shape[:2])}"
            )
        exo, _ = self.encode_frames(exo_pixel_values_videos, self.exo_vision_tower)
        exo_to_ego = self.exo_to_ego(exo)
        return output(
            ego,
            tower_outputs,
            tokens,
            ego_features=ego,
            exo_features=exo,
            ego_to_exo=ego_to_exo,
            exo_to_ego=exo_to_ego,
            ego_cycle=self.exo_to_ego(ego_to_exo),
            exo_cycle=self.ego_to_exo(exo_to_ego),
        )

    def _require_exo_branch(self):
        if not self.config.include_exo_branch:
            raise ValueError("this is an ego-only release (include_exo_branch=False): it has no exo tower or G")

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, video_tokens: torch.Tensor
    ) -> torch.Tensor:
        """Boolean (B, L, 1) mask of `<video>` positions, found in `input_ids` or, without them, as the positions whose
        embedding equals the `<video>` token's (as transformers' VLMs do).

        The i-th video's M tokens fill the i-th run of M placeholders in reading order, so a row may hold several
        videos (packed, padding-free batches) as long as each row holds whole videos.
        """
        if input_ids is None:
            video_embedding = self.get_input_embeddings()(
                torch.tensor(self.config.video_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == video_embedding).all(-1)
        else:
            mask = input_ids == self.config.video_token_id
        per_row = mask.sum(1)
        num_videos, per_video = video_tokens.shape[:2]
        if int(per_row.sum()) != num_videos * per_video or (per_row % per_video != 0).any():
            raise ValueError(
                f"video placeholder tokens per sample {per_row.tolist()} do not match the {per_video} visual tokens "
                f"the model inserts per video for {num_videos} video(s); build inputs with Exo2EgoProcessor "
                "using the same frame count and input mode (ego, or exo alone)"
            )
        return mask.unsqueeze(-1)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        exo_pixel_values_videos: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        output_mapping_features: bool = False,
        **kwargs,
    ) -> Exo2EgoModelOutput:
        """
        input_ids (B, L) with `<video>` placeholders, or inputs_embeds (B, L, D) holding the `<video>` token's
        embedding at those positions; pixel_values_videos / exo_pixel_values_videos (V, T, 3, S, S), one video per
        run of placeholders (V = B, or more in a packed row with `position_ids`).
        Returns `Exo2EgoModelOutput` (a tuple with `return_dict=False`); see `get_video_features` for which views are
        encoded in which mode.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        has_video = pixel_values_videos is not None or exo_pixel_values_videos is not None
        if not has_video and input_ids is not None and not torch.compiler.is_compiling():
            is_prefill = cache is None or cache.get_seq_length() == 0
            if is_prefill and (input_ids == self.config.video_token_id).any():
                raise ValueError("the text holds <video> placeholders but no video pixels were given")
        features = {}
        if has_video:
            video_outputs = self.get_video_features(
                pixel_values_videos, exo_pixel_values_videos, output_mapping_features, return_dict=True
            )
            video_tokens = video_outputs.pooler_output
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, video_tokens)
            inputs_embeds = inputs_embeds.masked_scatter(mask, video_tokens.to(inputs_embeds.dtype))
            features = {name: getattr(video_outputs, name) for name in MAPPING_FEATURE_NAMES}
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        return Exo2EgoModelOutput(
            last_hidden_state=outputs.last_hidden_state,
            cache=getattr(outputs, "cache", None),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **features,
        )


class Exo2EgoForConditionalGeneration(Exo2EgoPreTrainedModel, GenerationMixin):
    """Exo2Ego with a language-modelling head: answers questions about (egocentric) videos."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # The LLM's layers come with its config's base plan (prefixed `model.language_model.`); the head gathers its
    # vocabulary shards, tied to the embeddings or not.
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: Exo2EgoConfig):
        super().__init__(config)
        self.model = Exo2EgoModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.lm_head

    def get_video_features(self, *args, **kwargs) -> Exo2EgoVideoOutput:
        """See `Exo2EgoModel.get_video_features`."""
        return self.model.get_video_features(*args, **kwargs)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        exo_pixel_values_videos: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_mapping_features: bool = False,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs,
    ) -> Exo2EgoCausalLMOutput:
        """
        labels (B, L): next-token targets, -100 where no loss applies (prompt, padding, visual tokens); shifted inside.
        logits_to_keep: compute logits only for the last `logits_to_keep` positions (0 = all).
        skip_logits: return only the loss, computed at labelled positions (`loss_on_labels`); defaults to True when
            training with labels, so a training step never materialises (B, L, V) logits.
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values_videos=pixel_values_videos,
            exo_pixel_values_videos=exo_pixel_values_videos,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_mapping_features=output_mapping_features,
            return_dict=True,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        extras = {key: value for key, value in outputs.items() if key != "last_hidden_state"}
        if skip_logits is None:
            skip_logits = self.training and labels is not None
        if skip_logits:
            if labels is None:
                raise ValueError("skip_logits=True needs labels: the loss is all that is computed")
            loss = self.loss_on_labels(hidden, labels, kwargs.get("num_items_in_batch"))
            return Exo2EgoCausalLMOutput(loss=loss, **extras)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        elif isinstance(logits_to_keep, torch.Tensor):
            hidden = hidden[:, logits_to_keep]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return Exo2EgoCausalLMOutput(loss=loss, logits=logits, **extras)

    def loss_on_labels(
        self, hidden: torch.Tensor, labels: torch.LongTensor, num_items_in_batch: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next-token cross-entropy computed from the LM head at labelled positions only.

        A training sequence is mostly visual tokens (3042 of them in the paper configuration) with a short caption,
        so projecting every position onto the vocabulary would spend most of the head's FLOPs and memory on
        positions whose loss is masked. Same value as the full-logits loss: the mean over labelled tokens, or the sum
        over `num_items_in_batch` when Trainer passes it (gradient accumulation over uneven micro-batches).
        """
        targets = labels[:, 1:]
        selected = targets != -100
        logits = self.lm_head(hidden[:, :-1][selected])  # (n_labelled, V)
        total = F.cross_entropy(logits.float(), targets[selected], reduction="sum")
        if num_items_in_batch is None:
            num_items_in_batch = selected.sum().clamp(min=1)
        return total / num_items_in_batch

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs):
        # GenerationMixin drops `pixel_values_videos` after prefill, but not our second video input.
        exo_pixels = kwargs.pop("exo_pixel_values_videos", None)
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            inputs["exo_pixel_values_videos"] = exo_pixels
        elif self._is_draft_prefill(inputs):
            # As the draft of assisted decoding, `generate` never hands this model the pixels (the main model's cache
            # holds the video): the draft reads the placeholders as the `<video>` token's embedding, like plain text.
            inputs["inputs_embeds"] = self.get_input_embeddings()(inputs.pop("input_ids"))
        return inputs

    def _is_draft_prefill(self, inputs: dict) -> bool:
        """True for a first forward over a prompt with `<video>` placeholders that comes without pixels and without
        a filled cache: what an assistant model gets from `generate(assistant_model=...)`."""
        input_ids, cache = inputs.get("input_ids"), inputs.get("cache")
        if input_ids is None or input_ids.shape[1] < 2 or inputs.get("pixel_values_videos") is not None:
            return False
        if cache is not None and cache.get_seq_length() > 0:
            return False
        return bool((input_ids == self.config.video_token_id).any())

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        video_token_id: int,
        torch_dtype: torch.dtype | None = None,
        **config_kwargs,
    ) -> "Exo2EgoForConditionalGeneration":
        """Assemble Exo2Ego from a CLIP checkpoint and a causal-LM checkpoint (local folder or Hub id).

        Both towers start from the CLIP vision weights (the paper's ego and exo encoders share their initialisation);
        the LLM and its head come from the causal LM; F, G and the connector are freshly initialised. `video_token_id`
        must be a token of the LLM's tokenizer (add `<video>` to it and pass its id; the embedding matrix is resized
        when the id is outside it). `config_kwargs` set any other `Exo2EgoConfig` field.
        """
        vision_config = AutoConfig.from_pretrained(vision_model_name_or_path)
        vision_config = getattr(
            vision_config, "vision_config", vision_config
        )  # a full CLIPConfig or a vision-only one
        text_model = AutoModelForCausalLM.from_pretrained(text_model_name_or_path, dtype=torch_dtype)
        config = Exo2EgoConfig(
            ego_vision_config=vision_config.to_dict(),
            exo_vision_config=vision_config.to_dict(),
            text_config=text_model.config.to_dict(),
            video_token_id=video_token_id,
            **config_kwargs,
        )
        model = cls(config)
        vision_model = AutoModel.from_pretrained(vision_model_name_or_path, dtype=torch_dtype)
        vision_model = getattr(vision_model, "vision_model", vision_model)
        vision_state = vision_model.state_dict()
        model.model.ego_vision_tower.load_state_dict(vision_state)
        if config.include_exo_branch:
            model.model.exo_vision_tower.load_state_dict(vision_state)
        model.model.language_model.load_state_dict(text_model.get_decoder().state_dict())
        model.lm_head.load_state_dict(text_model.get_output_embeddings().state_dict())
        if video_token_id >= model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(video_token_id + 1)
        return model.to(torch_dtype) if torch_dtype is not None else model


__all__ = [
    "Exo2EgoPreTrainedModel",
    "Exo2EgoModel",
    "Exo2EgoForConditionalGeneration",
    "Exo2EgoModelOutput",
    "Exo2EgoCausalLMOutput",
    "Exo2EgoVideoOutput",
]

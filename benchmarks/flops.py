"""Model-FLOP accounting for one training step of Exo2Ego (stages 2 and 3) and of the LLaVA-NeXT-Video peer.

Model FLOPs count the matrix work the step needs, never activation recomputation (checkpointing) and never work
whose result nothing uses. Every module use is split into three parts, because which of them runs depends on the
stage, not on the module:

    forward       F                  always;
    input grad    F (2x for attention scores and values)
                                     only when something trainable sits *before* the module's output, i.e. when its
                                     input requires grad or its own parameters are trainable (the gradient must flow
                                     through it to reach them);
    weight grad   F (weight matmuls) only when the module's own weights are trainable.

A linear layer with `n` weights on `t` tokens does F = 2*n*t (multiply-add = 2 FLOPs); a convolution does
2 * weight.numel() * output positions (transposed: input positions). Attention has no weights: scores QK^T and the
weighted sum AV cost 2*2*t_q*t_k*d_attn forward (causal: only the t(t+1)/2 visible pairs) and twice that backward
(dQ, dK from dS; dV, dP from dO). Norms, softmax, activations, embeddings lookups and the KL/cycle losses are left
out (element-wise, under 1% here).

Which parts run, per stage (DESIGN section 3; `train.stages` is the source of the trainable sets):

| module use           | stage 2                       | stage 3                       | peer (LLaVA-NeXT-Video)   |
|----------------------|-------------------------------|-------------------------------|---------------------------|
| ego tower (x)        | fwd + act-grad + weight-grad  | fwd + act-grad + weight-grad  | vision tower: same        |
| exo tower (y)        | fwd only (frozen, pixels in)  | not run                       | -                         |
| F on x, F on G(y)    | fwd + act-grad + weight-grad  | F on x: same                  | -                         |
| G on y               | fwd + weight-grad + act-grad  | -                             | -                         |
|                      | (not its first conv: y has    |                               |                           |
|                      | no grad)                      |                               |                           |
| G on F(x)            | fwd + act-grad + weight-grad  | -                             | -                         |
| connector on x, F(x) | fwd + act-grad (frozen)       | fwd + act-grad + weight-grad  | projector: trainable      |
| LLM decoder          | fwd + act-grad (frozen; VTG   | fwd + act-grad; LoRA adapters | same as stage 3           |
|                      | flows back to F, ego tower)   | also weight-grad              |                           |
| LM head              | fwd + act-grad, labelled      | same                          | same (useful part)        |
|                      | positions only                |                               |                           |

The patch embedding of a trainable tower needs no input gradient (pixels), and layers after the tower's feature
layer (CLIP layer 24 when features come from layer 23) influence nothing: their forward still runs in
`transformers`' CLIP, but it is waste, not model FLOPs (`include_waste=True` adds it back, and the LM head on
positions without a label, to compare with what the hardware executes).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from train.model_at_scale import PROMPT_TOKENS


@dataclass(frozen=True)
class Flops:
    """FLOPs of one module use: forward, input (activation) gradient and weight gradient."""

    forward: float = 0.0
    input_grad: float = 0.0
    weight_grad: float = 0.0

    @property
    def total(self) -> float:
        return self.forward + self.input_grad + self.weight_grad

    def __add__(self, other: Flops) -> Flops:
        return Flops(
            self.forward + other.forward, self.input_grad + other.input_grad, self.weight_grad + other.weight_grad
        )

    def __mul__(self, factor: float) -> Flops:
        return Flops(self.forward * factor, self.input_grad * factor, self.weight_grad * factor)

    __rmul__ = __mul__

    def as_dict(self) -> dict[str, float]:
        return {
            "forward": self.forward,
            "input_grad": self.input_grad,
            "weight_grad": self.weight_grad,
            "total": self.total,
        }


@dataclass(frozen=True)
class Use:
    """How a module is used in a step: are its weights trained, does its input carry a gradient?"""

    trainable: bool
    input_requires_grad: bool

    @property
    def needs_backward(self) -> bool:
        return self.trainable or self.input_requires_grad


def linear_use(weight_flops: float, attention_flops: float, use: Use) -> Flops:
    """Forward/backward split for a stack of weight matmuls (`weight_flops` forward) and attention (`attention_flops`
    forward) whose input carries a gradient whenever the stack needs a backward at all (true for every stack this
    applies to; layers whose input is pixels are counted apart, see `clip_tower_flops`)."""
    forward = weight_flops + attention_flops
    if not use.needs_backward:
        return Flops(forward=forward)
    return Flops(
        forward=forward,
        input_grad=weight_flops + 2 * attention_flops,
        weight_grad=weight_flops if use.trainable else 0.0,
    )


def used_vision_layers(vision_config, feature_layer: int) -> int:
    """Encoder layers that influence `hidden_states[feature_layer]` (hidden_states[k] follows k layers)."""
    layers = vision_config.num_hidden_layers
    return feature_layer if feature_layer >= 0 else layers + 1 + feature_layer


def clip_tower_flops(
    vision_config,
    feature_layer: int,
    frames: int,
    trainable: bool,
    embeddings_require_grad: bool = False,
    include_waste: bool = False,
) -> Flops:
    """A CLIP vision tower on `frames` images of P = (S/p)^2 patches + CLS, t = P + 1 tokens, width d, MLP width f.

    patch embedding  2 * (3 p^2 d) * P                       forward; weight grad when trainable; never an input
                                                             grad (its input is pixels)
    per layer        2 * t * (4 d^2 + 2 d f)   weights       (q, k, v, o projections; fc1, fc2)
                     4 * t^2 * d               attention     (QK^T and AV, bidirectional)
    over the layers up to the feature layer; the later ones only with `include_waste` (forward only). The layers
    need a backward when the tower trains, or when the patch embedding's output is made to require grad
    (`embeddings_require_grad`: transformers' `enable_input_require_grads` hook, see
    `train.model_at_scale.llm_only_input_grads`).
    """
    d, f, p = vision_config.hidden_size, vision_config.intermediate_size, vision_config.patch_size
    patches = (vision_config.image_size // p) ** 2
    tokens = patches + 1
    patch_embed = 2 * 3 * p * p * d * patches
    layer_weights = 2 * tokens * (4 * d * d + 2 * d * f)
    layer_attention = 4 * tokens * tokens * d
    used = used_vision_layers(vision_config, feature_layer)
    flops = Flops(forward=patch_embed, weight_grad=patch_embed if trainable else 0.0)
    flops = flops + linear_use(
        used * layer_weights, used * layer_attention, Use(trainable, trainable or embeddings_require_grad)
    )
    if include_waste:
        unused = vision_config.num_hidden_layers - used
        flops = flops + Flops(forward=unused * (layer_weights + layer_attention))
    return flops * frames


def decoder_layer_weights(text_config) -> tuple[int, list[tuple[int, int]]]:
    """Weights per decoder layer and the (in, out) shapes of its seven linear layers (q, k, v, o, gate, up, down)."""
    d, ff = text_config.hidden_size, text_config.intermediate_size
    heads, kv_heads = text_config.num_attention_heads, text_config.num_key_value_heads
    head_dim = getattr(text_config, "head_dim", None) or d // heads
    shapes = [(d, heads * head_dim), (d, kv_heads * head_dim), (d, kv_heads * head_dim), (heads * head_dim, d)]
    shapes += [(d, ff), (d, ff), (ff, d)]
    return sum(i * o for i, o in shapes), shapes


def decoder_flops(
    text_config,
    seq_len: int,
    use: Use,
    lora_rank: int = 0,
    causal: bool = True,
) -> tuple[Flops, Flops]:
    """A Mistral/Llama-style decoder (no LM head) on one sequence of s tokens; returns (base, LoRA adapters).

    per layer  2 * s * (d*H*hd + 2*d*Hkv*hd + H*hd*d + 3*d*ff)   weights (q, k, v, o; gate, up, down)
               2 * 2 * H*hd * s(s+1)/2                          causal attention (s^2 pairs with causal=False)
    LoRA rank r on all seven linears: 2 * s * r * sum(in + out), always trained, its input always carries a gradient.
    """
    per_layer, shapes = decoder_layer_weights(text_config)
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    pairs = seq_len * (seq_len + 1) / 2 if causal else seq_len * seq_len
    layers = text_config.num_hidden_layers
    base = linear_use(layers * 2 * seq_len * per_layer, layers * 4 * heads * head_dim * pairs, use)
    lora = Flops()
    if lora_rank:
        lora_weights = layers * 2 * seq_len * lora_rank * sum(i + o for i, o in shapes)
        lora = linear_use(lora_weights, 0.0, Use(trainable=True, input_requires_grad=True))
    return base, lora


def lm_head_flops(text_config, positions: int, use: Use) -> Flops:
    """2 * d * V per position the head projects (frozen in every stage here)."""
    return linear_use(2 * text_config.hidden_size * text_config.vocab_size * positions, 0.0, use)


# ---------------------------------------------------------------------------------------------------------------------
# Convolutional modules (STC connector, mappings F and G): the same rule, layer by layer, from a meta-device forward.
# ---------------------------------------------------------------------------------------------------------------------

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_net_flops(module: nn.Module, input_shape: tuple[int, ...], use: Use) -> Flops:
    """FLOPs of `module` on an input of `input_shape`, for `use`, counted layer by layer.

    Runs the module once on the meta device (no memory, no arithmetic) with forward hooks on its Linear, Conv and
    ConvTranspose layers. Per layer: forward 2 * weight.numel() * positions (output positions for Linear/Conv, input
    positions for ConvTranspose); input grad the same when the layer's input requires grad (as autograd decides:
    only after something trainable or a grad-carrying input); weight grad the same when the module is trainable.
    """
    if any(parameter.device.type != "meta" for parameter in module.parameters()):
        module = copy.deepcopy(module).to("meta")
    flags = [parameter.requires_grad for parameter in module.parameters()]
    for parameter in module.parameters():
        parameter.requires_grad_(use.trainable)
    totals = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0}

    def hook(layer, inputs, output):
        weight = layer.weight
        if isinstance(layer, nn.Linear):
            positions = output.numel() // layer.out_features
        elif isinstance(layer, _TRANSPOSED_TYPES):
            positions = inputs[0].numel() // layer.in_channels
        else:
            positions = output.numel() // layer.out_channels
        layer_flops = 2 * weight.numel() * positions
        totals["forward"] += layer_flops
        if inputs[0].requires_grad:
            totals["input_grad"] += layer_flops
        if weight.requires_grad:
            totals["weight_grad"] += layer_flops

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Linear, *_CONV_TYPES, *_TRANSPOSED_TYPES))
    ]
    try:
        with torch.enable_grad():
            module(torch.empty(input_shape, device="meta", requires_grad=use.input_requires_grad))
    finally:
        for handle in handles:
            handle.remove()
        for parameter, flag in zip(module.parameters(), flags):
            parameter.requires_grad_(flag)
    if not use.needs_backward:
        totals["input_grad"] = totals["weight_grad"] = 0.0
    return Flops(**totals)


# ---------------------------------------------------------------------------------------------------------------------
# Whole steps
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepShape:
    """One training micro-batch: `batch` samples of `frames` frames with `text_tokens` text tokens each, of which the
    first `PROMPT_TOKENS` precede the video and all later ones are targets."""

    batch: int
    frames: int
    text_tokens: int

    @property
    def loss_positions(self) -> int:
        return self.text_tokens - PROMPT_TOKENS


@dataclass
class StepFlops:
    """Per-sample FLOPs by component, and the step total for the batch."""

    components: dict[str, Flops] = field(default_factory=dict)
    batch: int = 1
    seq_len: int = 0

    def add(self, name: str, flops: Flops) -> None:
        self.components[name] = self.components.get(name, Flops()) + flops

    @property
    def per_sample(self) -> float:
        return sum(flops.total for flops in self.components.values())

    @property
    def total(self) -> float:
        return self.batch * self.per_sample

    def as_dict(self) -> dict:
        return {
            "seq_len": self.seq_len,
            "per_sample_tflop": self.per_sample / 1e12,
            "step_tflop": self.total / 1e12,
            "components_per_sample_gflop": {
                name: {key: value / 1e9 for key, value in flops.as_dict().items()}
                for name, flops in self.components.items()
            },
        }


def exo2ego_step_flops(
    config,
    trainable: frozenset[str] | set[str],
    losses: frozenset[str] | set[str],
    lora_rank: int,
    shape: StepShape,
    full_logits: bool = False,
    include_waste: bool = False,
    causal: bool = True,
    hf_input_grads: bool = False,
) -> StepFlops:
    """Model FLOPs of one Exo2Ego training step.

    `trainable` and `losses` are a resolved stage's sets (`train.stages.resolve_stage(...).trainable/.losses`): the
    exo branch (exo tower, G, the cycle terms) runs only when the stage has a KL or cycle loss. `full_logits` projects
    every position through the LM head (`skip_logits=False`); the useful part is the labelled positions only, so the
    rest counts only with `include_waste` (as the executed, not the model, FLOPs). `hf_input_grads` adds what
    transformers' input-grad hook on the frozen exo tower's patch embedding makes autograd run (the tower's and
    G(y)'s input gradients): waste too, so use it with `include_waste` only.
    """
    from modeling_exo2ego.configuration_exo2ego import CONNECTOR_PADDING
    from modeling_exo2ego.modeling_exo2ego import Exo2EgoSTCConnector, build_mapping

    vision, text = config.ego_vision_config, config.text_config
    grid, channels, frames = config.grid_size, vision.hidden_size, shape.frames
    tokens_per_stream = config.tokens_per_stream(frames)
    seq_len = 2 * tokens_per_stream + shape.text_tokens
    result = StepFlops(batch=shape.batch, seq_len=seq_len)
    mapping_features = bool(set(losses) & {"kl", "ccl"})

    ego_trained = "ego_vision_tower" in trainable
    result.add(
        "ego_tower",
        clip_tower_flops(vision, config.vision_feature_layer, frames, ego_trained, include_waste=include_waste),
    )
    x_grad = ego_trained

    with torch.device("meta"):
        mapping = build_mapping(config)
        connector = Exo2EgoSTCConnector(
            channels, text.hidden_size, config.connector_depth, CONNECTOR_PADDING[config.connector_type]
        )
    frame_shape = (frames, channels, grid, grid)  # one sample's frames through a mapping
    f_trained = "ego_to_exo" in trainable
    result.add("F", conv_net_flops(mapping, frame_shape, Use(f_trained, x_grad)))
    fx_grad = x_grad or f_trained

    connector_trained = "connector" in trainable
    stream_shape = (1, frames, channels, grid, grid)
    result.add("connector", conv_net_flops(connector, stream_shape, Use(connector_trained, x_grad)))
    result.add("connector", conv_net_flops(connector, stream_shape, Use(connector_trained, fx_grad)))
    tokens_grad = fx_grad or connector_trained

    if mapping_features:
        exo_trained = "exo_vision_tower" in trainable
        result.add(
            "exo_tower",
            clip_tower_flops(
                config.exo_vision_config,
                config.vision_feature_layer,
                frames,
                exo_trained,
                embeddings_require_grad=hf_input_grads,
                include_waste=include_waste,
            ),
        )
        y_grad = exo_trained or hf_input_grads
        if "ccl" in losses:
            g_trained = "exo_to_ego" in trainable
            result.add("G", conv_net_flops(mapping, frame_shape, Use(g_trained, y_grad)))  # G(y)
            result.add("G", conv_net_flops(mapping, frame_shape, Use(g_trained, fx_grad)))  # G(F(x))
            gy_grad = y_grad or g_trained
            result.add("F", conv_net_flops(mapping, frame_shape, Use(f_trained, gy_grad)))  # F(G(y))

    llm_use = Use(trainable=False, input_requires_grad=tokens_grad or bool(lora_rank))
    base, lora = decoder_flops(text, seq_len, llm_use, lora_rank, causal)
    result.add("llm", base)
    if lora_rank:
        result.add("llm_lora", lora)
    result.add("lm_head", lm_head_flops(text, shape.loss_positions, Use(False, tokens_grad or bool(lora_rank))))
    if include_waste and full_logits:
        result.add(
            "lm_head", lm_head_flops(text, seq_len - shape.loss_positions, Use(False, tokens_grad or bool(lora_rank)))
        )
    return result


def peer_video_tokens(peer_config, frames: int) -> int:
    """LLaVA-NeXT-Video: per frame the g x g grid pooled with stride 2 (ceil), e.g. 16 * 12 * 12 = 2304."""
    grid = peer_config.vision_config.image_size // peer_config.vision_config.patch_size
    pooled = (grid + 1) // 2  # what the peer script assumed; AvgPool2d floors, identical for even grids
    return frames * pooled * pooled


def peer_step_flops(
    peer_config, lora_rank: int, shape: StepShape, include_waste: bool = False, causal: bool = True
) -> StepFlops:
    """Model FLOPs of the peer step (LLaVA-NeXT-Video, LoRA on the LLM, vision tower and projector trainable).

    Vision tower: as `clip_tower_flops`, trainable. Projector: two linears (C -> D, D -> D) on the pooled tokens,
    trainable, input carries a gradient. LLM: frozen + LoRA, as Exo2Ego stage 3. LM head: useful at labelled
    positions; the peer model computes logits everywhere, which counts only with `include_waste`.
    """
    vision, text = peer_config.vision_config, peer_config.text_config
    video_tokens = peer_video_tokens(peer_config, shape.frames)
    seq_len = video_tokens + shape.text_tokens
    result = StepFlops(batch=shape.batch, seq_len=seq_len)
    result.add(
        "vision_tower",
        clip_tower_flops(vision, peer_config.vision_feature_layer, shape.frames, True, include_waste=include_waste),
    )
    projector = 2 * video_tokens * (vision.hidden_size * text.hidden_size + text.hidden_size * text.hidden_size)
    result.add("projector", linear_use(projector, 0.0, Use(True, True)))
    base, lora = decoder_flops(text, seq_len, Use(False, True), lora_rank, causal)
    result.add("llm", base)
    if lora_rank:
        result.add("llm_lora", lora)
    result.add("lm_head", lm_head_flops(text, shape.loss_positions, Use(False, True)))
    if include_waste:
        result.add("lm_head", lm_head_flops(text, seq_len - shape.loss_positions, Use(False, True)))
    return result


def peer_script_formula(
    n_llm_params: int, n_vision_params: int, text_config, shape: StepShape, seq_len: int, patches: int
) -> float:
    """The peer script's own formula (`../shared/bench/peer_llava_video_step.py`), kept to compare with its 28%:
    4 * N_llm * T_llm + 1.5 * (4 L H s^2 B) + 6 * N_vis * T_vis, with N_llm counting the embedding table and the head
    at every position, N_vis all 24 layers, and no vision attention."""
    tokens_llm = shape.batch * seq_len
    tokens_vision = shape.batch * shape.frames * (patches + 1)
    attention = 4 * text_config.num_hidden_layers * text_config.hidden_size * seq_len * seq_len * shape.batch
    return 4 * n_llm_params * tokens_llm + 3 * attention / 2 + 6 * n_vision_params * tokens_vision

"""The Exo2Ego training pipeline as one declarative table.

Every stage script reads its row of :data:`STAGES` (which modules train, which loss terms apply, which data and
which input views it uses, which stage's output it starts from) and applies the ablation switches of the paper's
Tables 7-8 through :func:`resolve_stage`. The frozen and trainable sets of the whole pipeline are therefore readable
here and nowhere else:

| stage  | data                         | views    | trains                               | loss           | LoRA |
|--------|------------------------------|----------|--------------------------------------|----------------|------|
| init   | exo: web pairs; ego: EgoClip | exo, ego | exo tower, ego tower, connector      | VTG per branch | -    |
| stage1 | Ego-ExoClip, all (clip, cam) | exo      | exo tower, connector                 | VTG            | -    |
| stage2 | Ego-ExoClip, all (clip, cam) | pair     | ego tower, F, G                      | VTG + KL + CCL | -    |
| stage3 | EgoIT                        | ego      | ego tower, F, connector (+ LLM LoRA) | VTG            | yes  |

The LLM (`language_model`, `lm_head`) is frozen everywhere (stage 3 adapts it through LoRA only). Connector
trainability is our choice (the paper is silent) and can be overridden per run. Init can also read Ego-ExoClip for
both towers (`dataset_path`, the demo's choice). Which terms apply is this table; their weights and the KL's form
(`kl_weight`, `ccl_weight`, `kl_mode`, `kl_temperature`) are training arguments (`train/trainer.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# Trainable units, named as the submodules of `Exo2EgoForConditionalGeneration` they address.
MODULE_PATHS = {
    "ego_vision_tower": "model.ego_vision_tower",
    "exo_vision_tower": "model.exo_vision_tower",
    "ego_to_exo": "model.ego_to_exo",  # F
    "exo_to_ego": "model.exo_to_ego",  # G
    "connector": "model.connector",
    "language_model": "model.language_model",
    "lm_head": "lm_head",
}
VISION_TOWERS = ("ego_vision_tower", "exo_vision_tower")

# Input views a batch can carry. "pair" feeds ego pixels for the LLM plus exo pixels for the stage-2 losses.
BRANCH_VIEWS = {"exo": ("exo",), "ego": ("ego",), "pair": ("ego", "exo")}

# Output folders that are not a training stage: built or converted checkpoints.
BASE_STAGE = "base"

# The LoRA target: linear layers of the LLM only. A bare `q_proj` list or "all-linear" would also hit the CLIP towers.
DEFAULT_LORA_TARGET_REGEX = (
    r".*model\.language_model\.layers\.\d+\."
    r"(self_attn\.(q_proj|k_proj|v_proj|o_proj)|mlp\.(gate_proj|up_proj|down_proj))"
)


@dataclass(frozen=True)
class StageSpec:
    """One row of the pipeline table.

    Attributes:
        name: stage id, also written into every output folder (`exo2ego_stage.json`).
        description: the paper's name for the stage.
        starts_from: stages whose output folder this stage accepts as its starting point.
        data: `"captions"` (init: web pairs for the exo branch + EgoClip for the ego branch, or Ego-ExoClip clips
            for both), `"ego_exo_clip"` (Ego-ExoClip rows) or `"egoit"` (EgoIT rows).
        branches: input views per step; several branches mean one forward each, losses summed (init).
        trainable: modules (keys of `MODULE_PATHS`) updated in place.
        losses: loss terms, a subset of {"vtg", "kl", "ccl"}.
        lora: whether the LLM gets LoRA adapters.
        ablations: ablation switches this stage accepts (see `ABLATIONS`).
    """

    name: str
    description: str
    starts_from: tuple[str, ...]
    data: str
    branches: tuple[str, ...]
    trainable: frozenset[str]
    losses: frozenset[str]
    lora: bool = False
    ablations: tuple[str, ...] = ()


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="init",
            description="Initialization: each vision tower learns its own domain, LLM frozen",
            starts_from=(BASE_STAGE,),
            data="captions",
            branches=("exo", "ego"),
            trainable=frozenset({"exo_vision_tower", "ego_vision_tower", "connector"}),
            losses=frozenset({"vtg"}),
        ),
        StageSpec(
            name="stage1",
            description="Stage 1, teacher self-preparation: exo tower on Ego-ExoClip exo clips",
            starts_from=("init",),
            data="ego_exo_clip",
            branches=("exo",),
            trainable=frozenset({"exo_vision_tower", "connector"}),
            losses=frozenset({"vtg"}),
        ),
        StageSpec(
            name="stage2",
            description="Stage 2, teacher-student guidance: ego tower and mappings on synchronized ego-exo pairs",
            starts_from=("stage1",),
            data="ego_exo_clip",
            branches=("pair",),
            trainable=frozenset({"ego_vision_tower", "ego_to_exo", "exo_to_ego"}),
            losses=frozenset({"vtg", "kl", "ccl"}),
            ablations=("no_g_ccl", "no_kl", "exo_tower_trainable"),
        ),
        StageSpec(
            name="stage3",
            description="Stage 3, student self-practice: instruction tuning on EgoIT with LoRA on the LLM",
            starts_from=("stage2",),
            data="egoit",
            branches=("ego",),
            trainable=frozenset({"ego_vision_tower", "ego_to_exo", "connector"}),
            losses=frozenset({"vtg"}),
            lora=True,
            ablations=("no_lora", "ego_tower_frozen"),
        ),
    )
}

# Paper Tables 7-8. The "fully connected mapping" ablation of Table 7 is a model setting, not a trainable-set
# switch: stage 2 takes `mapping_type: mlp` (see `train/README.md`).
ABLATIONS = {
    "no_lora": "Table 7 #2: stage 3 without LoRA (the LLM stays frozen)",
    "no_g_ccl": "Table 7 #3: no inverse mapping G and no cycle-consistency loss",
    "no_kl": "Table 7 #4: no KL alignment loss",
    "exo_tower_trainable": (
        "Table 8 #2: the exo tower also trains in stage 2; the KL then keeps the gradient of its teacher target "
        "(teacher and student learn from each other) and the cycle loss reaches it through F(G(y)) - y"
    ),
    "ego_tower_frozen": "Table 8 #3: the ego tower stays frozen in stage 3",
}


@dataclass(frozen=True)
class ResolvedStage:
    """A stage after ablations, module overrides and loss weights: what the trainer actually does."""

    spec: StageSpec
    trainable: frozenset[str]
    losses: frozenset[str]
    lora: bool
    ablations: tuple[str, ...] = ()
    loss_weights: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def branches(self) -> tuple[str, ...]:
        return self.spec.branches

    @property
    def needs_mapping_features(self) -> bool:
        return bool(self.losses & {"kl", "ccl"})

    def to_dict(self) -> dict:
        return {
            "stage": self.name,
            "description": self.spec.description,
            "data": self.spec.data,
            "branches": list(self.branches),
            "trainable_modules": sorted(self.trainable),
            "losses": sorted(self.losses),
            "loss_weights": dict(self.loss_weights),
            "lora": self.lora,
            "ablations": list(self.ablations),
        }


def check_module_names(names, where: str) -> None:
    """Raise a clear error for module names that are not trainable units of Exo2Ego."""
    unknown = sorted(set(names) - set(MODULE_PATHS))
    if unknown:
        raise ValueError(f"{where} names unknown module(s) {unknown}; known modules: {sorted(MODULE_PATHS)}")


def resolve_stage(
    name: str,
    ablations=(),
    train_modules=(),
    freeze_modules=(),
    connector_trainable: bool | None = None,
    kl_weight: float = 1.0,
    ccl_weight: float = 1.0,
) -> ResolvedStage:
    """Apply ablation switches, explicit module overrides and loss weights to stage `name`.

    A loss weight of 0 removes that term (its graph is not built into the loss); a zero cycle weight also freezes
    G, which nothing else reaches. Raises `ValueError` for an unknown stage, ablation or module, and for
    combinations that would leave a trainable module without any gradient.
    """
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {sorted(STAGES)}")
    spec = STAGES[name]
    ablations = tuple(ablations or ())
    for ablation in ablations:
        if ablation not in ABLATIONS:
            raise ValueError(f"unknown ablation {ablation!r}; ablations: {sorted(ABLATIONS)}")
        if ablation not in spec.ablations:
            raise ValueError(
                f"ablation {ablation!r} does not apply to {name}; it accepts {list(spec.ablations) or 'none'}"
            )
    check_module_names(train_modules or (), "train_modules")
    check_module_names(freeze_modules or (), "freeze_modules")
    for weight_name, weight in (("kl_weight", kl_weight), ("ccl_weight", ccl_weight)):
        if weight < 0:
            raise ValueError(f"{weight_name} must be >= 0, got {weight}")

    trainable, losses, lora = set(spec.trainable), set(spec.losses), spec.lora
    if "no_lora" in ablations:
        lora = False
    if "no_g_ccl" in ablations:
        trainable.discard("exo_to_ego")
        losses.discard("ccl")
    if "no_kl" in ablations:
        losses.discard("kl")
    if "exo_tower_trainable" in ablations:
        trainable.add("exo_vision_tower")
    if "ego_tower_frozen" in ablations:
        trainable.discard("ego_vision_tower")
    if connector_trainable is not None:
        (trainable.add if connector_trainable else trainable.discard)("connector")
    trainable |= set(train_modules or ())
    trainable -= set(freeze_modules or ())

    weights = {}
    if "kl" in losses:
        weights["kl"] = float(kl_weight)
    if "ccl" in losses:
        weights["ccl"] = float(ccl_weight)
    for term, weight in list(weights.items()):
        if weight == 0:
            losses.discard(term)
            del weights[term]
    if "ccl" not in losses:
        trainable.discard("exo_to_ego")  # G only enters the cycle loss
    reached = _reached_modules(spec, losses)
    blocked = sorted(trainable - reached)
    if blocked:
        raise ValueError(
            f"{name} cannot train {blocked}: no loss term of this stage ({sorted(losses)}) reaches them with its "
            f"inputs ({list(spec.branches)}); in stage 2 the exo tower is reached only by the KL (whose target keeps "
            "its gradient when the exo tower trains) and the cycle loss"
        )
    return ResolvedStage(
        spec=spec,
        trainable=frozenset(trainable),
        losses=frozenset(losses),
        lora=lora,
        ablations=ablations,
        loss_weights=weights,
    )


def _reached_modules(spec: StageSpec, losses: set[str]) -> set[str]:
    """Modules that receive a gradient from the stage's loss terms with its input branches."""
    reached = {"connector", "language_model", "lm_head"}
    for branch in spec.branches:
        if branch == "exo":
            reached.add("exo_vision_tower")
        elif branch == "ego":
            # Before stage 2, F is still the identity it was initialised as and is not learned.
            reached |= {"ego_vision_tower"} if spec.name == "init" else {"ego_vision_tower", "ego_to_exo"}
        elif branch == "pair":
            reached |= {"ego_vision_tower", "ego_to_exo"}  # VTG on [x; F(x)], KL on F(x)
            if "kl" in losses:  # y is detached unless the exo tower trains; then the KL reaches it
                reached.add("exo_vision_tower")
            if "ccl" in losses:  # G(F(x)) and F(G(y)) - y: G and, through y, the exo tower
                reached |= {"exo_to_ego", "exo_vision_tower"}
    return reached


def unreachable_parameter_prefixes(model) -> list[str]:
    """Parameter-name prefixes inside the vision towers that never influence the features the model uses.

    The towers feed `hidden_states[vision_feature_layer]` (the penultimate layer by default), so later encoder
    layers and the post-layernorm (pooler path) get no gradient; they stay frozen so DDP needs no unused-parameter
    search. Names are relative to `Exo2EgoForConditionalGeneration`.
    """
    config = model.config
    prefixes = []
    for tower_name in VISION_TOWERS:
        tower = getattr(model.model, tower_name, None)
        if tower is None:
            continue
        num_layers = tower.config.num_hidden_layers
        layer = config.vision_feature_layer
        used_layers = layer if layer >= 0 else num_layers + 1 + layer  # hidden_states[k] follows k encoder layers
        base = MODULE_PATHS[tower_name]
        for name, _ in tower.named_parameters():
            match = re.match(r"(.*?encoder\.layers)\.(\d+)\.", name)
            if match and int(match.group(2)) >= used_layers:
                prefixes.append(f"{base}.{match.group(1)}.{match.group(2)}.")
            elif "post_layernorm" in name or name.startswith("head."):
                prefixes.append(f"{base}.{name.rsplit('.', 1)[0]}.")
    return sorted(set(prefixes))


def trainable_parameter_names(model, resolved: ResolvedStage) -> list[str]:
    """Names (relative to `Exo2EgoForConditionalGeneration`) of the non-LoRA parameters the stage updates."""
    present = {name for name in MODULE_PATHS if _has_module(model, name)}
    missing = sorted(resolved.trainable - present)
    if missing:
        raise ValueError(
            f"{resolved.name} trains {missing} but the model has no such module "
            f"(an ego-only release without the exo branch cannot be trained in this stage)"
        )
    prefixes = tuple(f"{MODULE_PATHS[name]}." for name in resolved.trainable)
    skipped = tuple(unreachable_parameter_prefixes(model))
    return sorted(
        name for name, _ in model.named_parameters() if name.startswith(prefixes) and not name.startswith(skipped)
    )


def _has_module(model, name: str) -> bool:
    try:
        model.get_submodule(MODULE_PATHS[name])
    except AttributeError:
        return False
    return True


def apply_trainable(model: torch.nn.Module, resolved: ResolvedStage, name_prefix: str = "") -> list[str]:
    """Freeze everything except the stage's trainable parameters (LoRA parameters of a PEFT model stay as PEFT set
    them). `name_prefix` is how `model`'s parameter names extend the plain model's (e.g. "base_model.model." for a
    `PeftModel`). Returns the names made trainable, relative to the plain model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(trainable_parameter_names(base, resolved))
    for name, parameter in model.named_parameters():
        plain = name[len(name_prefix) :] if name.startswith(name_prefix) else name
        is_lora = "lora_" in name
        parameter.requires_grad_(plain in names or (is_lora and resolved.lora))
    return sorted(names)

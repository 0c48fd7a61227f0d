"""The stage scripts' arguments: the dataclasses `TrlParser` fills from the yaml and the command line (model, data,
stage; the training arguments are `train.trainer.Exo2EgoTrainingArguments`), the check of the `--config` file, and
the checks of what a stage needs and what it does not use, all made before anything is loaded.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from dataclasses import dataclass, field

import yaml
from trl import TrlParser

from train.data import CLIP_PROMPT, parse_mix
from train.stages import DEFAULT_LORA_TARGET_REGEX, VISION_TOWERS, resolve_stage
from train.trainer import Exo2EgoTrainingArguments

logger = logging.getLogger(__name__)


SAVE_MODES = ("merged", "adapter")


# Arguments only some stages use, and whether a resolved stage (before zero loss weights drop terms) uses them. A
# value other than the default on a stage that does not use it is refused (only logged when an ablation switched its
# use off); the stage output records them as unused, never as used. Each name is looked up in whichever argument
# dataclass defines it.
STAGE_SPECIFIC_ARGUMENTS = {
    **dict.fromkeys(
        ("lora_r", "lora_alpha", "lora_dropout", "lora_target_regex", "save_mode", "lora_lr"), lambda stage: stage.lora
    ),
    "kl_weight": lambda stage: "kl" in stage.losses,
    "ccl_weight": lambda stage: "ccl" in stage.losses,
    "mapping_lr": lambda stage: bool(stage.trainable & {"ego_to_exo", "exo_to_ego"}),
    "vision_tower_lr": lambda stage: bool(stage.trainable & set(VISION_TOWERS)),
    "connector_lr": lambda stage: "connector" in stage.trainable,
    "exo_sampling": lambda stage: stage.spec.data == "ego_exo_clip",
    "clip_prompt": lambda stage: stage.spec.data == "ego_exo_clip",
    "shuffle_pairs": lambda stage: "pair" in stage.branches,
}


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=None, metadata={"help": "The previous stage's output folder (init: a built or converted checkpoint)."}
    )
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager | sdpa | flash_attention_2 ..."})
    dtype: str = field(
        default="float32", metadata={"help": "Weights dtype at load (bf16 autocast comes from --bf16)."}
    )
    allow_stage_mismatch: bool = field(
        default=False, metadata={"help": "Start from a folder of another stage than the table says (e.g. skip init)."}
    )


@dataclass
class DataArguments:
    dataset_path: str = field(default=None, metadata={"help": "Hub-ready dataset folder or Hub id (load_dataset)."})
    video_root: str = field(default=None, metadata={"help": "Root the dataset's relative video paths start from."})
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config name (Ego-ExoClip: clips)."})
    dataset_split: str = field(default="train")
    num_frames: int | None = field(default=None, metadata={"help": "Frames per video (default: the model's)."})
    exo_sampling: str = field(
        default="all_pairs",
        metadata={
            "help": "Ego-ExoClip exo camera per sample: all_pairs (paper: every (narration, camera) once per "
            "epoch) | random (one seeded camera per narration per epoch) | best_exo"
        },
    )
    shuffle_pairs: bool = field(
        default=False,
        metadata={
            "help": "Negative control of stage 2: pair each ego clip with the exo clip of another take (seeded), so "
            "the KL and cycle loss see unsynchronized pairs (exo2ego ablate's shuffled_pairs arm)."
        },
    )
    exo_dataset_path: str | None = field(
        default=None, metadata={"help": "init: exo-tower captions (exo2ego data pretrain: web image/video pairs)."}
    )
    exo_dataset_config: str = field(default="captions")
    exo_video_root: str | None = field(
        default=None, metadata={"help": "Media root of the exo captions (default video_root)."}
    )
    ego_dataset_path: str | None = field(
        default=None, metadata={"help": "init: ego-tower captions (exo2ego data egoclip, config captions)."}
    )
    ego_dataset_config: str = field(default="captions")
    ego_video_root: str | None = field(
        default=None, metadata={"help": "Media root of the ego captions (default video_root)."}
    )
    init_mix: str = field(
        default="1:1",
        metadata={
            "help": "init with two sources: 'EXO:EGO' samples per batch element (per_device_train_batch_size "
            "counts elements, so a micro-batch holds per_device x (EXO + EGO) samples)."
        },
    )
    clip_prompt: str = field(
        default=CLIP_PROMPT,
        metadata={"help": "User prompt of Ego-ExoClip samples; the target is the clip's narration."},
    )
    max_length: int | None = field(default=None, metadata={"help": "Cap on tokens per sample (target truncated)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only N rows (N >= 1), the first N or see subset_seed."}
    )
    subset_seed: int | None = field(
        default=None,
        metadata={
            "help": "With max_train_samples: keep N rows drawn at random with this seed (Dataset.shuffle) instead of "
            "the first N, so a small subset spreads over the videos rather than the first few."
        },
    )
    decoded_cache_mb: int = field(
        default=0,
        metadata={
            "help": "Keep up to this many MiB of decoded clips in memory per data-loading process (0: off); pays off "
            "when segments repeat (EgoIT's questions share segments; small data over several epochs)."
        },
    )

    def __post_init__(self):
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames} (leave it unset for the model's)")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(
                f"max_train_samples must be >= 1, got {self.max_train_samples} (leave it unset for all rows)"
            )
        if self.subset_seed is not None and self.max_train_samples is None:
            raise ValueError("subset_seed draws the max_train_samples rows; set max_train_samples too")
        if self.decoded_cache_mb < 0:
            raise ValueError(f"decoded_cache_mb must be >= 0 (0 turns the cache off), got {self.decoded_cache_mb}")


@dataclass
class StageArguments:
    ablations: list[str] = field(default_factory=list, metadata={"help": "Ablation switches of paper Tables 7-8."})
    train_modules: list[str] = field(default_factory=list, metadata={"help": "Extra modules to train."})
    freeze_modules: list[str] = field(default_factory=list, metadata={"help": "Modules to freeze."})
    connector_trainable: bool | None = field(default=None, metadata={"help": "Override the table's connector."})
    mapping_type: str | None = field(
        default=None, metadata={"help": "stage2: rebuild F and G as 'mlp' (Table 7 #5) or 'resnet' before training."}
    )
    lora_r: int = field(default=128)
    lora_alpha: int = field(default=256)
    lora_dropout: float = field(default=0.1)
    lora_target_regex: str = field(default=DEFAULT_LORA_TARGET_REGEX)
    save_mode: str = field(default="merged", metadata={"help": "stage3: merged | adapter (adapter in <out>/adapter)."})
    card_eval_results: str | None = field(
        default=None, metadata={"help": "EgoBench results.json for the pushed model card (model-index results)."}
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into a non-empty output_dir: a finished or unfinished earlier run there is replaced "
            "(its outputs and checkpoints removed); other files are kept and never pushed."
        },
    )

    def __post_init__(self):
        if self.save_mode not in SAVE_MODES:
            raise ValueError(f"save_mode must be one of {SAVE_MODES}, got {self.save_mode!r}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a mapping key written twice (plain PyYAML keeps the last value silently)."""

    def construct_mapping(self, node, deep=False):
        first_lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in first_lines:
                raise ValueError(f"line {line}: key {key!r} is written twice (first on line {first_lines[key]})")
            first_lines[key] = line
        return super().construct_mapping(node, deep)


def check_config_file(argv=None) -> None:
    """Refuse a `--config` yaml that cannot be read or writes a key twice, naming the file (TrlParser reads it with
    `yaml.safe_load`, which keeps the last of two values without a word)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in args[:-1]:
        return
    path = args[args.index("--config") + 1]
    try:
        with open(path, encoding="utf-8") as handle:
            yaml.load(handle, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: plain data only
    except OSError as error:
        raise ValueError(f"--config {path}: {error.strerror or error}") from None
    except (ValueError, yaml.YAMLError) as error:
        raise ValueError(f"--config {path}: {' '.join(str(error).split())}") from None


def parse_arguments(argv=None):
    check_config_file(argv)
    # No abbreviations: `--learning_rat 5e-4` is a typo, not `--learning_rate` (the yaml refuses it too).
    parser = TrlParser((ModelArguments, DataArguments, StageArguments, Exo2EgoTrainingArguments), allow_abbrev=False)
    model_args, data_args, stage_args, training_args = parser.parse_args_and_config(argv)
    for name, value in (("model_name_or_path", model_args.model_name_or_path),):
        if not value:
            raise ValueError(f"--{name} is required (in the yaml or on the command line)")
    return model_args, data_args, stage_args, training_args


def _field_default(dataclass_type, name: str):
    spec = dataclass_type.__dataclass_fields__[name]
    return spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default


def check_stage_arguments(stage: str, model_args, data_args, stage_args, training_args) -> list[str]:
    """Refuse stage-specific arguments (`STAGE_SPECIFIC_ARGUMENTS`) set to a non-default value on a stage that does
    not use them, and an invalid LoRA target regex; returns the names of the stage-specific arguments this run does
    not use (recorded as such in the stage output).

    An argument that only an ablation switches off (LoRA settings under `no_lora`, `kl_weight` under `no_kl`) is
    logged as unused instead of refused, so one yaml serves a stage and its ablations."""

    def resolved_with(ablations):
        # The stage's loss terms before zero weights drop them: a weight of 0 is a used setting.
        return resolve_stage(
            stage, ablations, stage_args.train_modules, stage_args.freeze_modules, stage_args.connector_trainable
        )

    resolved, without_ablations = resolved_with(stage_args.ablations), resolved_with(())
    unused, refused = [], []
    for name, uses in STAGE_SPECIFIC_ARGUMENTS.items():
        groups = (model_args, data_args, stage_args, training_args)
        group = next((group for group in groups if name in type(group).__dataclass_fields__), None)
        if group is None or uses(resolved):
            continue
        unused.append(name)
        value = getattr(group, name)
        if value == _field_default(type(group), name):
            continue
        if uses(without_ablations):
            logger.warning(
                "%s=%r is unused: ablations %s switch off what it sets", name, value, list(resolved.ablations)
            )
        else:
            refused.append(f"{name}={value!r} is set, but {stage} does not use it")
    if refused:
        raise ValueError("; ".join(refused) + " (remove it from the yaml and the command line)")
    if resolved.lora:
        try:
            re.compile(stage_args.lora_target_regex)
        except re.error as error:
            raise ValueError(
                f"lora_target_regex {stage_args.lora_target_regex!r} is not a valid regular expression: {error}"
            ) from None
    return sorted(unused)


def input_paths(model_args: ModelArguments, data_args: DataArguments) -> tuple[str | None, ...]:
    """The folders and files a run reads (`check_output_apart` skips Hub ids, which name no local path)."""
    return (
        model_args.model_name_or_path,
        data_args.dataset_path,
        data_args.video_root,
        data_args.exo_dataset_path,
        data_args.exo_video_root,
        data_args.ego_dataset_path,
        data_args.ego_video_root,
    )


def two_source_init(data_args: DataArguments) -> bool:
    return bool(data_args.exo_dataset_path or data_args.ego_dataset_path)


def check_data_arguments(stage: str, data_args: DataArguments) -> None:
    """Which data arguments `stage` needs: one `dataset_path` (+ `video_root`), or in init either that (Ego-ExoClip,
    both branches from its clips) or the two caption sources `exo_dataset_path` + `ego_dataset_path`."""
    if not two_source_init(data_args):
        for name in ("dataset_path", "video_root"):
            if not getattr(data_args, name):
                raise ValueError(f"--{name} is required (in the yaml or on the command line)")
        return
    if stage != "init":
        raise ValueError(f"exo_dataset_path / ego_dataset_path are init's two sources; {stage} reads --dataset_path")
    if data_args.dataset_path:
        raise ValueError(
            "init reads either --dataset_path (Ego-ExoClip for both towers) or --exo_dataset_path + "
            "--ego_dataset_path (web pairs + EgoClip, the paper's recipe), not both"
        )
    for branch in ("exo", "ego"):
        if not getattr(data_args, f"{branch}_dataset_path"):
            raise ValueError(f"init with two sources needs --{branch}_dataset_path too")
        if not (getattr(data_args, f"{branch}_video_root") or data_args.video_root):
            raise ValueError(f"init needs --{branch}_video_root (or --video_root) for its {branch} captions")
    parse_mix(data_args.init_mix)

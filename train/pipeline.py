"""What every stage script does: parse yaml + CLI, check the starting folder, build data, model and trainer, train,
save the stage output (with its `exo2ego_stage.json` written last) and optionally push it to the Hub.

`python train/stage2.py --config train/configs/stage2.yaml --learning_rate 5e-5` (or under `accelerate launch`):
the yaml sets the defaults of the argument dataclasses below and of `Exo2EgoTrainingArguments`, the command line
overrides them (TRL's `TrlParser`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, field

import yaml

from exo2ego_base.provenance import check_output_apart, check_output_location, package_versions, write_json_atomic
from train.data import CLIP_PROMPT
from train.distributed import check_launch_config, distributed_setup
from train.hub import push_stage_output
from train.stage_folder import ADAPTER_DIR_NAME, STAGE_METADATA_NAME, read_stage_metadata
from train.stages import (
    BASE_STAGE,
    DEFAULT_LORA_TARGET_REGEX,
    STAGES,
    VISION_TOWERS,
    ResolvedStage,
    apply_trainable,
    resolve_stage,
)

logger = logging.getLogger(__name__)

# The arguments of the run training in a folder, written before its first step: resuming checks them.
RUN_RECORD_NAME = "exo2ego_run.json"
SAVE_MODES = ("merged", "adapter")
CHECKPOINT_PREFIX = "checkpoint-"
# Where the final weights are written before they are moved into the output folder (so the stage knows its files).
OUTPUT_STAGING_DIR = os.path.join(".staging", "output")
# Written by the stage but never part of its release: pickled arguments.
LOCAL_ONLY_FILES = ("training_args.bin",)

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

# Arguments a resumed run may change: where and how it logs, saves, pushes and loads data, not what it trains.
RESUME_MAY_DIFFER = {
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "local_rank",
    "push_to_hub",
    "card_eval_results",
    "report_to",
    "disable_tqdm",
    "run_name",
    "project",
    "save_strategy",
    "save_steps",
    "save_total_limit",
    "save_on_each_node",
    "save_only_model",
    "dataloader_num_workers",
    "dataloader_prefetch_factor",
    "dataloader_persistent_workers",
    "dataloader_pin_memory",
    "decoded_cache_mb",
    "skip_memory_metrics",
}
RESUME_MAY_DIFFER_PREFIXES = ("hub_", "logging_", "log_", "trackio_")


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
            "help": "Keep up to this many MB of decoded clips in memory per data-loading process (0: off); pays off "
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
    from trl import TrlParser

    from train.trainer import Exo2EgoTrainingArguments

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


# ---- stage chain -----------------------------------------------------------------------------------------------


def check_starting_point(folder: str, stage: str, allow_mismatch: bool = False) -> str:
    """The stage of the checkpoint in `folder` (BASE_STAGE for built/converted ones); raises a clear error when the
    stage table does not start `stage` from it, or when the folder is an unfinished stage output."""
    if not os.path.isdir(folder):
        raise ValueError(f"{stage} starts from a local checkpoint folder; {folder!r} is not a directory")
    metadata = read_stage_metadata(folder)
    if metadata is None:
        if os.path.exists(os.path.join(folder, "trainer_state.json")) or any(
            name.startswith("checkpoint-") for name in os.listdir(folder)
        ):
            raise ValueError(
                f"{folder} is an unfinished stage output (no {STAGE_METADATA_NAME}); resume that run with "
                "--resume_from_checkpoint instead of starting the next stage from it"
            )
        found = BASE_STAGE
    else:
        found = metadata.get("stage")
    expected = STAGES[stage].starts_from
    if found not in expected and not allow_mismatch:
        raise ValueError(
            f"{stage} starts from the output of {' or '.join(expected)}, but {folder} holds a {found!r} checkpoint "
            f"(from {STAGE_METADATA_NAME}); point --model_name_or_path at the right folder or pass "
            "--allow_stage_mismatch true"
        )
    return found


# ---- output folder ---------------------------------------------------------------------------------------------


def recorded_arguments(model_args, data_args, stage_args, training_args, unused=()) -> dict:
    """{group: {name: value}} as JSON values, without the stage-specific arguments the stage does not use."""
    groups = {
        "model": asdict(model_args),
        "data": asdict(data_args),
        "stage": asdict(stage_args),
        "training": json.loads(training_args.to_json_string()),
    }
    groups = json.loads(json.dumps(groups, default=str))
    return {group: {k: v for k, v in values.items() if k not in unused} for group, values in groups.items()}


def _resumable_arguments(arguments: dict) -> dict:
    """The recorded arguments that decide what a run trains (local paths made absolute)."""
    flat = {}
    for group, values in arguments.items():
        for name, value in values.items():
            if name in RESUME_MAY_DIFFER or name.startswith(RESUME_MAY_DIFFER_PREFIXES):
                continue
            if name in ("model_name_or_path", "dataset_path", "video_root") and value and os.path.exists(value):
                value = os.path.abspath(value)
            flat[f"{group}.{name}"] = value
    return flat


def _checkpoints(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    return sorted(name for name in os.listdir(folder) if name.startswith(CHECKPOINT_PREFIX))


def _check_same_run(folder: str, stage: str, arguments: dict) -> None:
    """Refuse to resume the checkpoints in `folder` when they were trained for another stage or with other arguments
    than `arguments`."""
    path = os.path.join(folder, RUN_RECORD_NAME)
    if not os.path.isfile(path):
        if _checkpoints(folder):
            raise ValueError(
                f"{folder} holds checkpoints but no {RUN_RECORD_NAME}, so the arguments they were trained with are "
                "unknown; start over with --overwrite_output_dir true"
            )
        return  # nothing to resume: Trainer reports the missing checkpoint
    with open(path) as handle:
        record = json.load(handle)
    if record["stage"] != stage:
        raise ValueError(f"cannot resume the run in {folder} as {stage}: it trains {record['stage']}")
    before = _resumable_arguments(record["arguments"])
    now = _resumable_arguments(arguments)
    unset = "<unset>"
    differences = [
        f"{name.split('.', 1)[1]}: {before.get(name, unset)!r} in the earlier run, now {now.get(name, unset)!r}"
        for name in sorted(before.keys() | now.keys())
        if before.get(name, unset) != now.get(name, unset)
    ]
    if differences:
        raise ValueError(
            f"cannot resume the run in {folder}: it was trained with other arguments ({'; '.join(differences)}); "
            "resume with the same arguments, or start over with --overwrite_output_dir true (or another output_dir)"
        )


def check_output_dir(
    output_dir: str, stage: str, arguments: dict, resume, overwrite: bool, inputs: tuple = ()
) -> dict | None:
    """Check that this run may train into `output_dir` (nothing is changed). Returns the folder's stage metadata
    when a resumed run finds its stage already finished there (nothing left to train), else None.

    A file, a finished stage output, checkpoints of an unfinished run and any other file refuse a new run unless
    `overwrite`; a resumed run (`resume`: True or a checkpoint path) must have the arguments of the run it resumes.
    A folder that cannot be created, and one that is, contains or lies inside one of `inputs` (the starting
    checkpoint, datasets and video roots), are always refused.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ValueError(f"output_dir {output_dir!r} is a file, not a folder; choose another output_dir")
    check_output_apart(output_dir, inputs, what="output_dir")
    check_output_location(output_dir, what="output_dir")
    if resume:
        if overwrite:
            raise ValueError(
                "--resume_from_checkpoint continues the run in output_dir, --overwrite_output_dir "
                "replaces it: pass only one"
            )
        checkpoint_dir = output_dir if resume is True else os.path.dirname(os.path.normpath(resume))
        _check_same_run(checkpoint_dir, stage, arguments)
        return read_stage_metadata(output_dir)
    contents = sorted(os.listdir(output_dir)) if os.path.isdir(output_dir) else []
    if overwrite or not contents:
        return None
    metadata = read_stage_metadata(output_dir)
    if metadata is not None:
        raise ValueError(
            f"output_dir {output_dir!r} holds a finished {metadata.get('stage')} output ({STAGE_METADATA_NAME}); "
            "choose another output_dir, or pass --overwrite_output_dir true to replace it"
        )
    checkpoints = _checkpoints(output_dir)
    if checkpoints:
        raise ValueError(
            f"output_dir {output_dir!r} holds checkpoints of an unfinished run ({', '.join(checkpoints)}); "
            "continue it with --resume_from_checkpoint last (and the same arguments), or start over with "
            "--overwrite_output_dir true"
        )
    raise ValueError(
        f"output_dir {output_dir!r} is not empty ({', '.join(contents[:5])}{', ...' if len(contents) > 5 else ''}); "
        "choose a new or empty folder, or pass --overwrite_output_dir true to train there anyway (files the stage "
        "did not write are kept and never pushed)"
    )


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


def clear_previous_run(output_dir: str) -> None:
    """Remove what an earlier run left in `output_dir` (its stage marker first, then the files it lists, its
    checkpoints and records); files it did not write stay."""
    metadata = read_stage_metadata(output_dir)
    paths = [
        STAGE_METADATA_NAME,
        RUN_RECORD_NAME,
        *(metadata or {}).get("files", []),
        *_checkpoints(output_dir),
        os.path.dirname(OUTPUT_STAGING_DIR),
    ]
    root = os.path.realpath(output_dir)
    for relative in paths:
        path = os.path.realpath(os.path.join(output_dir, relative))
        if os.path.commonpath([root, path]) != root or path == root:
            continue  # a file list naming paths outside the folder is not ours to delete
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


# ---- building blocks -------------------------------------------------------------------------------------------


def two_source_init(data_args: DataArguments) -> bool:
    return bool(data_args.exo_dataset_path or data_args.ego_dataset_path)


def check_data_arguments(stage: str, data_args: DataArguments) -> None:
    """Which data arguments `stage` needs: one `dataset_path` (+ `video_root`), or in init either that (Ego-ExoClip,
    both branches from its clips) or the two caption sources `exo_dataset_path` + `ego_dataset_path`."""
    from train.data import parse_mix

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


def decoded_clip_cache(data_args: DataArguments):
    """The `DecodedClipCache` the data arguments ask for, or None."""
    from train.data import DecodedClipCache

    return DecodedClipCache(data_args.decoded_cache_mb * 2**20) if data_args.decoded_cache_mb else None


def train_rows(table, data_args: DataArguments):
    """The rows training reads: all, the first `max_train_samples`, or that many drawn with `subset_seed`."""
    if data_args.max_train_samples is None:
        return table
    if data_args.subset_seed is not None:
        table = table.shuffle(seed=data_args.subset_seed)
    return table.select(range(min(data_args.max_train_samples, len(table))))


def build_caption_sources(data_args: DataArguments, num_frames: int, seed: int):
    """Init's two sources: exo captions for the exo tower, ego captions for the ego tower, mixed per item."""
    from train.data import CaptionSamples, MixedSourceSamples, load_table, parse_mix

    sources = {}
    for branch in ("exo", "ego"):
        path = getattr(data_args, f"{branch}_dataset_path")
        table = train_rows(
            load_table(path, getattr(data_args, f"{branch}_dataset_config"), data_args.dataset_split), data_args
        )
        root = getattr(data_args, f"{branch}_video_root") or data_args.video_root
        where = f"{branch} dataset {path!r} (split {data_args.dataset_split!r})"
        sources[branch] = CaptionSamples(
            table, root, num_frames, branch, data_args.clip_prompt, where=where, cache=decoded_clip_cache(data_args)
        )
        flag = f"--{branch}_video_root" if getattr(data_args, f"{branch}_video_root") else "--video_root"
        sources[branch].check_video_root(where, flag)
    exo_per_item, ego_per_item = parse_mix(data_args.init_mix)
    return MixedSourceSamples(sources["exo"], sources["ego"], exo_per_item, ego_per_item, seed=seed)


def build_dataset(resolved: ResolvedStage, data_args: DataArguments, num_frames: int, seed: int):
    from train.data import EgoExoClipSamples, EgoITSamples, load_table

    if two_source_init(data_args):
        return build_caption_sources(data_args, num_frames, seed)
    table = train_rows(
        load_table(data_args.dataset_path, data_args.dataset_config, data_args.dataset_split), data_args
    )
    where = f"dataset {data_args.dataset_path!r} (split {data_args.dataset_split!r})"
    if resolved.spec.data == "egoit":
        samples = EgoITSamples(
            table, data_args.video_root, num_frames, where=where, cache=decoded_clip_cache(data_args)
        )
    else:
        samples = EgoExoClipSamples(
            table,
            data_args.video_root,
            num_frames,
            resolved.branches,
            data_args.clip_prompt,
            exo_sampling=data_args.exo_sampling,
            seed=seed,
            where=where,
            cache=decoded_clip_cache(data_args),
            shuffle_pairs=data_args.shuffle_pairs,
        )
    samples.check_video_root(where, "--video_root")
    return samples


def load_model(model_args: ModelArguments):
    import torch

    from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor

    model = Exo2EgoForConditionalGeneration.from_pretrained(
        model_args.model_name_or_path,
        dtype=getattr(torch, model_args.dtype),
        attn_implementation=model_args.attn_implementation,
    )
    processor = Exo2EgoProcessor.from_pretrained(model_args.model_name_or_path)
    return model, processor


def rebuild_mappings(model, mapping_type: str) -> None:
    """Replace F and G by freshly initialised mappings of `mapping_type` (they are first trained in stage 2)."""
    from modeling_exo2ego.modeling_exo2ego import build_mapping

    model.config.mapping_type = mapping_type
    for name in ("ego_to_exo", "exo_to_ego"):
        if hasattr(model.model, name):
            mapping = build_mapping(model.config).to(model.dtype)
            for module in reversed(list(mapping.modules())):  # this order draws what earlier seeded runs drew
                model._init_weights(module)
            setattr(model.model, name, mapping)


def add_lora(model, stage_args: StageArguments):
    from peft import LoraConfig, get_peft_model

    # PEFT matches a regex against full module names with re.fullmatch; one that matches nothing is a raw PEFT error.
    pattern = re.compile(stage_args.lora_target_regex)
    if not any(pattern.fullmatch(name) for name, _ in model.named_modules()):
        example = next((name for name, _ in model.named_modules() if ".language_model.layers." in name), "")
        raise ValueError(
            f"lora_target_regex {stage_args.lora_target_regex!r} matches no linear layer of the model (it must match "
            f"full module names such as {example!r}; the default is {DEFAULT_LORA_TARGET_REGEX!r})"
        )
    config = LoraConfig(
        r=stage_args.lora_r,
        lora_alpha=stage_args.lora_alpha,
        lora_dropout=stage_args.lora_dropout,
        target_modules=stage_args.lora_target_regex,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    wrapped = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A")]
    stray = [name for name in wrapped if ".language_model." not in name]
    if not wrapped or stray:
        raise ValueError(
            f"lora_target_regex {stage_args.lora_target_regex!r} must match linear layers of the LLM only; it matched "
            f"{len(wrapped)} module(s), outside the LLM: {stray[:5]}"
        )
    return peft_model


def prepare_model(model, resolved: ResolvedStage, stage_args: StageArguments):
    """Apply the stage to a loaded model: optional mapping rebuild, LoRA, and the trainable set."""
    if stage_args.mapping_type and stage_args.mapping_type != model.config.mapping_type:
        if resolved.name != "stage2":
            raise ValueError(
                f"mapping_type can only change in stage2, where F and G are first trained (got {resolved.name})"
            )
        rebuild_mappings(model, stage_args.mapping_type)
    prefix = ""
    if resolved.lora:
        model = add_lora(model, stage_args)
        prefix = "base_model.model."
    apply_trainable(model, resolved, name_prefix=prefix)
    return model


def build_trainer(model, processor, dataset, resolved: ResolvedStage, training_args, data_args: DataArguments):
    from train.collator import Exo2EgoCollator
    from train.trainer import Exo2EgoTrainer

    return Exo2EgoTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=Exo2EgoCollator(processor, resolved.branches, max_length=data_args.max_length),
        processing_class=processor,
        stage=resolved,
    )


def completed_checkpoint(output_dir: str, resume) -> str | None:
    """The checkpoint a resumed run starts from when it already reached max_steps (a run killed after its last
    checkpoint, before its output was saved), else None. Trainer would train one step past max_steps from it."""
    from transformers.trainer_callback import TrainerState
    from transformers.trainer_utils import get_last_checkpoint

    if not resume:
        return None
    checkpoint = get_last_checkpoint(output_dir) if resume is True else resume
    path = os.path.join(checkpoint or "", "trainer_state.json")
    if not os.path.isfile(path):
        return None
    state = TrainerState.load_from_json(path)
    return checkpoint if state.max_steps > 0 and state.global_step >= state.max_steps else None


def finish_from_checkpoint(trainer, checkpoint: str) -> None:
    """Load a checkpoint that already reached max_steps (weights, LoRA adapter, trainer state) without a step."""
    from transformers.trainer_callback import TrainerState

    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        raise ValueError(
            f"{checkpoint} already reached max_steps, and resuming it under DeepSpeed/FSDP would train a step past "
            "it (a Trainer limitation); use the weights in that checkpoint, or start over with "
            "--overwrite_output_dir true"
        )
    logger.info("%s already reached max_steps: saving its weights as the stage output without training", checkpoint)
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))


# ---- outputs ---------------------------------------------------------------------------------------------------


def save_stage_output(
    trainer, resolved: ResolvedStage, stage_args: StageArguments, output_dir: str, build_model=None
) -> list[str]:
    """Weights + processor (+ LoRA adapter) into `output_dir`; stage 3 merges LoRA unless save_mode is adapter.

    Everything is written into a staging folder first and then moved into place, so the stage knows exactly which
    files it wrote: returns their paths relative to `output_dir` (on the saving process; [] elsewhere), the files
    `--push_to_hub` may upload. Under FSDP the sharded weights are first gathered into one state dict (every rank
    takes part); a LoRA model is then rebuilt unsharded on the main process by `build_model()` to be merged or split
    into adapter + base.
    """
    staging = os.path.join(output_dir, OUTPUT_STAGING_DIR)
    if trainer.args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    model = trainer.model
    if trainer.is_fsdp_enabled:
        state_dict = trainer.accelerator.get_state_dict(trainer.model)
        if trainer.args.should_save and not resolved.lora:
            trainer._save(staging, state_dict=state_dict)
        elif trainer.args.should_save:
            model = build_model()
            model.load_state_dict(state_dict)
    elif not resolved.lora:
        trainer.save_model(staging)
    if resolved.lora and trainer.args.should_save:
        processor = trainer.processing_class
        if stage_args.save_mode == "adapter":
            adapter_dir = os.path.join(staging, ADAPTER_DIR_NAME)
            model.save_pretrained(adapter_dir)
            base = model.unload()  # LoRA removed, the in-place trained ego tower, F and connector kept
            base.save_pretrained(staging)
            _point_adapter_at_base(adapter_dir)
        else:
            merged = model.merge_and_unload()
            merged.save_pretrained(staging)
        processor.save_pretrained(staging)
    trainer.accelerator.wait_for_everyone()
    if not trainer.args.should_save:
        return []
    written = []
    for directory, _, files in os.walk(staging):
        for name in files:
            relative = os.path.relpath(os.path.join(directory, name), staging)
            target = os.path.join(output_dir, relative)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.replace(os.path.join(directory, name), target)
            if name not in LOCAL_ONLY_FILES:
                written.append(relative.replace(os.sep, "/"))
    shutil.rmtree(os.path.dirname(staging), ignore_errors=True)
    return sorted(written)


def _point_adapter_at_base(adapter_dir: str) -> None:
    """The adapter's base model is the folder above it (relative, so the pair moves and uploads together)."""
    path = os.path.join(adapter_dir, "adapter_config.json")
    with open(path) as handle:
        config = json.load(handle)
    config["base_model_name_or_path"] = ".."
    with open(path, "w") as handle:
        json.dump(config, handle, indent=2, sort_keys=True)


def environment_versions() -> dict[str, str]:
    return package_versions(("torch", "transformers", "accelerate", "peft", "trl", "datasets"))


def stage_metadata(resolved, started_from, model_args, training_args, trainer, arguments, unused, files) -> dict:
    return {
        "stage": resolved.name,
        **resolved.to_dict(),
        "started_from": {"path": os.path.abspath(model_args.model_name_or_path), "stage": started_from},
        "save_mode": arguments["stage"]["save_mode"] if resolved.lora else "full",
        "seed": training_args.seed,
        "global_step": trainer.state.global_step,
        "failed_videos": trainer.failed_videos_total,  # all processes, including before a resume
        "versions": environment_versions(),
        "distributed": distributed_setup(trainer.accelerator, trainer.model_wrapped),
        "arguments": arguments,
        "unused_arguments": list(unused),  # stage-specific arguments this stage ignores (at their defaults)
        "files": sorted(files),  # what the stage wrote; the only files `--push_to_hub` uploads (with the card)
    }


# ---- entry point -----------------------------------------------------------------------------------------------


def run_stage(stage: str, argv=None):
    """Run one stage of the table from command-line arguments; returns the finished trainer, or None when a resumed
    run finds its stage already finished in output_dir (nothing is trained)."""
    model_args, data_args, stage_args, training_args = parse_arguments(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=training_args.get_process_log_level()
    )
    # Everything that can be wrong with the inputs is checked before the model is loaded.
    resolved = resolve_stage(
        stage,
        stage_args.ablations,
        stage_args.train_modules,
        stage_args.freeze_modules,
        stage_args.connector_trainable,
        training_args.kl_weight,
        training_args.ccl_weight,
    )
    check_data_arguments(stage, data_args)
    unused = check_stage_arguments(stage, model_args, data_args, stage_args, training_args)
    started_from = check_starting_point(model_args.model_name_or_path, stage, model_args.allow_stage_mismatch)
    check_launch_config(resolved.lora, training_args.activation_checkpointing)
    per_epoch_draw = two_source_init(data_args) or (
        resolved.spec.data != "egoit" and data_args.exo_sampling == "random"
    )
    if training_args.dataloader_persistent_workers and per_epoch_draw:
        raise ValueError(
            "dataloader_persistent_workers keeps the workers' dataset copies of the first epoch, so the per-epoch "
            "draw (exo camera, or init's source mixing) would never change; turn it off"
        )
    resume = training_args.resume_from_checkpoint
    if resume in ("last", "true", "True"):
        resume = True
    arguments = recorded_arguments(model_args, data_args, stage_args, training_args, unused)
    output_dir = training_args.output_dir
    finished = check_output_dir(
        output_dir, stage, arguments, resume, stage_args.overwrite_output_dir, input_paths(model_args, data_args)
    )
    push = training_args.push_to_hub
    if finished is not None:
        logger.info(
            "%s in %s is already finished (global_step %s, %s); nothing to train",
            finished.get("stage"),
            output_dir,
            finished.get("global_step"),
            STAGE_METADATA_NAME,
        )
        if push and training_args.should_save:
            _push(output_dir, training_args, stage_args)
        return None
    training_args.push_to_hub = False  # one commit of the finished folder below, not a push per checkpoint

    from accelerate import PartialState
    from transformers import set_seed

    from modeling_exo2ego import Exo2EgoConfig

    set_seed(training_args.seed)  # before LoRA and any re-initialised mapping are created

    config = Exo2EgoConfig.from_pretrained(model_args.model_name_or_path)
    dataset = build_dataset(resolved, data_args, data_args.num_frames or config.num_frames, training_args.seed)
    model, processor = load_model(model_args)
    model = prepare_model(model, resolved, stage_args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s: %s; %d trainable parameters", stage, json.dumps(resolved.to_dict()), trainable)

    trainer = build_trainer(model, processor, dataset, resolved, training_args, data_args)
    PartialState().wait_for_everyone()  # every process has checked output_dir before it changes
    if training_args.should_save:
        if stage_args.overwrite_output_dir:  # never together with a resume (check_output_dir)
            clear_previous_run(output_dir)
        write_json_atomic(os.path.join(output_dir, RUN_RECORD_NAME), {"stage": stage, "arguments": arguments})
    completed = completed_checkpoint(output_dir, resume)
    if completed is None:
        trainer.train(resume_from_checkpoint=resume)
    else:
        finish_from_checkpoint(trainer, completed)

    files = save_stage_output(
        trainer,
        resolved,
        stage_args,
        output_dir,
        build_model=lambda: prepare_model(load_model(model_args)[0], resolved, stage_args),
    )
    trainer.save_state()
    if trainer.args.should_save:
        metadata = stage_metadata(
            resolved,
            started_from,
            model_args,
            training_args,
            trainer,
            arguments,
            unused,
            [*files, "trainer_state.json"],
        )
        write_json_atomic(
            os.path.join(output_dir, STAGE_METADATA_NAME), metadata, default=str
        )  # last: marks the folder complete
        if push:
            _push(output_dir, training_args, stage_args)
    trainer.accelerator.wait_for_everyone()
    return trainer


def _push(output_dir: str, training_args, stage_args: StageArguments) -> None:
    push_stage_output(
        output_dir,
        training_args.hub_model_id,
        private=training_args.hub_private_repo,
        token=training_args.hub_token,
        eval_results=stage_args.card_eval_results,
    )


def main(stage: str, argv=None) -> int:
    """Entry point of the stage scripts: bad input ends the run with one line naming it and exit status 2
    (`--log_level debug` also logs the traceback)."""
    try:
        run_stage(stage, argv)
    except ValueError as error:
        logger.debug("traceback of the error below", exc_info=True)
        print(f"train/{stage}.py: error: {error}", file=sys.stderr)
        return 2
    return 0

"""The training data of a stage, built from its data arguments: Ego-ExoClip pairs, EgoIT questions, or init's two
caption sources mixed per item (`train.data` holds the sample classes)."""

from __future__ import annotations

from modeling_exo2ego import DecodedClipCache
from train.arguments import DataArguments, two_source_init
from train.data import (
    CaptionSamples,
    EgoExoClipSamples,
    EgoITSamples,
    MixedSourceSamples,
    load_table,
    parse_mix,
)
from train.stages import ResolvedStage


def decoded_clip_cache(data_args: DataArguments):
    """The `DecodedClipCache` the data arguments ask for, or None."""
    return DecodedClipCache.from_mib(data_args.decoded_cache_mb)


def train_rows(table, data_args: DataArguments):
    """The rows training reads: all, the first `max_train_samples`, or that many drawn with `subset_seed`."""
    if data_args.max_train_samples is None:
        return table
    if data_args.subset_seed is not None:
        table = table.shuffle(seed=data_args.subset_seed)
    return table.select(range(min(data_args.max_train_samples, len(table))))


def build_caption_sources(data_args: DataArguments, num_frames: int, seed: int):
    """Init's two sources: exo captions for the exo tower, ego captions for the ego tower, mixed per item."""
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

"""The paper's recipe: every (narration, exo camera) once per epoch in stages 1-2, and the paper configs, stage table
and README saying the same thing."""

import os

import pytest
import torch
from datasets import Dataset
from torch.utils.data import DataLoader, RandomSampler

from train.data import EgoExoClipSamples

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "train", "configs")


def clip_table(cameras_per_row=(4, 5, 4, 3, 5, 3)):
    """Ego-ExoClip rows with 3-5 exo cameras each (no video files: only sample ids are read here)."""
    rows = []
    for k, count in enumerate(cameras_per_row):
        cams = [f"cam{c:02d}" for c in range(1, count + 1)]
        rows.append({
            "clip_id": f"t{k}_0", "take_uid": f"t{k}", "start_sec": 0.0, "end_sec": 1.0, "text": f"C acts {k}.",
            "ego_video": f"takes/t{k}/ego.mp4", "exo_videos": [f"takes/t{k}/{cam}.mp4" for cam in cams], "exo_cams": cams,
        })
    return Dataset.from_list(rows)


class SampleIds(torch.utils.data.Dataset):
    """The ids of a samples object, without decoding (what the sampler visits)."""

    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples.sample_id(index)


def rank_loader(samples, rank, world_size, seed=42):
    """The loader `Trainer` builds (RandomSampler -> accelerate's seedable sampler, sharded by batches)."""
    from accelerate.data_loader import prepare_data_loader

    loader = DataLoader(SampleIds(samples), batch_size=2, sampler=RandomSampler(SampleIds(samples)), collate_fn=list)
    return prepare_data_loader(loader, num_processes=world_size, process_index=rank, use_seedable_sampler=True, data_seed=seed)


def epoch_ids(loader, epoch):
    loader.set_epoch(epoch)
    return [sample_id for batch in loader for sample_id in batch]


def test_all_pairs_visits_every_narration_camera_pair_once_per_epoch_on_every_rank_and_after_resume():
    from accelerate.data_loader import skip_first_batches

    table = clip_table()
    pairs = {f"{row['clip_id']}@{cam}" for row in table for cam in row["exo_cams"]}
    assert len(pairs) == 24
    samples = EgoExoClipSamples(table, "unused", 4, ("exo",), "Describe.", exo_sampling="all_pairs", seed=42)
    assert len(samples) == len(pairs)
    before = [samples.sample_id(index) for index in range(len(samples))]
    samples.set_epoch(3)  # the pair behind an index never depends on the epoch
    assert [samples.sample_id(index) for index in range(len(samples))] == before

    orders = []
    for epoch in range(2):
        per_rank = [epoch_ids(rank_loader(samples, rank, 2), epoch) for rank in range(2)]
        assert set(per_rank[0]).isdisjoint(per_rank[1])  # both ranks draw the same permutation, each its shard
        assert sorted(per_rank[0] + per_rank[1]) == sorted(pairs)  # every pair exactly once
        orders.append(per_rank)
    assert orders[0] != orders[1]  # a new order each epoch

    # Resume after 2 batches of epoch 1 (what Trainer does with skip_first_batches): the rest is identical.
    for rank in range(2):
        loader = rank_loader(samples, rank, 2)
        loader.set_epoch(1)
        resumed = [sample_id for batch in skip_first_batches(loader, 2) for sample_id in batch]
        assert resumed == orders[1][rank][4:]


def test_paper_configs_follow_the_paper_recipe():
    from train.pipeline import parse_arguments

    def config(stage, *extra):
        return parse_arguments(["--config", os.path.join(CONFIGS, f"{stage}.yaml"), "--use_cpu", "true", "--tf32", "false", *extra])

    for stage in ("stage1", "stage2"):
        _, data_args, _, _ = config(stage)
        assert data_args.exo_sampling == "all_pairs"
    _, _, _, stage2_args = config("stage2")
    assert (stage2_args.kl_mode, stage2_args.kl_gather_statistics) == ("gaussian", True)
    _, init_data, _, _ = config("init")
    assert init_data.dataset_path is None
    assert init_data.exo_dataset_path and init_data.ego_dataset_path

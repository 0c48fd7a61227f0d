"""The paper's recipe: every (narration, exo camera) once per epoch in stages 1-2, and the paper configs, stage table
and README saying the same thing."""

import os

import pytest
import torch
import yaml
from datasets import Dataset
from torch.utils.data import DataLoader, RandomSampler

from train.data import EgoExoClipSamples

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "train", "configs")


def clip_table(cameras_per_row=(4, 5, 4, 3, 5, 3)):
    """Ego-ExoClip rows with 3-5 exo cameras each (no video files: only sample ids are read here)."""
    rows = []
    for k, count in enumerate(cameras_per_row):
        cams = [f"cam{c:02d}" for c in range(1, count + 1)]
        rows.append(
            {
                "clip_id": f"t{k}_0",
                "take_uid": f"t{k}",
                "start_sec": 0.0,
                "end_sec": 1.0,
                "text": f"C acts {k}.",
                "ego_video": f"takes/t{k}/ego.mp4",
                "exo_videos": [f"takes/t{k}/{cam}.mp4" for cam in cams],
                "exo_cams": cams,
            }
        )
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
    return prepare_data_loader(
        loader, num_processes=world_size, process_index=rank, use_seedable_sampler=True, data_seed=seed
    )


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
    from train.arguments import parse_arguments

    def config(stage, *extra):
        return parse_arguments(
            ["--config", os.path.join(CONFIGS, f"{stage}.yaml"), "--use_cpu", "true", "--tf32", "false", *extra]
        )

    for stage in ("stage1", "stage2"):
        _, data_args, _, _ = config(stage)
        assert data_args.exo_sampling == "all_pairs"
    _, _, _, stage2_args = config("stage2")
    assert (stage2_args.kl_mode, stage2_args.kl_gather_statistics) == ("gaussian", True)
    for name in ("stage2", "tiny_stage2"):  # the shipped stage-2 yamls name their KL form
        with open(os.path.join(CONFIGS, f"{name}.yaml")) as handle:
            assert yaml.safe_load(handle)["kl_mode"] == "gaussian"
    _, init_data, _, _ = config("init")
    assert init_data.dataset_path is None
    assert init_data.exo_dataset_path and init_data.ego_dataset_path
    assert (init_data.exo_dataset_config, init_data.ego_dataset_config, init_data.init_mix) == (
        "captions",
        "captions",
        "1:1",
    )


def test_stage_table_and_configs_agree():
    """What each paper yaml reads is what the stage table says the stage reads."""
    from train.arguments import parse_arguments
    from train.stages import STAGES

    for stage, spec in STAGES.items():
        _, data_args, _, _ = parse_arguments(
            ["--config", os.path.join(CONFIGS, f"{stage}.yaml"), "--use_cpu", "true", "--tf32", "false"]
        )
        if spec.data == "captions":
            assert data_args.exo_dataset_path and data_args.ego_dataset_path and spec.branches == ("exo", "ego")
        elif spec.data == "ego_exo_clip":
            assert data_args.dataset_config == "clips" and data_args.exo_sampling == "all_pairs"
        else:
            assert spec.data == "egoit" and "egoit" in data_args.dataset_path
    assert STAGES["stage2"].losses == {"vtg", "kl", "ccl"} and "exo_tower_trainable" in STAGES["stage2"].ablations


# ---- init on two sources: web pairs for the exo tower, EgoClip for the ego tower --------------------------------


@pytest.fixture(scope="module")
def init_sources(tmp_path_factory):
    """Web pairs (2 videos + 2 images) built by `exo2ego data pretrain` and EgoClip built by `exo2ego data egoclip`,
    with real media, plus a tiny base checkpoint."""
    import csv
    import json

    import numpy as np
    from conftest import write_test_video
    from PIL import Image

    from datasets_scripts.egoclip.build import build_egoclip
    from datasets_scripts.pretrain.build import build_pretrain
    from exo2ego.tiny import save_tiny_model

    root = tmp_path_factory.mktemp("init")
    web = root / "web"
    records = []
    for k in range(2):
        (web / "panda").mkdir(parents=True, exist_ok=True)
        write_test_video(web / "panda" / f"v{k}.mp4", size=(24, 32))
        records.append(
            {
                "id": f"v{k}",
                "video": f"panda/v{k}.mp4",
                "conversations": [
                    {"from": "human", "value": "<video>\nDescribe the video."},
                    {"from": "gpt", "value": f"a red ball {k}"},
                ],
            }
        )
        (web / "cc3m").mkdir(exist_ok=True)
        Image.fromarray(np.full((20, 28, 3), 40 * (k + 1), np.uint8)).save(web / "cc3m" / f"i{k}.png")
        records.append(
            {
                "id": f"i{k}",
                "image": f"cc3m/i{k}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": f"a blue cup {k}"},
                ],
            }
        )
    (web / "pretrain.json").write_text(json.dumps(records))
    build_pretrain({"videollama2": web}, root / "web-captions", check_media=True)

    ego4d = root / "ego4d"
    (ego4d / "v1" / "full_scale").mkdir(parents=True)
    header = ["clip_idx", "video_uid", "narration_time", "clip_start", "clip_end", "clip_text"]
    with open(ego4d / "egoclip.csv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(header)
        for k in range(3):
            write_test_video(ego4d / "v1" / "full_scale" / f"u{k}.mp4", size=(24, 32))
            writer.writerow([k, f"u{k}", 1.0, 0.5, 2.5, f"#C C picks the green box {k}"])
    build_egoclip(ego4d, root / "egoclip")
    save_tiny_model(str(root / "base"))
    return root


def init_data_args(root, **overrides):
    from train.arguments import DataArguments

    values = dict(
        exo_dataset_path=str(root / "web-captions"),
        exo_video_root=str(root / "web"),
        ego_dataset_path=str(root / "egoclip"),
        ego_video_root=str(root / "ego4d"),
        num_frames=4,
    )
    values.update(overrides)
    return DataArguments(**values)


def test_init_mixes_both_sources_per_item_and_visits_every_row(init_sources):
    from train.arguments import check_data_arguments
    from train.dataset_setup import build_caption_sources

    check_data_arguments("init", init_data_args(init_sources))
    dataset = build_caption_sources(init_data_args(init_sources, init_mix="1:2"), num_frames=4, seed=0)
    assert len(dataset) == 4  # max(ceil(4 web / 1), ceil(3 ego / 2))
    for epoch in range(2):
        dataset.set_epoch(epoch)
        exo_rows = [row for index in range(len(dataset)) for row in dataset.rows(index, "exo")]
        ego_rows = [row for index in range(len(dataset)) for row in dataset.rows(index, "ego")]
        assert sorted(exo_rows) == [0, 1, 2, 3] and set(ego_rows) == {0, 1, 2} and len(ego_rows) == 8
    item = dataset[0]
    assert len(item["exo"]) == 1 and len(item["ego"]) == 2
    assert item["exo"][0]["sample_id"].startswith("videollama2/") and "exo_frames" in item["exo"][0]
    assert all(s["sample_id"].startswith("egoclip/") and s["ego_frames"].shape[0] == 4 for s in item["ego"])
    image_row = next(i for i in range(4) if dataset.sources["exo"][0].table[i]["media_type"] == "image")
    frames = dataset.sources["exo"][0][image_row]["exo_frames"]
    assert frames.shape == (4, 20, 28, 3) and (frames == frames[0]).all()  # an image fills every frame

    with pytest.raises(ValueError, match="not both"):
        check_data_arguments("init", init_data_args(init_sources, dataset_path="x"))
    with pytest.raises(ValueError, match="needs --ego_dataset_path"):
        check_data_arguments("init", init_data_args(init_sources, ego_dataset_path=None))
    with pytest.raises(ValueError, match="init's two sources"):
        check_data_arguments("stage1", init_data_args(init_sources))
    with pytest.raises(ValueError, match="init_mix must be"):
        check_data_arguments("init", init_data_args(init_sources, init_mix="2"))


def test_init_trains_each_tower_only_on_its_own_source(init_sources):
    """Exo-tower gradients depend only on the web rows of the batch, ego-tower gradients only on the EgoClip rows."""
    from modeling_exo2ego import Exo2EgoForConditionalGeneration, Exo2EgoProcessor
    from train.arguments import StageArguments
    from train.collator import Exo2EgoCollator
    from train.dataset_setup import build_caption_sources
    from train.model_setup import prepare_model
    from train.stages import resolve_stage
    from train.trainer import Exo2EgoTrainer, Exo2EgoTrainingArguments

    torch.manual_seed(0)
    dataset = build_caption_sources(init_data_args(init_sources), num_frames=4, seed=0)
    model = Exo2EgoForConditionalGeneration.from_pretrained(init_sources / "base", attn_implementation="eager")
    processor = Exo2EgoProcessor.from_pretrained(init_sources / "base")
    resolved = resolve_stage("init")
    model = prepare_model(model, resolved, StageArguments())
    args = Exo2EgoTrainingArguments(output_dir=str(init_sources / "out"), use_cpu=True, report_to="none")
    collator = Exo2EgoCollator(processor, resolved.branches)
    trainer = Exo2EgoTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        stage=resolved,
    )

    def tower_grads(web_row, ego_row):
        exo, ego = dataset.sources["exo"][0], dataset.sources["ego"][0]
        item = {"exo": [exo[web_row]], "ego": [ego[ego_row]], "failed_videos": 0}
        model.zero_grad()
        trainer.compute_loss(model.train(), collator([item])).backward()
        return {
            tower: torch.cat(
                [
                    p.grad.flatten()
                    for n, p in model.named_parameters()
                    if n.startswith(f"model.{tower}.") and p.grad is not None
                ]
            )
            for tower in ("exo_vision_tower", "ego_vision_tower")
        }

    base = tower_grads(0, 0)
    other_ego = tower_grads(0, 1)  # same web row, another EgoClip row
    other_web = tower_grads(1, 0)  # another web row, same EgoClip row
    assert torch.equal(base["exo_vision_tower"], other_ego["exo_vision_tower"])
    assert not torch.equal(base["ego_vision_tower"], other_ego["ego_vision_tower"])
    assert torch.equal(base["ego_vision_tower"], other_web["ego_vision_tower"])
    assert not torch.equal(base["exo_vision_tower"], other_web["exo_vision_tower"])


def test_init_runs_from_the_command_line_on_two_sources(init_sources, tmp_path):
    import json

    from train.pipeline import run_stage

    out = tmp_path / "init"
    run_stage(
        "init",
        [
            "--config",
            os.path.join(CONFIGS, "tiny_init.yaml"),
            "--model_name_or_path",
            str(init_sources / "base"),
            "--output_dir",
            str(out),
            "--dataset_path",
            "",
            "--exo_dataset_path",
            str(init_sources / "web-captions"),
            "--exo_video_root",
            str(init_sources / "web"),
            "--ego_dataset_path",
            str(init_sources / "egoclip"),
            "--ego_video_root",
            str(init_sources / "ego4d"),
            "--max_steps",
            "2",
            "--save_strategy",
            "no",
        ],
    )
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert {"vtg_exo_loss", "vtg_ego_loss"} <= set(history[0])
    assert json.loads((out / "exo2ego_stage.json").read_text())["arguments"]["data"]["init_mix"] == "1:1"

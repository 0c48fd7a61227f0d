"""benchmarks/input_pipeline.py and the loader recommendation of `exo2ego plan-memory` (train/cli.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from train.cli import (
    LOADER_HEADROOM,
    LOADER_TARGET_SAMPLES_PER_SEC,
    LOADER_WORKER_SAMPLES_PER_SEC,
    loader_workers_per_gpu,
)

REPO = Path(__file__).resolve().parents[1]


def test_workers_per_gpu_arithmetic():
    assert loader_workers_per_gpu(2.3, 1.0, 1.5) == 4  # 3.45 samples/s needs four workers of 1.0
    assert loader_workers_per_gpu(2.3, 3.45, 1.5) == 1
    assert loader_workers_per_gpu(2.3, 3.44, 1.5) == 2
    assert loader_workers_per_gpu(2.0, 0.5, 1.0) == 4
    for bad in ((0, 1.0, 1.5), (2.3, 0, 1.5), (2.3, 1.0, 0.9)):
        with pytest.raises(ValueError, match="headroom"):
            loader_workers_per_gpu(*bad)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from benchmarks.input_pipeline import main

    folder = tmp_path_factory.mktemp("input_pipeline")
    out = folder / "input_pipeline.json"
    assert main(["--tiny", "--world", str(folder / "world"), "--out", str(out)]) == 0
    return folder, json.loads(out.read_text())


def test_tiny_benchmark_writes_a_complete_json(tiny_run):
    _, result = tiny_run
    assert result["size"] == "tiny" and result["cpu"] and result["versions"]["av"]
    measured = {(row["stage"], row["mode"], row.get("workers")) for row in result["rows"]}
    for stage in ("stage2", "stage3"):
        assert (stage, "inline, 1 thread", None) in measured
        for cache in ("off", "warm"):
            assert {(stage, f"DataLoader, cache {cache}", count) for count in (1, 2)} <= measured
    assert all(row["samples_per_s"] > 0 for row in result["rows"])
    for stage, advice in result["recommendation"].items():
        one_worker = next(
            row["samples_per_s"]
            for row in result["rows"]
            if (row["stage"], row["mode"], row.get("workers")) == (stage, "DataLoader, cache off", 1)
        )
        assert advice["worker_samples_per_s"] == pytest.approx(one_worker, abs=1e-3)
        expected = math.ceil(result["headroom"] * result["target_samples_per_s"] / advice["worker_samples_per_s"])
        assert advice["workers_per_gpu"] == max(1, expected)


def test_measured_batches_are_what_the_stages_train_on(tiny_run):
    """Stage 2 decodes ego and exo views at the ego view's times, stage 3 the ego view only, both at the world's
    448-variant height, and the collator turns them into (B, T, 3, S, S) pixels at the tower's size."""
    from benchmarks.input_pipeline import SIZES, sample_indices, stage_data

    folder, _ = tiny_run
    size = SIZES["tiny"]
    dataset, collator = stage_data("stage2", folder / "world", size, cache_mb=0, seed=0)
    sample = dataset[sample_indices(dataset, size.samples, 0)[0]]
    assert sample["ego_frames"].shape == (size.num_frames, size.video_height, size.video_height, 3)
    assert (
        sample["exo_frames"].shape[0::3] == (size.num_frames, 3) and sample["exo_frames"].shape[1] == size.video_height
    )
    batch = collator([sample, sample])
    square = (2, size.num_frames, 3, size.image_size, size.image_size)
    assert tuple(batch["pixel_values_videos"].shape) == square
    assert tuple(batch["exo_pixel_values_videos"].shape) == square
    dataset, collator = stage_data("stage3", folder / "world", size, cache_mb=0, seed=0)
    batch = collator([dataset[0]])
    assert "exo_pixel_values_videos" not in batch and batch["pixel_values_videos"].shape[-1] == size.image_size


def test_sample_indices_refuses_a_world_too_small():
    from benchmarks.input_pipeline import sample_indices

    assert sorted(sample_indices(range(10), 10, 0)) == list(range(10))
    with pytest.raises(ValueError, match="render more takes"):
        sample_indices(range(3), 4, 0)


def test_plan_memory_prints_the_loader_workers(tmp_path, capsys):
    from exo2ego.cli import main

    out = tmp_path / "plan.json"
    argv = ["plan-memory", "--stage", "2", "--tiny", "--gpus", "2", "--batch", "1", "--frames", "4"]
    argv += ["--text-tokens", "24", "--checkpointing", "full", "--json", str(out)]
    assert main(argv + ["--worker-samples-per-sec", "0.5"]) == 0
    loader = json.loads(out.read_text())["loader"]
    assert loader == {
        "target_samples_per_s": LOADER_TARGET_SAMPLES_PER_SEC,
        "worker_samples_per_s": 0.5,
        "headroom": LOADER_HEADROOM,
        "workers_per_gpu": math.ceil(LOADER_HEADROOM * LOADER_TARGET_SAMPLES_PER_SEC / 0.5),
    }
    assert f"--dataloader_num_workers {loader['workers_per_gpu']} per GPU" in capsys.readouterr().out
    assert main(argv) == 0
    assert json.loads(out.read_text())["loader"]["worker_samples_per_s"] == LOADER_WORKER_SAMPLES_PER_SEC["2"]


def test_committed_worker_rates_are_the_benchmarks():
    """plan-memory's defaults are the paper-size rates benchmarks/results/input_pipeline.json holds."""
    result = json.loads((REPO / "benchmarks" / "results" / "input_pipeline.json").read_text())
    assert result["size"] == "paper"
    for stage, advice in result["recommendation"].items():
        assert LOADER_WORKER_SAMPLES_PER_SEC[stage.removeprefix("stage")] == pytest.approx(
            advice["worker_samples_per_s"], abs=0.005
        )

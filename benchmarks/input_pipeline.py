"""The training input pipeline at paper sizes: samples per second per DataLoader worker for stages 2 and 3, on CPU.

At paper scale a stage-2 sample decodes 16 frames of the ego view and 16 of one exo view from Ego-Exo4D's
downscaled 448-px takes, and a stage-3 sample 16 ego frames; the collator, which runs in the loader worker, pads
each frame square, resizes it to 336 px and normalises it (`train.collator.Exo2EgoCollator`, the CLIP image
processor of CLIP-L/14-336). This script renders a synthetic world at 448 px and 30 fps (`exo2ego data synth`),
builds Ego-ExoClip from it (`exo2ego data ego-exoclip --variant 448`) and reads Ego-ExoClip (stage 2) and the world's
EgoIT (stage 3) as the stage scripts do (`train.dataset_setup.build_dataset`, the stage's collator, a
`torch.utils.data.DataLoader` over a seeded shuffle). Per stage it measures:

- one thread in this process (a loader worker's setting): decoding and collating time per sample;
- through a DataLoader with 1 and 2 workers: samples/s over one epoch, the first batch left out (worker start);
  the decoded-clip cache off, and on with a second epoch whose clips all sit in the workers' caches (`warm`, the
  cache's upper bound: with 1.1M shuffled pairs a worker's cache holds a vanishing share of them, so paper-scale
  training runs at the `off` rate).

From the 1-worker `off` rate, the workers one GPU needs: ceil(headroom x target / rate), the target being the peer
anchor's step rate (LLaVA-NeXT-Video + LoRA, about 2.3 samples/s per H200; Exo2Ego's stage 2 and 3 do 1.4-1.5x its
FLOPs per sample, so the anchor's rate bounds theirs). `exo2ego plan-memory` prints the same recommendation from
the committed numbers (`train.cli.LOADER_WORKER_SAMPLES_PER_SEC`). Synthetic renders are flat colours, which H.264
decodes faster than camera footage: rerun on your node with a few of your own takes (`--world`) for your numbers.

    python -m benchmarks.input_pipeline                      # paper sizes (a few minutes, most of it rendering)
    python -m benchmarks.input_pipeline --tiny               # the code path at test size (seconds)
    python -m benchmarks.input_pipeline --world DIR          # reuse (or keep) the rendered world in DIR
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from benchmarks.common import cpu_name
from datasets_scripts.hub_export import BUILD_INFO_NAME
from exo2ego.cli import main as exo2ego_main
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic
from exo2ego_base.tiny import build_processor, build_tiny_tokenizer
from modeling_exo2ego import Exo2EgoConfig
from train.arguments import DataArguments
from train.cli import LOADER_TARGET_SAMPLES_PER_SEC, loader_workers_per_gpu
from train.collator import Exo2EgoCollator
from train.dataset_setup import build_dataset
from train.stages import resolve_stage

STAGES = ("stage2", "stage3")
CACHE_MODES = ("off", "warm")


@dataclass(frozen=True)
class Size:
    """What the world renders and what the processor makes of it."""

    takes: int
    fps: float
    video_height: int  # the downscaled variant the pipeline reads (Ego-Exo4D: 448)
    image_size: int  # the vision tower's input (CLIP-L/14-336: 336)
    patch_size: int
    num_frames: int
    samples: int  # samples per measured epoch
    batch: int  # per-device batch


SIZES = {
    "paper": Size(
        takes=8, fps=30.0, video_height=448, image_size=336, patch_size=14, num_frames=16, samples=96, batch=8
    ),
    "tiny": Size(takes=3, fps=8.0, video_height=64, image_size=32, patch_size=4, num_frames=4, samples=8, batch=2),
}


def render_world(folder: Path, size: Size, seed: int) -> None:
    """The synthetic world at `size` and its Ego-ExoClip, unless `folder` already holds them."""
    world, clips = folder / "world", folder / "ego-exoclip"
    if not (world / BUILD_INFO_NAME).exists():
        status = exo2ego_main(
            ["data", "synth", "--out", str(world), "--takes", str(size.takes), "--seed", str(seed)]
            + ["--fps", f"{size.fps:g}", "--height", str(size.video_height), "--downscaled-height"]
            + [str(size.video_height), "--downscaled-only", "--web-exo-per-take", "0", "--num-proc", "2"]
            + ["--overwrite"]
        )
        if status:
            raise RuntimeError(f"exo2ego data synth failed with status {status}")
    if not (clips / BUILD_INFO_NAME).exists():
        status = exo2ego_main(
            ["data", "ego-exoclip", "--egoexo-root", str(world), "--out", str(clips), "--variant", "448"]
            + ["--overwrite"]
        )
        if status:
            raise RuntimeError(f"exo2ego data ego-exoclip failed with status {status}")


def processor_at(size: Size):
    """The processor the paper-scale model would use (CLIP at `image_size`, STC connector), tiny tokenizer."""
    vision = {"image_size": size.image_size, "patch_size": size.patch_size}
    config = Exo2EgoConfig(ego_vision_config=vision, exo_vision_config=vision, num_frames=size.num_frames)
    return build_processor(config, build_tiny_tokenizer())


def stage_data(stage: str, folder: Path, size: Size, cache_mb: int, seed: int):
    """(dataset, collator) of `stage` as the stage script builds them."""
    resolved = resolve_stage(stage)
    if stage == "stage3":
        data = DataArguments(dataset_path=str(folder / "world" / "egoit"), video_root=str(folder / "world"))
    else:
        data = DataArguments(
            dataset_path=str(folder / "ego-exoclip"), dataset_config="clips", video_root=str(folder / "world")
        )
    data.decoded_cache_mb = cache_mb
    dataset = build_dataset(resolved, data, size.num_frames, seed)
    return dataset, Exo2EgoCollator(processor_at(size), resolved.branches)


def sample_indices(dataset, count: int, seed: int) -> list[int]:
    """`count` positions of a seeded shuffle, as the trainer's sampler visits them."""
    order = np.random.default_rng(seed).permutation(len(dataset))
    if len(order) < count:
        raise ValueError(f"the world has {len(order)} samples, fewer than the {count} to measure: render more takes")
    return order[:count].tolist()


def time_inline(dataset, collator, indices: list[int], batch: int) -> dict:
    """Decode and collate time per sample in this process, one thread (a loader worker's setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decode = collate = 0.0
        for start in range(0, len(indices), batch):
            began = time.perf_counter()
            samples = [dataset[index] for index in indices[start : start + batch]]
            decoded = time.perf_counter()
            collator(samples)
            decode += decoded - began
            collate += time.perf_counter() - decoded
    finally:
        torch.set_num_threads(threads)
    per_sample = len(indices)
    return {
        "decode_ms_per_sample": round(1000 * decode / per_sample, 1),
        "collate_ms_per_sample": round(1000 * collate / per_sample, 1),
        "samples_per_s": round(per_sample / (decode + collate), 3),
    }


def time_loader(dataset, collator, indices: list[int], batch: int, workers: int, epochs: int) -> float:
    """Samples/s of the last of `epochs` epochs through a DataLoader, leaving out each epoch's first batch."""
    loader = DataLoader(
        Subset(dataset, indices),
        batch_size=batch,
        num_workers=workers,
        collate_fn=collator,
        persistent_workers=True,  # the warm epoch reads the caches the first epoch filled
    )
    rate = 0.0
    for _ in range(epochs):
        batches = iter(loader)
        next(batches)
        began, counted = time.perf_counter(), 0
        for item in batches:
            counted += int(item["input_ids"].shape[0])
        rate = counted / (time.perf_counter() - began)
    return rate


def measure(folder: Path, size: Size, seed: int, workers: tuple[int, ...]) -> list[dict]:
    rows = []
    for stage in STAGES:
        dataset, collator = stage_data(stage, folder, size, cache_mb=0, seed=seed)
        indices = sample_indices(dataset, size.samples, seed)
        rows.append(
            {"stage": stage, "mode": "inline, 1 thread", **time_inline(dataset, collator, indices, size.batch)}
        )
        for cache in CACHE_MODES:
            # A warm cache holds every measured clip: about 3 x 16 x 448 x 796 bytes per stage-2 sample.
            cache_mb = 0 if cache == "off" else 64 * 1024
            dataset, collator = stage_data(stage, folder, size, cache_mb, seed)
            for count in workers:
                rate = time_loader(dataset, collator, indices, size.batch, count, epochs=1 if cache == "off" else 2)
                rows.append(
                    {"stage": stage, "mode": f"DataLoader, cache {cache}", "workers": count, "samples_per_s": rate}
                )
                print(f"{stage}  cache {cache:<4}  {count} worker(s)  {rate:7.2f} samples/s", flush=True)
    return rows


def recommendation(rows: list[dict], target: float, headroom: float) -> dict:
    """Workers per GPU for each stage from its 1-worker, cache-off rate."""
    advice = {}
    for stage in STAGES:
        rate = next(
            row["samples_per_s"]
            for row in rows
            if row["stage"] == stage and row["mode"] == "DataLoader, cache off" and row["workers"] == 1
        )
        advice[stage] = {
            "worker_samples_per_s": round(rate, 3),
            "workers_per_gpu": loader_workers_per_gpu(target, rate, headroom),
        }
    return advice


def versions() -> dict[str, str]:
    import av
    import PIL
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
        "ffmpeg": ".".join(str(part) for part in av.library_versions["libavcodec"]),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


@dataclass
class InputPipelineArguments:
    """The flags of `python -m benchmarks.input_pipeline`."""

    tiny: bool = field(default=False, metadata={"help": "test sizes (64-px world, 4 frames at 32 px)"})
    world: str | None = field(
        default=None, metadata={"help": "folder for the rendered world (reused when it holds one)"}
    )
    workers: list[int] = field(
        default_factory=lambda: [1, 2], metadata={"help": "DataLoader worker counts to time (must include 1)"}
    )
    target: float = field(default=LOADER_TARGET_SAMPLES_PER_SEC, metadata={"help": "samples/s per GPU"})
    headroom: float = field(default=1.5, metadata={"help": "workers keep up with headroom x target"})
    seed: int = field(default=0, metadata={"help": "seed of the rendered world and the sampled items"})
    out: str | None = field(
        default=None, metadata={"help": "JSON path (default benchmarks/results/input_pipeline[_tiny].json)"}
    )

    def __post_init__(self):
        if 1 not in self.workers:
            raise ValueError("--workers must include 1: the recommendation is built on the 1-worker rate")


def main(argv=None) -> int:
    args = parse_script_arguments(InputPipelineArguments, argv, __doc__.splitlines()[0])

    name = "tiny" if args.tiny else "paper"
    size = SIZES[name]
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.world or scratch)
        began = time.perf_counter()
        render_world(folder, size, args.seed)
        render_seconds = time.perf_counter() - began
        rows = measure(folder, size, args.seed, tuple(args.workers))
    advice = recommendation(rows, args.target, args.headroom)
    for stage, item in advice.items():
        print(
            f"{stage}: {item['worker_samples_per_s']:.2f} samples/s per worker -> {item['workers_per_gpu']} workers "
            f"per GPU for {args.target:g} samples/s x {args.headroom:g} headroom"
        )
    result = {
        "benchmark": "input_pipeline",
        "size": name,
        "settings": {**size.__dict__, "seed": args.seed, "workers": args.workers},
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": versions(),
        "render_seconds": round(render_seconds, 1),
        "rows": [
            {key: round(value, 3) if isinstance(value, float) else value for key, value in row.items()} for row in rows
        ],
        "target_samples_per_s": args.target,
        "headroom": args.headroom,
        "recommendation": advice,
    }
    out = Path(args.out or f"benchmarks/results/input_pipeline{'_tiny' if args.tiny else ''}.json")
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Forward latency and peak memory of the tiny Exo2Ego on CPU: ego-only inference vs the paired training mode.

Each mode runs in its own spawned process so the peak resident set size (ru_maxrss) belongs to that mode alone;
the table reports the peak above the process's footprint after building the model. Prints a table and writes
JSON (with the CPU, versions and settings) to --out.

    python -m benchmarks.model_forward [--frames 8] [--batch 2] [--repeats 10] \
        [--out benchmarks/results/model_forward.json]
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from dataclasses import asdict, dataclass, field

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic

MODES = {
    "ego inference (no grad)": dict(paired=False, train=False),
    "ego forward + backward": dict(paired=False, train=True),
    "paired stage 2 (x, y, F, G, KL, CCL) + backward": dict(paired=True, train=True),
}


def measure(mode: dict, frames: int, batch: int, repeats: int, queue) -> None:
    import torch

    from exo2ego_base.tiny import build_tiny_model
    from train.losses import cycle_consistency_loss, kl_alignment_loss

    torch.manual_seed(0)
    model, processor = build_tiny_model(num_frames=frames)
    model.train(mode["train"])
    size = model.config.ego_vision_config.image_size
    pixels = torch.randn(batch, frames, 3, size, size)
    tokens = processor.num_video_tokens(frames, "ego")
    input_ids = torch.cat(
        [torch.full((batch, tokens), processor.video_token_id), torch.randint(10, 400, (batch, 32))], 1
    )
    labels = input_ids.masked_fill(input_ids == processor.video_token_id, -100)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        if not mode["train"]:
            with torch.no_grad():
                model(input_ids=input_ids, pixel_values_videos=pixels)
            return
        extra = dict(exo_pixel_values_videos=pixels, output_mapping_features=True) if mode["paired"] else {}
        out = model(input_ids=input_ids, pixel_values_videos=pixels, labels=labels, **extra)
        loss = out.loss
        if mode["paired"]:
            loss = loss + kl_alignment_loss(out.exo_features, out.ego_to_exo, frames_per_clip=pixels.shape[1])
            loss = loss + cycle_consistency_loss(out.ego_features, out.ego_cycle, out.exo_features, out.exo_cycle)
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        timings.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"median_ms": 1000 * statistics.median(timings), "peak_extra_mib": (peak_kib - baseline_kib) / 1024})


@dataclass
class ModelForwardArguments:
    """The flags of `python -m benchmarks.model_forward`."""

    frames: int = field(default=8, metadata={"help": "frames per video"})
    batch: int = field(default=2, metadata={"help": "videos per forward"})
    repeats: int = field(default=10, metadata={"help": "timed forwards per mode (after one warm-up)"})
    out: str = field(default="benchmarks/results/model_forward.json", metadata={"help": "JSON output path"})


def main(argv=None) -> None:
    args = parse_script_arguments(ModelForwardArguments, argv, __doc__.splitlines()[0])

    import torch
    import transformers

    context = multiprocessing.get_context("spawn")
    rows = {}
    for name, mode in MODES.items():
        queue = context.Queue()
        process = context.Process(target=measure, args=(mode, args.frames, args.batch, args.repeats, queue))
        process.start()
        rows[name] = queue.get()
        process.join()

    reference = rows["ego inference (no grad)"]["median_ms"]
    print(f"tiny Exo2Ego, batch {args.batch}, {args.frames} frames, CPU: {cpu_name()}")
    print(f"{'mode':<50} {'median ms':>10} {'x ego':>7} {'peak MiB':>9}")
    for name, row in rows.items():
        print(
            f"{name:<50} {row['median_ms']:>10.1f} {row['median_ms'] / reference:>7.2f} {row['peak_extra_mib']:>9.1f}"
        )
    result = {
        "settings": asdict(args),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "results": rows,
    }
    write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()

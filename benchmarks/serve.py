"""Latency and throughput of `exo2ego serve` under concurrent clients against one-at-a-time `model.generate`.

Modes, all on the same requests (synthetic-world videos, greedy, `--max-tokens` new tokens):

- `generate, one at a time`: in this process, processor + `model.generate` per request, one after another;
- `server, 1 client`: the same requests through the server, one at a time (HTTP, JSON, video decoding there);
- `server, N clients`: N `openai` clients at once, the server batching them (`--max-batch-size`);
- `server, N clients, no batching`: the same with `--max-batch-size 1`, to show what batching buys.

Prints a table (p50/p95 latency per request, requests/s) and writes JSON with the machine, versions and settings.

    python -m benchmarks.serve [--model DIR] [--clients 8] [--requests-per-client 4] [--max-tokens 16]
                               [--out benchmarks/results/serve.json]

Without `--model` it serves a tiny random model (saved to a temporary folder).
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import package_versions, write_json_atomic


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(latencies: list[float], wall_s: float) -> dict:
    return {
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * percentile(latencies, 0.95),
        "requests_per_s": len(latencies) / wall_s,
        "wall_s": wall_s,
    }


def request_set(examples) -> list[tuple[str, str, float | None, float | None]]:
    """Eight different requests: two videos, two questions, whole video or the question's window."""
    return [
        (example.video, question, *window)
        for example in examples
        for question in (example.question, "What did I do with the cube?")
        for window in ((None, None), (example.start_sec, example.end_sec))
    ]


def generate_one_at_a_time(model_dir: str, requests, max_tokens: int) -> dict:
    import torch
    from transformers import AutoModel, AutoProcessor

    import modeling_exo2ego  # noqa: F401  (registers the Auto classes)

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)

    def one(video, question, start, end):
        item = {"type": "video", "path": video}
        item.update({key: value for key, value in (("start_sec", start), ("end_sec", end)) if value is not None})
        messages = [{"role": "user", "content": [item, {"type": "text", "text": question}]}]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        ).to(device)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)

    one(*requests[0])  # warm-up
    latencies, start = [], time.perf_counter()
    for request in requests:
        began = time.perf_counter()
        one(*request)
        latencies.append(time.perf_counter() - began)
    return summarize(latencies, time.perf_counter() - start)


def through_server(
    model_dir: str, media_root: str, requests, clients: int, max_tokens: int, max_batch_size: int
) -> dict:
    import openai

    from exo2ego.serve.process import ServerProcess

    args = [
        "--model",
        model_dir,
        "--media-root",
        media_root,
        "--served-model-name",
        "bench",
        "--max-batch-size",
        str(max_batch_size),
    ]
    with ServerProcess(args) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=600)

        def ask(request) -> float:
            video, question, start, end = request
            video_url = {"url": f"file://{video}"}
            video_url.update(
                {key: value for key, value in (("start_sec", start), ("end_sec", end)) if value is not None}
            )
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "video_url", "video_url": video_url}, {"type": "text", "text": question}],
                }
            ]
            began = time.perf_counter()
            client.chat.completions.create(model="bench", messages=messages, max_tokens=max_tokens, temperature=0)
            return time.perf_counter() - began

        ask(requests[0])  # warm-up
        before = server.health()
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            latencies = list(pool.map(ask, requests))
        wall = time.perf_counter() - start
        after = server.health()
    batches = after["batches"] - before["batches"]
    result = summarize(latencies, wall)
    result["mean_batch_size"] = (after["requests_generated"] - before["requests_generated"]) / max(1, batches)
    result["largest_batch"] = after["largest_batch"]
    return result


@dataclass
class ServeBenchmarkArguments:
    """The flags of `python -m benchmarks.serve`."""

    model: str | None = field(default=None, metadata={"help": "model folder (None: a tiny random model)"})
    clients: int = field(default=8, metadata={"help": "concurrent openai clients"})
    requests_per_client: int = field(default=4, metadata={"help": "requests each client sends"})
    max_tokens: int = field(default=16, metadata={"help": "new tokens per request"})
    max_batch_size: int = field(default=8, metadata={"help": "largest batch the batched server forms"})
    out: str = field(default="benchmarks/results/serve.json", metadata={"help": "JSON output path"})


def main(argv=None) -> None:
    args = parse_script_arguments(ServeBenchmarkArguments, argv, __doc__.splitlines()[0])

    import torch

    from exo2ego.examples import write_synthetic_examples
    from exo2ego.tiny import save_tiny_model

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="exo2ego-bench-serve-") as scratch:
        model_dir = args.model
        if model_dir is None:
            model_dir = str(Path(scratch) / "model")
            save_tiny_model(model_dir, seed=0)
        media = Path(scratch) / "media"
        requests = request_set(write_synthetic_examples(media, count=2))
        requests = (requests * (args.clients * args.requests_per_client // len(requests) + 1))[
            : args.clients * args.requests_per_client
        ]
        rows = {"generate, one at a time": generate_one_at_a_time(model_dir, requests, args.max_tokens)}
        rows["server, 1 client"] = through_server(
            model_dir, str(media), requests, 1, args.max_tokens, args.max_batch_size
        )
        rows[f"server, {args.clients} clients"] = through_server(
            model_dir, str(media), requests, args.clients, args.max_tokens, args.max_batch_size
        )
        rows[f"server, {args.clients} clients, no batching"] = through_server(
            model_dir, str(media), requests, args.clients, args.max_tokens, 1
        )

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    baseline = rows["generate, one at a time"]["requests_per_s"]
    print(
        f"exo2ego serve, {len(requests)} requests, {args.max_tokens} new tokens, model "
        f"{args.model or 'tiny random'}, CPU: {cpu_name()}"
        + (f", GPU: {gpu}" if gpu else "")
        + f", load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'mode':<36} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>7} {'x generate':>10} {'mean batch':>10}")
    for name, row in rows.items():
        batch = f"{row['mean_batch_size']:.1f}" if "mean_batch_size" in row else "-"
        print(
            f"{name:<36} {row['p50_ms']:>8.0f} {row['p95_ms']:>8.0f} {row['requests_per_s']:>7.2f} "
            f"{row['requests_per_s'] / baseline:>10.2f} {batch:>10}"
        )
    write_json_atomic(
        args.out,
        {
            "settings": asdict(args),
            "cpu": cpu_name(),
            "gpu": gpu,
            "threads": torch.get_num_threads(),
            # other work on the machine slows every mode; the ratios between modes are the result to read
            "load_average_1m": {"start": load_before[0], "end": os.getloadavg()[0]},
            "versions": package_versions(["torch", "transformers", "fastapi", "uvicorn", "openai"]),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()

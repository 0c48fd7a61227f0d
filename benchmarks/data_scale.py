"""Builders at scale: time and peak memory of whole builds on generated sources of growing size, on CPU.

For each builder that can take generated input and each size, writes the source (not downloaded: generated
records in the released layout), then builds it in a CHILD process of its own, which reports its wall time, CPU
time and peak resident memory (``resource.getrusage``; its RSS after the imports is reported too, so the build's
own share shows). Sources:

- ``pretrain``: a VideoLLaMA2-style JSON array (``{id, video|image, conversations}``, about 220 bytes a record:
  1M records are about 220 MB), 0.1% bad records, built with ``--skip-bad-rows``;
- ``egoclip``: EgoVLP's ``egoclip.csv`` (tab-separated), 0.1% bad rows;
- ``egoit``: GroundVQA's ``annotations.EgoTimeQA.json`` (the EgoIT source that ships as one JSON array).

Goals (issue 30): peak memory under 1 GiB at every size, time linear in rows (4M/1M time ratio between 3.5 and
4.5), at least 21k rows/s for ``pretrain`` on 2 cores. Prints a table and writes JSON (CPU, versions, settings)::

    python -m benchmarks.data_scale                                    # 0.25M, 1M and 4M rows (tens of minutes)
    python -m benchmarks.data_scale --sizes 10000 40000 --builders pretrain   # quick check
"""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.provenance import write_json_atomic

BUILDERS = ("pretrain", "egoclip", "egoit")
DEFAULT_SIZES = (250_000, 1_000_000, 4_000_000)
GOALS = {"peak_rss_mb": 1024, "time_ratio_4x": (3.5, 4.5), "pretrain_rows_per_s": 21_000}
BAD_EVERY = 1000  # one bad record in this many

WORDS = (
    "a the man woman dog cat person hand table kitchen street car red blue green small large wooden metal slowly "
    "quickly walks runs holds picks opens closes cuts pours looks turns camera shows scene outdoor indoor video of "
    "and with on in near while then from to into over under"
).split()


# --------------------------------------------------------------------------------------------- sources
def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_pretrain_source(root: Path, rows: int, seed: int = 0) -> int:
    """``root/pretrain.json``: a JSON array of ``rows`` VideoLLaMA2-style records, written record by record."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "pretrain.json", "w", encoding="utf-8") as handle:
        handle.write("[")
        for index in range(rows):
            is_image = index % 4 == 3
            record = {
                "id": index,
                "image" if is_image else "video": f"{'cc3m' if is_image else 'panda'}/{index // 10_000:04d}/"
                f"{index:08d}.{'jpg' if is_image else 'mp4'}",
                "conversations": [
                    {"from": "human", "value": f"<{'image' if is_image else 'video'}>\nDescribe this briefly."},
                    {"from": "gpt", "value": _sentence(rng, 8, 18)},
                ],
            }
            if index % BAD_EVERY == 7:
                record["conversations"] = record["conversations"][:1]
            handle.write(",\n" if index else "\n")
            handle.write(json.dumps(record))
        handle.write("\n]\n")
    return (root / "pretrain.json").stat().st_size


def write_egoclip_source(root: Path, rows: int, seed: int = 0) -> int:
    """``root/egoclip.csv`` (tab-separated, EgoVLP's columns)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "egoclip.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(
            ["clip_idx", "video_uid", "video_dur", "narration_source", "narration_ind", "narration_time"]
            + ["clip_start", "clip_end", "clip_text", "tag_verb", "tag_noun"]
        )
        for index in range(rows):
            start = round(rng.uniform(0, 3000), 4)
            end = start + 1.2 if index % BAD_EVERY != 7 else start - 1  # bad: ends before it starts
            writer.writerow(
                [index, f"{index // 2000:08x}-0000-4000-8000-000000000000", 3600.0, "narration_pass_1", index]
                + [start + 0.6, start, end, "#C C " + _sentence(rng, 3, 10), "[1]", "[2]"]
            )
    return path.stat().st_size


def write_egoit_source(root: Path, rows: int, seed: int = 0) -> int:
    """``root/data/unified/annotations.EgoTimeQA.json``: a JSON array of GroundVQA's EgoTimeQA records."""
    rng = random.Random(seed)
    path = root / "data" / "unified" / "annotations.EgoTimeQA.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for index in range(rows):
            start = round(rng.uniform(0, 400), 3)
            record = {
                "video_id": f"{index // 500:08x}-1111-4000-8000-000000000000",
                "sample_id": index,
                "question": f"What did I {_sentence(rng, 3, 8)}?",
                "answer": _sentence(rng, 1, 6),
                "start_sec": start,
                "end_sec": start + 8.0 if index % BAD_EVERY != 7 else start,  # bad: empty interval
            }
            handle.write(", " if index else "")
            handle.write(json.dumps(record))
        handle.write("]\n")
    return path.stat().st_size


WRITERS = {"pretrain": write_pretrain_source, "egoclip": write_egoclip_source, "egoit": write_egoit_source}


# --------------------------------------------------------------------------------------------- child
def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_build(builder: str, source: Path, out: Path) -> dict:
    """Build ``builder`` from ``source`` into ``out`` in this process; return rows, times and memory."""
    from datasets_scripts.egoclip.build import build_egoclip
    from datasets_scripts.egoit.build import build_egoit
    from datasets_scripts.pretrain.build import build_pretrain

    after_imports = _rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if builder == "pretrain":
        info = build_pretrain({"videollama2": source}, out, skip_bad_rows=True)
        rows = info["counts"]["captions"]
    elif builder == "egoclip":
        info = build_egoclip(source, out, skip_bad_rows=True)
        rows = info["counts"]["egoclip"]
    elif builder == "egoit":
        info = build_egoit({"egotimeqa": source}, out, skip_bad_rows=True)
        rows = info["counts"]["egotimeqa"]
    else:
        raise ValueError(f"unknown builder {builder!r}; known: {', '.join(BUILDERS)}")
    seconds = time.perf_counter() - started
    return {
        "rows_written": rows,
        "skipped_rows": info["skips"]["skipped_rows"],
        "seconds": round(seconds, 3),
        "cpu_seconds": round(time.process_time() - cpu, 3),
        "peak_rss_mb": round(_rss_mb(), 1),
        "rss_after_imports_mb": round(after_imports, 1),
        "output_mb": round(sum(path.stat().st_size for path in out.rglob("*") if path.is_file()) / 2**20, 2),
    }


def child(builder: str, source: str, out: str) -> None:
    """The build child: build `builder` from `source` into `out` and print the report as one JSON line."""
    print(json.dumps(run_build(builder, Path(source), Path(out))))


# The child runs `child` directly, not `main`: its parser would load transformers, whose memory the child's
# after-imports and peak RSS would then count.
CHILD_COMMAND = "import sys; from benchmarks.data_scale import child; child(*sys.argv[1:])"


def measure(builder: str, rows: int, workdir: Path, seed: int) -> dict:
    """Write the source, then build it in a child process; the child's report plus the source's size."""
    source = workdir / f"{builder}-{rows}-src"
    out = workdir / f"{builder}-{rows}-out"
    started = time.perf_counter()
    source_bytes = WRITERS[builder](source, rows, seed)
    generate_seconds = time.perf_counter() - started
    command = [sys.executable, "-c", CHILD_COMMAND, builder, str(source), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"{builder} at {rows} rows failed:\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(source, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {
        "builder": builder,
        "rows": rows,
        "source_mb": round(source_bytes / 2**20, 2),
        "generate_seconds": round(generate_seconds, 2),
        **report,
        "rows_per_s": round(rows / report["seconds"]),
    }


# --------------------------------------------------------------------------------------------- report
def versions() -> dict[str, str]:
    import datasets
    import ijson
    import numpy
    import pyarrow

    return {
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "datasets": datasets.__version__,
        "numpy": numpy.__version__,
        "ijson": ijson.__version__,
        "ijson_backend": ijson.backend_name,
    }


def check_goals(results: list[dict]) -> dict:
    """Per builder: peak under the limit at every size, the time ratios of sizes 4x apart (the goal applies to the
    largest pair), pretrain's row rate at the largest size."""
    checks = {}
    for builder in dict.fromkeys(result["builder"] for result in results):
        mine = {result["rows"]: result for result in results if result["builder"] == builder}
        check = {"peak_rss_under_limit": all(r["peak_rss_mb"] < GOALS["peak_rss_mb"] for r in mine.values())}
        ratios = {
            f"{large}/{small}": round(mine[large]["seconds"] / mine[small]["seconds"], 2)
            for small in mine
            for large in mine
            if large == 4 * small
        }
        if ratios:
            low, high = GOALS["time_ratio_4x"]
            check["time_ratios_4x"] = ratios
            largest_pair = max(ratios, key=lambda pair: int(pair.split("/")[0]))  # 4M/1M at the default sizes
            check["time_linear"] = low <= ratios[largest_pair] <= high
        if builder == "pretrain":
            largest = mine[max(mine)]
            check["rows_per_s_at_largest"] = largest["rows_per_s"]
            check["rows_per_s_goal_met"] = largest["rows_per_s"] >= GOALS["pretrain_rows_per_s"]
        checks[builder] = check
    return checks


@dataclass
class DataScaleArguments:
    """The flags of `python -m benchmarks.data_scale`."""

    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES), metadata={"help": "rows per source"})
    builders: list[str] = field(
        default_factory=lambda: list(BUILDERS), metadata={"choices": BUILDERS, "help": "builders to measure"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the generated sources"})
    workdir: str | None = field(
        default=None, metadata={"help": "where sources and builds go (None: a temporary folder)"}
    )
    json: str = field(default="benchmarks/results/data_scale.json", metadata={"help": "JSON output path"})


def main(argv=None) -> int:
    # Deferred: the build children (`CHILD_COMMAND`) import this module and report their memory after imports; the
    # parser (transformers) would add to it.
    from exo2ego_base.command_line import parse_script_arguments

    args = parse_script_arguments(DataScaleArguments, argv, __doc__.splitlines()[0])

    load_start = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        print(
            f"{'builder':<10}{'rows':>10}{'source MB':>11}{'seconds':>9}{'rows/s':>9}{'peak MB':>9}{'imports MB':>12}"
        )
        for builder in args.builders:
            for rows in sorted(args.sizes):
                result = measure(builder, rows, Path(tmp), args.seed)
                results.append(result)
                print(
                    f"{builder:<10}{rows:>10}{result['source_mb']:>11.1f}{result['seconds']:>9.1f}"
                    f"{result['rows_per_s']:>9}{result['peak_rss_mb']:>9.0f}{result['rss_after_imports_mb']:>12.0f}",
                    flush=True,
                )
    report = {
        "benchmark": "data_scale",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)},
        "versions": versions(),
        "args": asdict(args),
        "goals": GOALS,
        "results": results,
        "checks": check_goals(results),
    }
    for builder, check in report["checks"].items():
        print(f"{builder}: {json.dumps(check)}")
    write_json_atomic(args.json, report)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

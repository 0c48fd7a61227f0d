"""Distractor construction throughput at EgoMCQ scale, on CPU, with the real all-MiniLM-L6-v2.

Writes a generated ``egomcq.json`` in the released format (``--queries`` questions, 5 candidate clips
each, EgoClip-style narrations) and runs the real EgoMCQ adapter on it:

1. ``embed``: every unique narration embedded once (batched), cold cache;
2. ``mine``: the adapter itself (parse, drop near-duplicate originals, similarity search over the
   pool, greedy selection to 10 candidates, frozen option order) with the embeddings cached;
3. ``build``: the sum, i.e. a cold EgoMCQ build, extrapolated to the released 39,751 questions.

Target: a full EgoMCQ build in under 10 minutes on 2 cores. Prints a table and writes JSON.

    python -m benchmarks.data_distractors                 # ~40K questions (several minutes)
    python -m benchmarks.data_distractors --queries 2000  # quick check
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import cpu_name
from exo2ego_base.command_line import parse_script_arguments
from exo2ego_base.provenance import write_json_atomic

EGOMCQ_QUESTIONS = 39_751  # released egomcq.json
TARGET_SECONDS = 600

VERBS = [
    "picks",
    "puts",
    "holds",
    "opens",
    "closes",
    "cuts",
    "washes",
    "moves",
    "drops",
    "lifts",
    "turns",
    "pours",
    "wipes",
    "folds",
    "throws",
    "touches",
    "adjusts",
    "removes",
    "places",
    "stirs",
    "pushes",
    "pulls",
    "rinses",
    "checks",
]
ADJECTIVES = [
    "",
    "small",
    "red",
    "wooden",
    "plastic",
    "metal",
    "white",
    "black",
    "green",
    "empty",
    "wet",
    "big",
    "old",
]
NOUNS = [
    "cup",
    "knife",
    "plate",
    "bowl",
    "spoon",
    "board",
    "onion",
    "tomato",
    "door",
    "drawer",
    "bag",
    "box",
    "phone",
    "towel",
    "shirt",
    "bottle",
    "lid",
    "pan",
    "pot",
    "brush",
    "screw",
    "wheel",
    "book",
    "paper",
    "card",
    "tap",
    "sponge",
]
PLACES = [
    "",
    "on the table",
    "from the floor",
    "in the sink",
    "into the bag",
    "with his left hand",
    "with her right hand",
    "on the shelf",
    "in the fridge",
    "near the stove",
    "on the counter",
    "from the drawer",
]


def narration(rng: random.Random) -> str:
    adjective = rng.choice(ADJECTIVES)
    words = ["#C", "C", rng.choice(VERBS), "the", adjective, rng.choice(NOUNS), rng.choice(PLACES)]
    return " ".join(word for word in words if word)


def write_egomcq(path: Path, queries: int, seed: int = 0) -> int:
    """A generated ``egomcq.json`` (released format); returns the number of distinct narrations."""
    rng = random.Random(seed)
    payload, texts = {}, set()
    for index in range(queries):
        video = f"video-{rng.randrange(queries // 4 + 1):06d}"
        clips = {}
        for choice in range(5):
            text = narration(rng)
            texts.add(text)
            start = rng.uniform(0, 1800)
            clips[str(choice)] = {
                "video_uid": video if index % 2 else f"video-{rng.randrange(10**6):06d}",
                "clip_start": start,
                "clip_end": start + 1.0,
                "clip_text": text,
                "tag_verb": "[1]",
                "tag_noun": "[2]",
            }
        answer = rng.randrange(5)
        payload[str(index)] = {"query": clips[str(answer)], "choices": clips, "answer": answer, "types": 1 + index % 2}
    path.write_text(json.dumps(payload))
    return len(texts)


@dataclass
class DistractorsArguments:
    """The flags of `python -m benchmarks.data_distractors`."""

    queries: int = field(default=40_000, metadata={"help": "EgoMCQ questions to simulate"})
    batch_size: int = field(default=256, metadata={"help": "sentence-transformers batch size"})
    out: str = field(default="benchmarks/results/data_distractors.json", metadata={"help": "JSON output path"})


def main(argv=None) -> None:
    args = parse_script_arguments(DistractorsArguments, argv, __doc__.splitlines()[0])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from datasets_scripts.build_command import BuildContext
    from datasets_scripts.distractors import TextEncoder
    from datasets_scripts.egobench.mined_tasks import read_egomcq
    from datasets_scripts.egobench.options import EgoBenchOptions, clean_narration

    load_before = os.getloadavg()[0]  # the CPUs may be shared: record how busy they were
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        unique_texts = write_egomcq(root / "egomcq.json", args.queries)
        load_start = time.perf_counter()
        encoder = TextEncoder(batch_size=args.batch_size)
        load_seconds = time.perf_counter() - load_start
        texts = sorted(
            {
                clean_narration(t)
                for t in (
                    c["clip_text"]
                    for q in json.loads((root / "egomcq.json").read_text()).values()
                    for c in q["choices"].values()
                )
            }
        )
        start = time.perf_counter()
        encoder.embed(texts)
        embed_seconds = time.perf_counter() - start
        start = time.perf_counter()
        tables = read_egomcq(root, BuildContext(), EgoBenchOptions(encoder=encoder))
        mine_seconds = time.perf_counter() - start
    rows = tables["egomcq"][1]
    build_seconds = embed_seconds + mine_seconds
    full_estimate = build_seconds * EGOMCQ_QUESTIONS / args.queries
    result = {
        "benchmark": "data_distractors",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "encoder": encoder.encoder_id,
        "batch_size": args.batch_size,
        "queries": args.queries,
        "rows_built": len(rows),
        "unique_texts": len(texts),
        "model_load_s": round(load_seconds, 2),
        "embed_s": round(embed_seconds, 2),
        "embed_texts_per_s": round(len(texts) / embed_seconds, 1),
        "mine_s": round(mine_seconds, 2),
        "mine_questions_per_s": round(args.queries / mine_seconds, 1),
        "build_s": round(build_seconds, 2),
        "build_questions_per_s": round(args.queries / build_seconds, 1),
        "embed_share_of_build": round(embed_seconds / build_seconds, 3),
        "full_egomcq_estimate_s": round(full_estimate, 1),
        "target_s": TARGET_SECONDS,
        "meets_target": full_estimate < TARGET_SECONDS,
        "generated_texts_distinct_raw": unique_texts,
        "versions": {
            "torch": torch.__version__,
            "sentence_transformers": __import__("sentence_transformers").__version__,
        },
    }
    print(
        f"EgoMCQ distractor construction, {result['cpu']} ({result['cpu_count']} CPUs, "
        f"{result['torch_threads']} torch threads, "
        f"1-min load average {load_before:.1f} -> {os.getloadavg()[0]:.1f})"
    )
    print(f"{'phase':<10} {'seconds':>9} {'throughput':>26}")
    print(f"{'load':<10} {load_seconds:>9.1f} {'':>26}")
    print(f"{'embed':<10} {embed_seconds:>9.1f} {result['embed_texts_per_s']:>17.1f} texts/s")
    print(f"{'mine':<10} {mine_seconds:>9.1f} {result['mine_questions_per_s']:>13.1f} questions/s")
    print(f"{'build':<10} {build_seconds:>9.1f} {result['build_questions_per_s']:>13.1f} questions/s")
    print(
        f"embedding is {result['embed_share_of_build']:.0%} of the build; full EgoMCQ ({EGOMCQ_QUESTIONS} questions) "
        f"~ {full_estimate:.0f} s (target < {TARGET_SECONDS} s: {'met' if result['meets_target'] else 'NOT met'})"
    )
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Read EgoVLP's ``egoclip.csv`` (tab-separated, ~3.8M rows) and write Hub-ready Parquet shards.

Columns used: ``clip_idx, video_uid, clip_start, clip_end, clip_text`` (also checked: the header has
``narration_time``). Each row becomes a canonical EgoIT row (:data:`~datasets_scripts.schema.EGOIT_FEATURES`)
with ``source="egoclip"``, ``task="captioning"``, the narration without its ``#C``/``#O`` tags as the
answer and one of our ten EgoClip instruction templates. Rows are streamed to Parquet in shards, so the
whole CSV is never held in memory.

Video layouts: ``full_scale`` (default): ``v1/full_scale/<video_uid>.mp4`` with absolute clip times;
``egovlp_chunks``: EgoVLP's 600 s chunks ``<video_uid>/<int(start // 600)>.mp4`` with times relative to
the chunk (clips that cross a chunk boundary are skipped and counted).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_scripts import hub_export
from datasets_scripts.egobench.options import clean_narration
from datasets_scripts.egoit.templates import choose_instruction, templates_sha1
from datasets_scripts.schema import EGOIT_FEATURES, egoit_row
from datasets_scripts.source_io import BadRows, BuildContext, RowError, field, find_file, number, read_csv, text

COLUMNS = ("clip_idx", "video_uid", "narration_time", "clip_start", "clip_end", "clip_text")
CHUNK_SEC = 600  # EgoVLP's utils/video_chunk.py
CONFIG = "egoclip"


def iter_egoclip_rows(path: Path, context: BuildContext, layout: str = "full_scale",
                      max_rows: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield canonical rows from ``egoclip.csv`` (bad rows raise or are counted, per ``context.bad_rows``)."""
    produced = 0
    for line_number, record in tqdm(read_csv(path, COLUMNS, delimiter="\t"), desc="egoclip.csv", unit=" rows", mininterval=5):
        if max_rows is not None and produced >= max_rows:
            return
        with context.bad_rows.guard("egoclip"):
            clip_idx = field(record, "clip_idx", path, line_number)
            video_uid = field(record, "video_uid", path, line_number)
            start = field(record, "clip_start", path, line_number, number)
            end = field(record, "clip_end", path, line_number, number)
            if not 0 <= start < end:
                raise RowError(path, line_number, "clip_end", f"clip [{start}, {end}] is empty or negative")
            answer = field(record, "clip_text", path, line_number, lambda value: text(clean_narration(text(value))))
            if layout == "egovlp_chunks":
                chunk = int(start // CHUNK_SEC)
                if end > (chunk + 1) * CHUNK_SEC:
                    context.bad_rows.counts["egoclip/crosses_chunk"] += 1
                    continue
                video, start, end = f"{video_uid}/{chunk}.mp4", start - chunk * CHUNK_SEC, end - chunk * CHUNK_SEC
            else:
                video = f"v1/full_scale/{video_uid}.mp4"
            row_id = f"egoclip/{clip_idx}"
            instruction_id, instruction = choose_instruction("egoclip", row_id, context.seed)
            produced += 1
            yield egoit_row(id=row_id, source="egoclip", task="captioning", split="train", video=video,
                            video_start_sec=start, video_end_sec=end, instruction_id=instruction_id,
                            instruction=instruction, question="", answer=answer)


def build_egoclip(root: Path, out: str | Path, *, seed: int = 0, layout: str = "full_scale", skip_bad_rows: bool = False,
                  max_rows: int | None = None, shard_rows: int = 500_000, overwrite: bool = False,
                  args: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the ``egoclip`` config (split ``train``) to the Hub-ready folder ``out``; return build_info."""
    path = find_file(Path(root), ["egoclip.csv", "EgoClip/egoclip.csv"], "egoclip")
    context = BuildContext(bad_rows=BadRows(skip=skip_bad_rows), seed=seed)
    with hub_export.staged_folder(out, overwrite=overwrite) as staging:
        shards: list[Path] = []
        buffer: list[dict[str, Any]] = []
        total = 0

        def flush() -> None:
            shard = staging / f"shard-{len(shards):05d}.tmp.parquet"
            hub_export.write_parquet_table(shard, buffer, EGOIT_FEATURES)
            shards.append(shard)
            buffer.clear()

        for row in iter_egoclip_rows(path, context, layout, max_rows):
            buffer.append(row)
            total += 1
            if len(buffer) >= shard_rows:
                flush()
        if buffer or not shards:
            flush()
        # Shard names need the final count: rename once it is known.
        paths = []
        for index, shard in enumerate(shards):
            relative = hub_export.parquet_relpath(CONFIG, "train", index, len(shards))
            (staging / relative).parent.mkdir(parents=True, exist_ok=True)
            os.replace(shard, staging / relative)
            paths.append(relative)
        build_info = {"builder": "egoclip", "counts": {CONFIG: total}, "skips": context.bad_rows.summary(), "seed": seed,
                      "layout": layout, "max_rows": max_rows, "templates_sha1": templates_sha1(), "args": dict(args or {})}
        card = hub_export.make_dataset_card(
            {CONFIG: {"train": paths}}, pretty_name="EgoClip (Exo2Ego initialization captions)", license="other",
            summary="EgoVLP's EgoClip clip-narration pairs as Exo2Ego captioning rows (our instruction templates). "
                    "No video is included; `video` is relative to the user's Ego4D root.",
            sections={"Source and licence": "EgoClip (showlab/EgoVLP) is derived from Ego4D narrations: the Ego4D "
                                            "licence applies. Point to the original `egoclip.csv` rather than re-hosting its text.",
                      "Loading": "```python\nfrom datasets import load_dataset\nds = load_dataset(PATH, \"egoclip\", split=\"train\")\n```"},
            tags=["egocentric", "video"], task_categories=["video-text-to-text"])
        card.save(staging / hub_export.CARD_NAME)
        hub_export.write_build_info(staging, build_info)
    return build_info

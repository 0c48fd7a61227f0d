"""Read EgoVLP's ``egoclip.csv`` (tab-separated, ~3.8M rows) and write Hub-ready Parquet shards.

Columns used: ``clip_idx, video_uid, clip_start, clip_end, clip_text`` (also checked: the header has
``narration_time``). Each row is written twice, as two configs of one folder:

- ``captions`` (the default config): a caption row (:data:`~datasets_scripts.schema.CAPTION_FEATURES`) that the
  initialization stage's ego branch reads directly (``--ego_dataset_path <out>``); its ``prompt`` is empty, so
  training uses its ``clip_prompt``, as for Ego-ExoClip narrations;
- ``egoclip``: a canonical EgoIT row (:data:`~datasets_scripts.schema.EGOIT_FEATURES`) with
  ``source="egoclip"``, ``task="captioning"`` and one of our ten EgoClip instruction templates, for mixing EgoClip
  into instruction data.

The narration without its ``#C``/``#O`` tags is the caption/answer. Rows are streamed to Parquet in shards, so the
whole CSV is never held in memory.

Video layouts: ``full_scale`` (default): ``v1/full_scale/<video_uid>.mp4`` with absolute clip times;
``egovlp_chunks``: EgoVLP's 600 s chunks ``<video_uid>/<int(start // 600)>.mp4`` with times relative to
the chunk (clips that cross a chunk boundary are skipped and counted).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datasets_scripts import hub_export
from datasets_scripts.build_command import BuildContext
from datasets_scripts.egobench.options import clean_narration
from datasets_scripts.egoit.templates import choose_instruction, templates_sha1
from datasets_scripts.schema import CAPTION_FEATURES, EGOIT_FEATURES, caption_row, egoit_row
from datasets_scripts.source_io import BadRows, RowError, field, find_file, number, read_csv, text

COLUMNS = ("clip_idx", "video_uid", "narration_time", "clip_start", "clip_end", "clip_text")
CHUNK_SEC = 600  # EgoVLP's utils/video_chunk.py
CONFIG = "egoclip"  # EgoIT-schema rows
CAPTIONS_CONFIG = "captions"  # initialization caption rows


def iter_egoclip_rows(
    path: Path, context: BuildContext, layout: str = "full_scale", max_rows: int | None = None
) -> Iterator[dict[str, Any]]:
    """Yield canonical rows from ``egoclip.csv`` (bad rows raise or are counted, per ``context.bad_rows``)."""
    produced = 0
    for line_number, record in tqdm(
        read_csv(path, COLUMNS, delimiter="\t"), desc="egoclip.csv", unit=" rows", mininterval=5
    ):
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
            yield egoit_row(
                id=row_id,
                source="egoclip",
                task="captioning",
                split="train",
                video=video,
                video_start_sec=start,
                video_end_sec=end,
                instruction_id=instruction_id,
                instruction=instruction,
                question="",
                answer=answer,
            )


def build_egoclip(
    root: Path,
    out: str | Path,
    *,
    seed: int = 0,
    layout: str = "full_scale",
    skip_bad_rows: bool = False,
    max_rows: int | None = None,
    shard_rows: int = 500_000,
    overwrite: bool = False,
    args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the ``captions`` and ``egoclip`` configs (split ``train``) to the Hub-ready folder ``out``; return
    build_info."""
    path = find_file(Path(root), ["egoclip.csv", "EgoClip/egoclip.csv"], "egoclip")
    context = BuildContext(bad_rows=BadRows(skip=skip_bad_rows), seed=seed)
    with hub_export.staged_folder(out, overwrite=overwrite, inputs=[root]) as staging:
        captions = hub_export.ShardedParquetWriter(staging, CAPTIONS_CONFIG, "train", CAPTION_FEATURES, shard_rows)
        egoit = hub_export.ShardedParquetWriter(staging, CONFIG, "train", EGOIT_FEATURES, shard_rows)
        for row in iter_egoclip_rows(path, context, layout, max_rows):
            egoit.add(row)
            captions.add(
                caption_row(
                    id=row["id"],
                    source="egoclip",
                    media_type="video",
                    media=row["video"],
                    start_sec=row["video_start_sec"],
                    end_sec=row["video_end_sec"],
                    caption=row["answer"],
                )
            )
        data_files = {CAPTIONS_CONFIG: {"train": captions.finish()}, CONFIG: {"train": egoit.finish()}}
        build_info = {
            "builder": "egoclip",
            "counts": {CONFIG: egoit.count, CAPTIONS_CONFIG: captions.count},
            "skips": context.bad_rows.summary(),
            "seed": seed,
            "layout": layout,
            "max_rows": max_rows,
            "templates_sha1": templates_sha1(),
            "args": dict(args or {}),
        }
        card = hub_export.make_dataset_card(
            data_files,
            pretty_name="EgoClip (Exo2Ego initialization captions)",
            license="other",
            summary="EgoVLP's EgoClip clip-narration pairs as Exo2Ego initialization captions (config `captions`) and "
            "EgoIT captioning rows (config `egoclip`, our instruction templates). No video is included; "
            "paths are relative to the user's Ego4D root.",
            sections={
                "Source and licence": "EgoClip (showlab/EgoVLP) is derived from Ego4D narrations: the Ego4D "
                "licence applies. Point to the original `egoclip.csv` rather than re-hosting its text.",
                "Loading": "```python\nfrom datasets import load_dataset\n"
                'captions = load_dataset(PATH, "captions", split="train")  # init\'s ego branch\n'
                'egoit = load_dataset(PATH, "egoclip", split="train")  # EgoIT schema\n```\n'
                "Training: `python train/init.py --config train/configs/init.yaml "
                "--ego_dataset_path PATH --ego_video_root EGO4D_ROOT`.",
            },
            tags=["egocentric", "video"],
            task_categories=["video-text-to-text"],
        )
        card.save(staging / hub_export.CARD_NAME)
        hub_export.write_build_info(staging, build_info)
    return build_info

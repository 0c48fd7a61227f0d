"""Build the EgoIT Hub folder: run the adapters of the sources the user has, write Parquet + card."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from datasets_scripts.build_command import BuildContext, write_hub_folder
from datasets_scripts.egoit.llava import export_llava_json
from datasets_scripts.egoit.sources import ADAPTERS, LICENCE_NOTES, EgoITOptions
from datasets_scripts.egoit.templates import TEMPLATES_PATH, templates_sha1
from datasets_scripts.schema import EGOIT_FEATURES
from datasets_scripts.source_io import BadRows, DigestSet, check_videos, id_digests
from exo2ego_base.provenance import check_output_apart

logger = logging.getLogger(__name__)

SOURCES = tuple(ADAPTERS)
BATCH_ROWS = 1_000  # rows whose ids are checked at a time


def iter_source_rows(
    source: str,
    root: Path,
    context: BuildContext,
    options: EgoITOptions,
    counts: dict[str, int],
    videos: set[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """The rows of one source, duplicate ids dropped and counted (``<source>/duplicate_id``), as the adapter yields
    them. Ids are checked :data:`BATCH_ROWS` at a time against a :class:`~datasets_scripts.source_io.DigestSet`
    (8 bytes an id). When exhausted, sets ``counts[source]`` and notes the row count; ``videos`` (when given)
    collects the rows' video paths."""
    rows = iter(ADAPTERS[source](Path(root), context, options))
    seen = DigestSet()
    count = 0
    for batch in iter(lambda: list(itertools.islice(rows, BATCH_ROWS)), []):
        for row, first in zip(batch, seen.first_seen(id_digests([row["id"] for row in batch]))):
            if not first:
                context.bad_rows.counts[f"{source}/duplicate_id"] += 1
                continue
            count += 1
            if videos is not None and row.get("video"):
                videos.add(row["video"])
            yield row
    counts[source] = count
    context.note(f"{source}: {count} rows")


def build_egoit(
    roots: Mapping[str, Path],
    out: str | Path,
    *,
    options: EgoITOptions | None = None,
    seed: int = 0,
    skip_bad_rows: bool = False,
    check_video_files: bool = False,
    overwrite: bool = False,
    llava_json: str | Path | None = None,
    skipped_messages: Sequence[str] = (),
    args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build EgoIT from the given source roots into the Hub-ready folder ``out``; return build_info.

    Configs: one per source (split ``train``; the source's own split is the ``split`` column) plus
    ``all`` (default) reading every source's file. Rows go from the adapters to Parquet as they are read (memory
    does not grow with the rows; only ids, as 8-byte digests, and with ``check_video_files`` the video paths are
    kept); ``llava_json`` is written afterwards from the Parquet files.
    """
    options = options or EgoITOptions()
    context = BuildContext(bad_rows=BadRows(skip=skip_bad_rows), seed=seed, notes=list(skipped_messages))
    if not roots:
        raise ValueError(
            "no EgoIT source to build: pass --root NAME=DIR (or --data-root DIR) for at least one of "
            + ", ".join(SOURCES)
        )
    if llava_json:
        check_output_apart(llava_json, roots.values())
    sources = [source for source in SOURCES if source in roots]
    counts: dict[str, int] = {}
    videos: dict[str, set[str]] = {source: set() for source in sources}
    tables = {
        source: {
            "train": iter_source_rows(
                source, roots[source], context, options, counts, videos[source] if check_video_files else None
            )
        }
        for source in sources
    }
    video_report: dict[str, Any] = {}

    def extra_files() -> dict[str, str]:  # after the tables: the video paths are known
        files = {}
        if check_video_files:
            for source in sources:
                report = check_videos([{"video": video} for video in videos[source]], Path(roots[source]))
                video_report[source] = {key: value for key, value in report.items() if key != "missing_paths"}
                context.note(
                    f"{source}: {report['missing']} of {report['checked_videos']} videos missing under {roots[source]}"
                )
                if report["missing_paths"]:
                    files[f"missing_videos/{source}.txt"] = "\n".join(report["missing_paths"]) + "\n"
        return files

    build_info = {}

    def make_build_info() -> dict[str, Any]:
        build_info.update(
            {
                "builder": "egoit",
                "counts": dict(counts),
                "skips": context.bad_rows.summary(),
                "notes": context.notes,
                "seed": seed,
                "options": dataclasses.asdict(options),
                "templates": {"file": TEMPLATES_PATH.name, "sha1": templates_sha1()},
                "videos": video_report,
                "args": dict(args or {}),
            }
        )
        return build_info

    data_files = write_hub_folder(
        out,
        tables,
        {source: EGOIT_FEATURES for source in sources},
        card=lambda: _card(counts),
        build_info=make_build_info,
        overwrite=overwrite,
        extra_configs={"all": sources},
        extra_files=extra_files,
        inputs=list(roots.values()),
    )
    if llava_json:
        written = (Path(out) / path for source in sources for path in data_files.get(source, {}).get("train", []))
        count = export_llava_json(iter_parquet_rows(written), llava_json)
        logger.info("wrote %d conversations to %s", count, llava_json)
    return build_info


def iter_parquet_rows(paths: Iterable[Path], batch_rows: int = BATCH_ROWS) -> Iterator[dict[str, Any]]:
    """The rows of Parquet files, in order, a batch at a time."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            yield from batch.to_pylist()


def _card(counts: Mapping[str, int]) -> dict[str, Any]:
    sources = "\n".join(f"- **{source}** ({count} rows): {LICENCE_NOTES[source]}" for source, count in counts.items())
    return {
        "pretty_name": "EgoIT (Exo2Ego instruction tuning)",
        "license": "other",
        "summary": "Stage-3 instruction data of Exo2Ego: canonical rows `{id, source, task, split, video, "
        "video_start_sec, video_end_sec, instruction_id, instruction, question, answer, options}` derived "
        "from five released datasets. No video is included: `video` is relative to the root of the "
        "user's own copy of each source.",
        "sections": {
            "Sources and licences": sources,
            "Loading": "```python\nfrom datasets import load_dataset\n"
            f'ds = load_dataset(PATH_OR_REPO, "all", split="train")      # or one source: {", ".join(counts)}\n```',
            "Rebuilding from your downloads": "```bash\nexo2ego data egoit --root egtea=DIR --root ssv2=DIR "
            "--root egotimeqa=DIR \\\n"
            "    --root openeqa=DIR --root egoexolearn=DIR --out OUT [--check-videos] [--llava-json FILE]\n```",
            "Instructions": "Ten instruction templates per source, written for Exo2Ego "
            "(`datasets_scripts/egoit/templates.json`); "
            "`instruction_id` is the template index, chosen by a seeded hash of the row id.",
        },
        "task_categories": ["video-text-to-text"],
        "tags": ["egocentric", "video", "instruction-tuning"],
    }

"""Build the EgoIT Hub folder: run the adapters of the sources the user has, write Parquet + card."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets_scripts.egoit.llava import export_llava_json
from datasets_scripts.egoit.sources import ADAPTERS, LICENCE_NOTES, EgoITOptions
from datasets_scripts.egoit.templates import TEMPLATES_PATH, templates_sha1
from datasets_scripts.schema import EGOIT_FEATURES
from datasets_scripts.source_io import BadRows, BuildContext, check_videos, write_hub_folder
from exo2ego_base.provenance import check_output_apart

logger = logging.getLogger(__name__)

SOURCES = tuple(ADAPTERS)


def collect_egoit(roots: Mapping[str, Path], context: BuildContext, options: EgoITOptions) -> dict[str, list[dict]]:
    """``{source: rows}`` for each source in ``roots`` (in :data:`SOURCES` order); duplicate ids are dropped and
    counted."""
    tables = {}
    for source in SOURCES:
        if source not in roots:
            continue
        rows = ADAPTERS[source](Path(roots[source]), context, options)
        seen: set[str] = set()
        unique = []
        for row in rows:
            if row["id"] in seen:
                context.bad_rows.counts[f"{source}/duplicate_id"] += 1
                continue
            seen.add(row["id"])
            unique.append(row)
        context.note(f"{source}: {len(unique)} rows")
        tables[source] = unique
    return tables


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
    ``all`` (default) reading every source's file.
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
    tables = collect_egoit(roots, context, options)
    extra_files = {}
    video_report = {}
    if check_video_files:
        for source, rows in tables.items():
            report = check_videos(rows, Path(roots[source]))
            video_report[source] = {key: value for key, value in report.items() if key != "missing_paths"}
            context.note(
                f"{source}: {report['missing']} of {report['checked_videos']} videos missing under {roots[source]}"
            )
            if report["missing_paths"]:
                extra_files[f"missing_videos/{source}.txt"] = "\n".join(report["missing_paths"]) + "\n"
    build_info = {
        "builder": "egoit",
        "counts": {source: len(rows) for source, rows in tables.items()},
        "skips": context.bad_rows.summary(),
        "notes": context.notes,
        "seed": seed,
        "options": dataclasses.asdict(options),
        "templates": {"file": TEMPLATES_PATH.name, "sha1": templates_sha1()},
        "videos": video_report,
        "args": dict(args or {}),
    }
    write_hub_folder(
        out,
        {source: {"train": rows} for source, rows in tables.items()},
        {source: EGOIT_FEATURES for source in tables},
        card=_card(tables),
        build_info=build_info,
        overwrite=overwrite,
        extra_configs={"all": list(tables)},
        extra_files=extra_files,
        inputs=list(roots.values()),
    )
    if llava_json:
        count = export_llava_json((row for rows in tables.values() for row in rows), llava_json)
        logger.info("wrote %d conversations to %s", count, llava_json)
    return build_info


def _card(tables: Mapping[str, list[dict]]) -> dict[str, Any]:
    sources = "\n".join(
        f"- **{source}** ({len(rows)} rows): {LICENCE_NOTES[source]}" for source, rows in tables.items()
    )
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
            f'ds = load_dataset(PATH_OR_REPO, "all", split="train")      # or one source: {", ".join(tables)}\n```',
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

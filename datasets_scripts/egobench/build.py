"""Build the EgoBench Hub folder from the task sources the user has (and the leakage report)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets_scripts.egobench.epic_mir import read_epic_mir
from datasets_scripts.egobench.mined_tasks import read_charades_ego, read_egomcq, read_egotaskqa
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables
from datasets_scripts.egobench.qa_tasks import read_egoplan, read_egoschema, read_qaego4d, read_vlnqa
from datasets_scripts.leakage import bench_ids, folder_train_ids, leakage_report, load_clip_to_video, report_markdown
from datasets_scripts.schema import EGOBENCH_TASK_CONFIGS, check_egobench_config
from datasets_scripts.source_io import BadRows, BuildContext, SourceFileError, check_videos, write_hub_folder

# One adapter per builder task of the shared registry (datasets_scripts.schema.EGOBENCH_TASK_CONFIGS).
TASKS: dict[str, Callable[[Path, BuildContext, EgoBenchOptions], TaskTables]] = {
    "egoschema": read_egoschema,
    "qaego4d": read_qaego4d,
    "egotaskqa": read_egotaskqa,
    "charades_ego": read_charades_ego,
    "epic_mir": read_epic_mir,
    "egoplan": read_egoplan,
    "vlnqa": read_vlnqa,
    "egomcq": read_egomcq,
}

LICENCE_NOTES = {
    "egoschema": "EgoSchema (egoschema/EgoSchema; clips of Ego4D videos under the Ego4D licence).",
    "qaego4d": "QAEgo4D as released by GroundVQA (Ego4D licence for the videos).",
    "egotaskqa": "EgoTaskQA (LEMMA videos; terms of the EgoTaskQA/LEMMA release).",
    "charades_ego": "Charades-Ego (AI2; non-commercial terms of the Charades release).",
    "epic_mir": (
        "EPIC-KITCHENS-100 retrieval annotations (CC BY-NC 4.0); the relevance matrix is recomputed from the CSVs."
    ),
    "egoplan": "EgoPlan-Bench validation (derived from EPIC-KITCHENS-100 and Ego4D; their licences apply).",
    "vlnqa": "VLN-QA as shipped in MVBench (OpenGVLab; VLN-CE/Matterport3D terms for the videos).",
    "egomcq": "EgoMCQ (EgoVLP; Ego4D licence).",
}

CONFIG_NOTES = {
    "charades_ego_labels": (
        "per-video multi-hot labels over the 157 classes (for mAP; score all classes, not the 5 options)"
    ),
    "charades_ego_classes": "class index, `cNNN` id and name",
    "epic_mir": "video rows; `meta.video_index` is the relevance-matrix row",
    "epic_mir_sentences": "sentence rows; `sentence_index` is the relevance-matrix column",
    "epic_mir_relevance": "sparse relevance matrix (entries > 0): `(video_index, sentence_index, relevance)`",
}


def collect_egobench(
    roots: Mapping[str, Path], context: BuildContext, options: EgoBenchOptions, tasks: Sequence[str] | None = None
) -> tuple[dict[str, tuple[Any, Any]], dict[str, str]]:
    """Run the adapters; return ``({config: (features, rows)}, {config: task})``."""
    tables: dict[str, tuple[Any, Any]] = {}
    config_task: dict[str, str] = {}
    for task, adapter in TASKS.items():
        if tasks is not None and task not in tasks:
            continue
        if task not in roots:
            continue
        skipped_before = context.bad_rows.total(task)
        for config, table in adapter(Path(roots[task]), context, options).items():
            check_egobench_config(task, config)
            if not len(table[1]) and config not in EGOBENCH_TASK_CONFIGS[task].side_configs.values():
                skipped = context.bad_rows.total(task) - skipped_before
                raise SourceFileError(
                    f"{task}: config {config} would have no rows (source {roots[task]}"
                    + (f"; {skipped} bad rows skipped" if skipped else "; the source lists nothing")
                    + "); check the download, or leave the task out with --tasks"
                )
            tables[config] = table
            config_task[config] = task
            context.note(f"{config}: {len(table[1])} rows")
    return tables, config_task


def build_egobench(
    roots: Mapping[str, Path],
    out: str | Path,
    *,
    options: EgoBenchOptions | None = None,
    tasks: Sequence[str] | None = None,
    skip_bad_rows: bool = False,
    check_video_files: bool = False,
    overwrite: bool = False,
    leakage_against: Sequence[str | Path] = (),
    ego4d_metadata: str | Path | None = None,
    skipped_messages: Sequence[str] = (),
    args: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build EgoBench into the Hub-ready folder ``out``; return build_info.

    Every table has split ``test``. ``leakage_against``: EgoIT / EgoClip / Ego-ExoClip export folders
    whose video ids are compared with the benchmark's (``leakage_report.json`` + a card section).
    """
    options = options or EgoBenchOptions()
    unknown = sorted(set(tasks or ()) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown EgoBench task(s) {unknown}; known: {', '.join(TASKS)}")
    wanted = [task for task in TASKS if (tasks is None or task in tasks)]
    if not any(task in roots for task in wanted):
        raise ValueError(
            "no EgoBench source to build: pass --root NAME=DIR (or --data-root DIR) for at least one of "
            + ", ".join(wanted)
        )
    context = BuildContext(
        bad_rows=BadRows(skip=skip_bad_rows), seed=options.option_seed, notes=list(skipped_messages)
    )
    tables, config_task = collect_egobench(roots, context, options, tasks)
    extra_files: dict[str, str] = {}
    video_report = {}
    if check_video_files:
        for config, (_, rows) in tables.items():
            if "video" not in _columns(rows):
                continue
            report = check_videos(rows, Path(roots[config_task[config]]))
            video_report[config] = {key: value for key, value in report.items() if key != "missing_paths"}
            context.note(f"{config}: {report['missing']} of {report['checked_videos']} videos missing")
            if report["missing_paths"]:
                extra_files[f"missing_videos/{config}.txt"] = "\n".join(report["missing_paths"]) + "\n"
    leakage = None
    if leakage_against:
        train = {}
        for folder in leakage_against:
            train.update(folder_train_ids(folder))
        bench = {config: bench_ids(rows) for config, (_, rows) in tables.items() if "meta" in _columns(rows)}
        leakage = leakage_report(train, bench, load_clip_to_video(ego4d_metadata) if ego4d_metadata else None)
        extra_files["leakage_report.json"] = json.dumps(leakage, indent=1, sort_keys=True) + "\n"
        context.note(f"leakage: {len(leakage['pairs'])} overlapping (training table, benchmark table) pairs")
    build_info = {
        "builder": "egobench",
        "counts": {config: len(rows) for config, (_, rows) in tables.items()},
        "skips": context.bad_rows.summary(),
        "notes": context.notes,
        "seed": options.option_seed,
        "options": options.recorded(),
        "videos": video_report,
        "leakage_pairs": None
        if leakage is None
        else [{key: pair[key] for key in ("train", "bench", "namespace", "overlap")} for pair in leakage["pairs"]],
        "args": dict(args or {}),
    }
    write_hub_folder(
        out,
        {config: {"test": rows} for config, (_, rows) in tables.items()},
        {config: features for config, (features, _) in tables.items()},
        card=_card(tables, config_task, leakage),
        build_info=build_info,
        overwrite=overwrite,
        extra_files=extra_files,
        inputs=[*roots.values(), *leakage_against, ego4d_metadata, options.egomcq_pool, options.encoder_model],
    )
    return build_info


def _columns(rows) -> list[str]:
    """Column names of a table given as a list of dicts or a ``datasets.Dataset``."""
    if hasattr(rows, "column_names"):
        return list(rows.column_names)
    return list(rows[0]) if rows else []


def _card(
    tables: Mapping[str, tuple[Any, Any]], config_task: Mapping[str, str], leakage: Mapping[str, Any] | None
) -> dict[str, Any]:
    configs = "\n".join(
        f"- `{config}` ({len(rows)} rows){': ' + CONFIG_NOTES[config] if config in CONFIG_NOTES else ''}"
        for config, (_, rows) in tables.items()
    )
    licences = "\n".join(f"- **{task}**: {LICENCE_NOTES[task]}" for task in dict.fromkeys(config_task.values()))
    sections = {
        "Configs": configs,
        "Sources and licences": licences + "\n\nNo video is included: `video` is relative to the root of the user's "
        "own copy of each source. Check each source's terms before publishing its text.",
        "Rows": "Canonical row `{sample_id, task, subset, video, start_sec, end_sec, question, options, answer_idx, "
        "answer_text, meta}`. Options are stored in a frozen order (seeded hash of `sample_id`); "
        "`meta.source_order[i]` is stored option i's index in the source. `meta` is a JSON string; "
        "`meta.distractors` records how mined options were chosen (encoder, rule, similarities, exclusions).",
        "Loading": "```python\nfrom datasets import load_dataset\n"
        'ds = load_dataset(PATH_OR_REPO, "egoschema_subset", split="test")\n```',
        "Rebuilding from your downloads": "```bash\nexo2ego data egobench --root egoschema=DIR --root qaego4d=DIR ... "
        "--out OUT "
        "[--tasks ...] [--check-videos] [--leakage-against EGOIT_DIR]\n```",
    }
    if leakage is not None:
        sections["Leakage"] = report_markdown(leakage)
    return {
        "pretty_name": "EgoBench (Exo2Ego evaluation)",
        "license": "other",
        "sections": sections,
        "summary": "The eight egocentric benchmarks Exo2Ego is evaluated on, as canonical multiple-choice / "
        "open-QA / retrieval tables with frozen option orders.",
        "tags": ["egocentric", "video", "benchmark"],
        "task_categories": ["video-text-to-text"],
    }

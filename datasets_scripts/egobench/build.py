"""Build the EgoBench Hub folder from the task sources the user has (and the leakage report)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets_scripts.build_command import BuildContext, write_hub_folder
from datasets_scripts.egobench.options import EgoBenchOptions
from datasets_scripts.egobench.tasks import EGOBENCH_TASKS, builder_tasks, check_egobench_config
from datasets_scripts.leakage import bench_ids, folder_train_ids, leakage_report, load_clip_to_video, report_markdown
from datasets_scripts.source_io import BadRows, SourceFileError, check_videos

# The tasks, their readers, licence notes and config notes are declared in datasets_scripts/egobench/tasks.py.


def collect_egobench(
    roots: Mapping[str, Path], context: BuildContext, options: EgoBenchOptions, tasks: Sequence[str] | None = None
) -> tuple[dict[str, tuple[Any, Any]], dict[str, str]]:
    """Run the readers of the declared tasks; return ``({config: (features, rows)}, {config: task})``."""
    tables: dict[str, tuple[Any, Any]] = {}
    config_task: dict[str, str] = {}
    for task in builder_tasks():
        if tasks is not None and task not in tasks:
            continue
        if task not in roots:
            continue
        declaration = EGOBENCH_TASKS[task]
        skipped_before = context.bad_rows.total(task)
        for config, table in declaration.reader(Path(roots[task]), context, options).items():
            check_egobench_config(task, config)
            if not len(table[1]) and config not in declaration.side_configs.values():
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
    known = builder_tasks()
    unknown = sorted(set(tasks or ()) - set(known))
    if unknown:
        raise ValueError(f"unknown EgoBench task(s) {unknown}; known: {', '.join(known)}")
    wanted = [task for task in known if (tasks is None or task in tasks)]
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
    notes = {config: EGOBENCH_TASKS[task].config_notes.get(config) for config, task in config_task.items()}
    configs = "\n".join(
        f"- `{config}` ({len(rows)} rows){': ' + notes[config] if notes.get(config) else ''}"
        for config, (_, rows) in tables.items()
    )
    licences = "\n".join(
        f"- **{task}**: {EGOBENCH_TASKS[task].licence}" for task in dict.fromkeys(config_task.values())
    )
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

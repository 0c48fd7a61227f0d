"""Resumable, shardable EgoBench runs: ``evaluate(model, processor, dataset_dir, out_dir, config)``.

1. Every requested task is loaded and checked (:mod:`eval.data`) before anything is scored.
2. Items (questions; Charades-Ego videos for class scores; EK-100 MIR videos) are split over the
   processes of ``accelerate launch`` by a hash of their id. Each process appends one JSONL record per
   item to its own shard file and flushes it; items already recorded in any shard are skipped, so a
   killed run continues where it stopped (also with a different number of processes). A kept record whose
   prediction is not one of its options (an edited file) is refused, naming its file and line. The main process
   holds the folder's lock (``exo2ego_base.provenance.folder_lock``) for the whole run, so a second run into the
   same folder stops at once, naming the holder.
3. The main process merges the shards, computes the metrics with bootstrap intervals, and writes
   ``results.json`` atomically, then ``report.md`` with plots and the prediction exports.

The run folder is an ``exo2ego_base.run_folder.RunFolder``: it records what shapes the records
(``run_config.json``), a resume must match it, and a folder another command wrote is refused, named from what the
folder records. The settings are :class:`eval.config.EvalConfig`; how an item is scored is :mod:`eval.item_scoring`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from datasets_scripts.hub_export import BUILD_INFO_NAME, DATASET_FOLDER_KIND
from exo2ego_base.provenance import (
    LOCK_NAME,
    FolderLockedError,
    check_output_location,
    folder_lock,
)
from exo2ego_base.run_folder import RunFolder
from modeling_exo2ego import DecodedClipCache

from . import scorers
from .config import RESULTS_NAME, EvalConfig
from .data import EvalDataError, TaskData, available_configs, load_task, video_root_map
from .export import export_predictions
from .item_scoring import ItemScorer, check_scorable, shard_of, work_items
from .judge import JudgeConfig, check_loopback
from .metrics import load_sentence_encoder
from .prompts import PromptTemplate, get_prompt
from .provenance import dataset_revision, environment_versions, git_revision, model_revision
from .records import JsonlAppender, located_records, shard_path, task_records
from .report import load_comparison, write_report
from .task_metrics import compute_task_metrics
from .tasks import describe_selection, get_task, resolve_task_names

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1
# Settings that change what a record contains: a resumed run must use the same values (with the same data and
# weights, see _resume_key).
RECORD_SHAPING_FIELDS = (
    "scorer",
    "prompt",
    "num_frames",
    "option_score",
    "max_new_tokens",
    "open_max_new_tokens",
    "judge_model",
    "split",
    "video_roots",
)
# An eval run folder (`exo2ego_base.run_folder`): what the folder records, what other commands call it and the record
# of the settings its predictions came from (the file it writes last is `eval.config.RESULTS_NAME`).
EVAL_FOLDER_KIND = "an eval run folder"
RUN_CONFIG_NAME = "run_config.json"
# What an evaluation writes into its folder (all of it is removed by overwrite=True / --overwrite).
RUN_FOLDER_ENTRIES = (RUN_CONFIG_NAME, "predictions", RESULTS_NAME, "report.md", "plots", "exports")
# Folders that record no run-folder identity, known by a file they hold: eval never writes into them. A dataset
# folder downloaded from the Hub is one (pushes leave the identity file out).
OTHER_TOOLS_FOLDERS = {
    "config.json": "a model folder",
    "trainer_state.json": "a training folder",
    BUILD_INFO_NAME: DATASET_FOLDER_KIND,
}


class RunConfigError(ValueError):
    """The output folder cannot hold this run: another command's folder, or a run of other data, weights or
    record-shaping settings."""


def eval_run_folder(out_dir: str | os.PathLike) -> RunFolder:
    """``out_dir`` as an eval run folder: its marker ``results.json``, its record ``run_config.json``."""
    label = f"--out {Path(out_dir)}"
    return RunFolder(
        out_dir, EVAL_FOLDER_KIND, RESULTS_NAME, record=RUN_CONFIG_NAME, label=label, error=RunConfigError
    )


def _resume_key(
    config: EvalConfig, template: PromptTemplate, model_info: dict, task_data: dict[str, TaskData]
) -> dict[str, Any]:
    """What must be unchanged for a run folder's records to be reused: the record-shaping settings, the
    weights and processor, and each task's data (fingerprint of its checked rows and side tables)."""
    return {
        "settings": {
            **{name: getattr(config, name) for name in RECORD_SHAPING_FIELDS},
            "prompt_sha256": template.sha256,
        },
        "model": {key: model_info.get(key) for key in ("weights_sha256", "processor_sha256")},
        "data": {name: data.fingerprint for name, data in task_data.items()},
    }


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an ``out_dir`` that is a file, lies under a file or cannot be created (``/proc``), another command's
    folder (dataset, training stage: what the folder records it is; a model folder), or a non-empty folder that is not
    an eval run unless ``overwrite``. Returns the path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunConfigError(f"--out {out} is a file, not a run folder; pass a folder path")
    if not out.is_dir():
        check_output_location(out, RunConfigError, "--out")  # under a file, or where nothing can be written
        return out
    folder = eval_run_folder(out)
    folder.refuse_foreign(OTHER_TOOLS_FOLDERS, advice="eval never writes into it: pass another --out")
    if folder.is_mine():
        return out
    others = sorted(path.name for path in out.iterdir() if path.name not in (*RUN_FOLDER_ENTRIES, LOCK_NAME))
    if others and not overwrite:
        raise RunConfigError(
            f"--out {out} is not empty ({', '.join(others[:5])}) and holds no eval run; pass another "
            "--out, or --overwrite to write the run there"
        )
    return out


def _clear_run_folder(out_dir: Path) -> None:
    """Remove what an earlier run wrote (``RUN_FOLDER_ENTRIES``), nothing else."""
    eval_run_folder(out_dir).clear(RUN_FOLDER_ENTRIES)


def _has_records(out_dir: Path) -> bool:
    folder = out_dir / "predictions"
    return folder.is_dir() and any(path.stat().st_size for path in folder.rglob("shard-*.jsonl"))


def _check_run_folder(out_dir: Path, key: dict[str, Any], write: bool) -> None:
    """Refuse to resume a run whose records came from other settings, weights or data; ``write`` records the
    key when new (or extended by new tasks, or when the folder holds no record yet).

    Every process checks (so none waits for a main process that failed); only the main one writes.
    """
    folder = eval_run_folder(out_dir)
    previous = folder.read_record() if _has_records(out_dir) else None
    recorded = key
    if previous is not None:
        folder.check_resume(
            key,
            recorded=previous,
            # A task first evaluated now has no records to mix in: only tasks recorded before must match.
            optional_prefixes=("data.",),
            missing=None,
            reason=f"{out_dir} holds predictions made from other inputs, which a resume would mix in",
            advice="start fresh with --overwrite (evaluate(..., overwrite=True)), which deletes that run's "
            "predictions and results, or pass another --out",
        )
        recorded = {**previous, "data": {**previous.get("data", {}), **key["data"]}}
        if recorded == previous:
            return
    if write:
        folder.record(recorded)


def check_reused_records(out_dir: Path, data: TaskData) -> None:
    """Refuse a multiple-choice record a resumed run would reuse whose ``prediction`` is not one of its row's options
    (nor null, an unparsable answer): an edited or foreign record, naming its file and line."""
    options = {
        row["sample_id"]: len(row["options"]) for row in data.rows if row["options"] and not data.spec.retrieval
    }
    for path, line, record in located_records(out_dir, data.spec.name):
        count = options.get(record["id"])
        problem = None if count is None else _prediction_problem(record, count)
        if problem:
            raise RunConfigError(
                f"{path} line {line}: record {record['id']!r} {problem}; delete that line to score the item again, "
                "or start fresh with --overwrite"
            )


def _prediction_problem(record: dict[str, Any], count: int) -> str | None:
    """What is wrong with a multiple-choice record's ``prediction`` for a row of ``count`` options, or None."""
    if "prediction" not in record:
        return "has no prediction"
    prediction = record["prediction"]
    if prediction is None or (type(prediction) is int and 0 <= prediction < count):
        return None
    return (
        f"has prediction {prediction!r}, which is not one of its {count} options (an index 0-{count - 1}, or null "
        "for an unparsable answer)"
    )


@contextlib.contextmanager
def run_folder_lock(out: Path, state):
    """Hold ``out``'s lock for a run of ``state.num_processes`` processes: the main process takes it
    (``exo2ego_base.provenance.folder_lock``) and every process learns whether it did, so that when another run
    holds the folder all of them raise :class:`FolderLockedError` instead of waiting for a main process that stopped.
    """
    if state.num_processes == 1:
        with folder_lock(out):
            yield
        return
    with contextlib.ExitStack() as stack:
        refusal = [None]
        if state.is_main_process:
            try:
                stack.enter_context(folder_lock(out))
            except FolderLockedError as error:
                refusal = [str(error)]
        broadcast_object_list(refusal, from_process=0)
        if refusal[0] is not None:
            raise FolderLockedError(refusal[0])
        yield


def process_state():
    """accelerate's ``PartialState`` for this process.

    Under ``accelerate launch`` / ``torchrun`` on GPUs it is the usual NCCL group; a multi-process launch
    on a machine without CUDA runs on CPU with gloo (accelerate only does that when asked for CPU).
    """
    return PartialState(cpu="LOCAL_RANK" in os.environ and not torch.cuda.is_available())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def task_selection_message(names: list[str], configs: list[str]) -> str:
    """One line saying which tasks a folder has (and from which configs), which it has not, and which of its
    configs belong to no task."""
    selection = describe_selection(names, configs)
    found = ", ".join(f"{name} ({'+'.join(used)})" for name, used in selection["found"].items())
    message = f"tasks found: {found}"
    if selection["not_requested"]:
        message += f"; in the folder but not requested: {', '.join(selection['not_requested'])}"
    if selection["not_found"]:
        missing = selection["not_found"].items()
        message += "; not in the folder: " + ", ".join(f"{name} ({looked})" for name, looked in missing)
    if selection["unrecognized_configs"]:
        message += f"; configs of no task (ignored): {', '.join(selection['unrecognized_configs'])}"
    return message


def prepare_tasks(dataset_dir: str, config: EvalConfig) -> dict[str, TaskData]:
    """Load and check every requested task (raises before any model work; see :mod:`eval.data`)."""
    configs = available_configs(dataset_dir)
    try:
        names = resolve_task_names(config.tasks, configs)
    except ValueError as error:
        raise EvalDataError(str(error)) from None
    logger.info("%s: %s", dataset_dir, task_selection_message(names, configs))
    return {
        name: load_task(
            get_task(name),
            dataset_dir,
            split=config.split,
            limit=config.limit,
            video_roots=video_root_map(config.video_roots),
            check_videos=config.check_videos,
            configs=configs,
        )
        for name in names
    }


def evaluate(
    model,
    processor,
    dataset_dir: str,
    out_dir: str,
    config: EvalConfig | None = None,
    *,
    shard: tuple[int, int] | None = None,
    show_progress: bool = True,
    task_data: dict[str, TaskData] | None = None,
    overwrite: bool = False,
) -> dict[str, Any] | None:
    """Evaluate an already-loaded ``model`` + ``processor`` on an EgoBench folder; resumable.

    Args:
        model, processor: e.g. ``Exo2EgoForConditionalGeneration`` and ``Exo2EgoProcessor`` (model in
            eval mode, on its device).
        dataset_dir: EgoBench folder (or Hub dataset id) with one Parquet config per task.
        out_dir: run folder; an existing run with the same settings is resumed. The main process locks it for the
            run; another process's run in it raises ``FolderLockedError``.
        config: :class:`EvalConfig`.
        shard: ``(index, count)`` of this process; default from ``accelerate.PartialState``.
        show_progress: tqdm bars per task.
        task_data: the result of :func:`prepare_tasks` for the same ``dataset_dir`` and ``config``, when
            the caller checked the data already.
        overwrite: delete an earlier run in ``out_dir`` (its predictions and results) instead of resuming it.
            Without it, a folder whose records came from other data, weights or settings raises
            :class:`RunConfigError` saying what differs.

    Returns the ``results.json`` content on the main process, ``None`` on the others.
    """
    config = config or EvalConfig()
    config.validate()
    template = get_prompt(config.prompt)
    state = process_state()
    rank, world = shard or (state.process_index, state.num_processes)
    out = check_output_folder(out_dir, overwrite)
    # One run at a time writes into a folder; an explicit `shard` has no process group to tell the others.
    lock = (
        run_folder_lock(out, state) if shard is None else folder_lock(out) if rank == 0 else contextlib.nullcontext()
    )
    with lock:
        created_at, started = _now(), time.perf_counter()

        task_data = task_data if task_data is not None else prepare_tasks(dataset_dir, config)
        adapter = scorers.ModelAdapter(
            model, processor, config.num_frames, DecodedClipCache.from_mib(config.decoded_cache_mb)
        )
        check_scorable(adapter, template, config, task_data)
        model_info = model_revision(model, processor)
        judge = JudgeConfig(config.judge_url, config.judge_model) if config.judge_url else None
        if judge is not None:
            check_loopback(judge.url)
        if overwrite and rank == 0:
            _clear_run_folder(out)
        state.wait_for_everyone()
        _check_run_folder(out, _resume_key(config, template, model_info, task_data), write=rank == 0)
        for data in task_data.values():
            check_reused_records(out, data)
        state.wait_for_everyone()

        torch.manual_seed(config.seed)
        was_training = model.training
        model.eval()
        try:
            for name, data in task_data.items():
                done = task_records(out, name)
                pending = [
                    item for item in work_items(data) if shard_of(item.id, world) == rank and item.id not in done
                ]
                score = ItemScorer(adapter, template, config, data, judge)
                progress = tqdm(
                    total=len(pending), desc=f"{name} ({config.scorer})", disable=not show_progress, unit="item"
                )
                with JsonlAppender(shard_path(out, name, rank, world)) as appender, progress:
                    for batch in score.batches(pending):
                        for record in score(batch):
                            appender.append(record)
                        progress.update(len(batch))
        finally:
            model.train(was_training)  # a model evaluated during training goes back to training mode
        state.wait_for_everyone()
        if rank != 0:
            return None

        encoder = None
        if config.sentence_encoder:
            encoder = load_sentence_encoder(config.sentence_encoder)
        tasks_out = {}
        for name, data in task_data.items():
            computed = compute_task_metrics(
                data,
                task_records(out, name),
                option_score=config.option_score,
                resamples=config.bootstrap_resamples,
                seed=config.seed,
                sentence_encoder=encoder,
            )
            tasks_out[name] = {
                "display_name": data.spec.display_name,
                "paper_table": data.spec.paper_table,
                "headline": [key for key in data.spec.headline_keys() if key in computed["metrics"]],
                **computed,
            }
        results = {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "model": model_info,
            "data": dataset_revision(dataset_dir),
            "config": dataclasses.asdict(config),
            "prompt": {"name": template.name, "sha256": template.sha256, "system": template.system},
            "scorer": config.scorer,
            "seeds": {"torch": config.seed, "bootstrap": config.seed},
            "judge": None if judge is None else {**dataclasses.asdict(judge), "prompt_sha256": judge.prompt_sha256},
            "versions": environment_versions(),
            "git": git_revision(),
            "world_size": world,
            "tasks": tasks_out,
            "timing": {"created_at": created_at, "finished_at": _now(), "seconds": time.perf_counter() - started},
        }
        eval_run_folder(out).finish(results)
        export_predictions(out, task_data)
        write_report(results, out, load_comparison(config.compare))
        return results

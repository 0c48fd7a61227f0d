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
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from exo2ego_base.provenance import (
    LOCK_NAME,
    FolderLockedError,
    check_output_location,
    folder_lock,
    write_json_atomic,
)

from . import scorers
from .data import EvalDataError, TaskData, available_configs, load_task, video_root_map
from .judge import JudgeConfig, check_loopback, judge_answer
from .prompts import DEFAULT_PROMPT, PROMPTS, PromptTemplate, build_messages, get_prompt, user_text
from .provenance import dataset_revision, environment_versions, git_revision, model_revision
from .records import JsonlAppender, located_records, shard_path, task_records
from .task_metrics import class_item_id, compute_task_metrics
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
# What an evaluation writes into its folder (all of it is removed by overwrite=True / --overwrite).
RUN_FOLDER_ENTRIES = ("run_config.json", "predictions", "results.json", "report.md", "plots", "exports")
# Files that mark a folder as another command's output, never written into by eval.
FOREIGN_FOLDER_MARKERS = {
    "build_info.json": "a built dataset folder",
    "exo2ego_stage.json": "a training stage folder",
    "config.json": "a model folder",
    "trainer_state.json": "a training folder",
}


class RunConfigError(ValueError):
    """The output folder cannot hold this run: another command's folder, or a run of other data, weights or
    record-shaping settings."""


@dataclass
class EvalConfig:
    """Settings of one evaluation run (all recorded in ``results.json``).

    Each field's ``help`` says what it does; ``exo2ego eval`` builds its flags from these fields with
    ``HfArgumentParser`` (the field name as the flag, ``--num-frames`` or ``--num_frames``; the other metadata
    keys, ``choices`` and ``metavar``, go to ``add_argument`` too).
    """

    tasks: str = field(
        default="all", metadata={"help": "'all' (every known task in the folder) or comma-separated task names"}
    )
    scorer: str = field(
        default="letter_logprob",
        metadata={
            "help": "how multiple-choice rows are scored (Charades-Ego class mAP and EK-100 MIR always use option "
            "log-likelihoods; open-ended rows always generate)",
            "choices": scorers.SCORERS,
        },
    )
    prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "system prompt variant", "choices": sorted(PROMPTS)})
    num_frames: int | None = field(default=None, metadata={"help": "frames per video (None: the processor's)"})
    limit: int | None = field(
        default=None, metadata={"help": "score only the first N rows (and N videos of side tables) of each task"}
    )
    split: str | None = field(default=None, metadata={"help": "dataset split (None: the only one, or 'test')"})
    video_roots: list[str] = field(
        default_factory=list,
        metadata={
            "help": "where relative video paths live: DIR (every task) and/or TASK=DIR entries (none: the data "
            "folder)",
            "metavar": "[TASK=]DIR",
        },
    )
    max_new_tokens: int = field(default=16, metadata={"help": "generation budget of the generate_parse scorer"})
    open_max_new_tokens: int = field(default=64, metadata={"help": "generation budget of open-ended answers"})
    option_score: Literal["mean", "sum"] = field(
        default="mean", metadata={"help": "mean or summed token log-prob ranks options, classes and sentences"}
    )
    option_chunk_size: int = field(
        default=64, metadata={"help": "continuations scored per batch from the cached prefixes"}
    )
    batch_size: int = field(
        default=8,
        metadata={
            "help": "items whose options are scored by log-likelihood (option_loglik questions, class scores, "
            "retrieval) prefilled together; the other scorers take one item at a time"
        },
    )
    bootstrap_resamples: int = field(default=1000, metadata={"help": "bootstrap resamples of the 95%% intervals"})
    seed: int = field(default=0, metadata={"help": "seed of the bootstrap and of torch"})
    judge_url: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible chat endpoint on loopback that judges open answers"}
    )
    judge_model: str | None = field(default=None, metadata={"help": "pinned judge model id (required with judge_url)"})
    sentence_encoder: str | None = field(
        default=None, metadata={"help": "sentence-transformers path for SentenceSim (None: offline MiniLM)"}
    )
    check_videos: bool = field(
        default=True,
        metadata={"help": "fail before scoring when a video file is missing (--no-check-videos: skip the check)"},
    )
    compare: str | None = field(
        default=None, metadata={"help": "comparison column of the report: another results.json or 'paper'"}
    )

    def validate(self) -> None:
        """Refuse settings that cannot work before anything is loaded or written (names the CLI flag)."""
        for name, optional in (
            ("num_frames", True),
            ("limit", True),
            ("max_new_tokens", False),
            ("open_max_new_tokens", False),
            ("option_chunk_size", False),
            ("batch_size", False),
            ("bootstrap_resamples", False),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{name} ({flag}) must be an integer >= 1, got {value!r}")
        if self.scorer not in scorers.SCORERS:
            raise ValueError(f"unknown scorer {self.scorer!r}; choose one of {scorers.SCORERS}")
        if self.option_score not in ("mean", "sum"):
            raise ValueError(f"option_score must be 'mean' or 'sum', not {self.option_score!r}")
        if (self.judge_url is None) != (self.judge_model is None):
            raise ValueError("a judge needs both judge_url and judge_model (the pinned model id)")
        get_prompt(self.prompt)


@dataclass(frozen=True)
class WorkItem:
    """One scoring unit: a question, a Charades-Ego video (class scores) or an EK-100 MIR query video."""

    id: str
    part: str  # "mcq" | "open" | "classes" | "retrieval"
    row: dict[str, Any]


def work_items(data: TaskData) -> list[WorkItem]:
    """The task's items in dataset order."""
    items = []
    for row in data.rows:
        part = "retrieval" if data.spec.retrieval else ("mcq" if row["options"] else "open")
        items.append(WorkItem(row["sample_id"], part, row))
    if data.has_class_scores:
        items += [
            WorkItem(class_item_id(data.spec.name, video["video_id"]), "classes", video) for video in data.class_videos
        ]
    return items


def shard_of(item_id: str, num_shards: int) -> int:
    """Deterministic shard of an item id (SHA-1, independent of Python's hash seed)."""
    return int.from_bytes(hashlib.sha1(item_id.encode("utf-8")).digest()[:8], "big") % num_shards


class _ItemScorer:
    """Scores work items with one model; holds the prompt template and the settings."""

    def __init__(
        self,
        adapter: scorers.ModelAdapter,
        template: PromptTemplate,
        config: EvalConfig,
        data: TaskData,
        judge: JudgeConfig | None,
    ):
        self.adapter, self.template, self.config, self.data, self.judge = adapter, template, config, data, judge
        self.choice = scorers.MCQ_SCORERS[config.scorer]

    def __call__(self, items: list[WorkItem]) -> list[dict[str, Any]]:
        """One record per item, in order. The items scored by option log-likelihoods (multiple choice with
        `option_loglik`, class scores, retrieval) share one batched prefill; the others are scored one by one."""
        questions = {
            index: self._option_question(item) for index, item in enumerate(items) if self._by_likelihood(item)
        }
        batch_scores = (
            scorers.option_loglik_batch(self.adapter, list(questions.values()), self.config.option_chunk_size)
            if questions
            else []
        )
        scores = dict(zip(questions, batch_scores))
        return [self._record(item, scores.get(index)) for index, item in enumerate(items)]

    def batches(self, items: list[WorkItem]) -> Iterator[list[WorkItem]]:
        """`items` in order, in groups of up to `batch_size` option-likelihood items; every other item alone (a
        killed run loses at most one group)."""
        group: list[WorkItem] = []
        for item in items:
            if not self._by_likelihood(item):
                yield from [group, [item]] if group else [[item]]
                group = []
                continue
            group.append(item)
            if len(group) == self.config.batch_size:
                yield group
                group = []
        if group:
            yield group

    def _record(self, item: WorkItem, scores: scorers.ContinuationScores | None) -> dict[str, Any]:
        row = item.row
        record = {
            "id": item.id,
            "task": self.data.spec.name,
            "part": item.part,
            "prompt": self.template.name,
            "prompt_sha256": self.template.sha256,
        }
        handler = getattr(self, f"_{item.part}")
        record.update(handler(row, _video(row), scores))
        return record

    def _messages(self, question: str, options, mode: str) -> list[dict]:
        return build_messages(self.template, user_text(self.template, question, options, mode))

    def _by_likelihood(self, item: WorkItem) -> bool:
        """Whether an item's options are scored as continuations (`option_loglik_batch`)."""
        return item.part in ("classes", "retrieval") or (item.part == "mcq" and self.choice.choose is not None)

    def _option_question(self, item: WorkItem) -> scorers.OptionQuestion:
        """The question a `_by_likelihood` item's options are scored against as continuations."""
        row = item.row
        if item.part == "mcq":
            question, answers = row["question"], row["options"]
        elif item.part == "classes":
            question, answers = self.template.class_question, self.data.class_names
        else:
            question, answers = self.template.retrieval_question, self.data.sentences
        return scorers.OptionQuestion(self._messages(question, None, "continuation"), _video(row), answers)

    def _mcq(self, row, video, scores) -> dict[str, Any]:
        options, scorer = row["options"], self.config.scorer
        if scores is not None:
            result = self.choice.choose(scores, self.config)
        else:
            shown = options if self.choice.prompt_mode == "letters" else None
            messages = self._messages(row["question"], shown, self.choice.prompt_mode)
            result = self.choice.score(self.adapter, messages, video, options, self.config)
        answer = row["answer_idx"]
        return {
            "sample_id": row["sample_id"],
            "subset": row["subset"],
            "scorer": scorer,
            "options": options,
            "answer_idx": answer,
            "option_scores": result.option_scores,
            "prediction": result.prediction,
            "predicted_letter": None if result.prediction is None else scorers.OPTION_LETTERS[result.prediction],
            "raw_output": result.raw_output,
            "parse_rule": result.parse_rule,
            "invalid": result.prediction is None,
            "correct": None if answer is None else result.prediction == answer,
            **result.extra,
        }

    def _open(self, row, video, scores) -> dict[str, Any]:
        text = scorers.generate_text(
            self.adapter, self._messages(row["question"], None, "open"), video, self.config.open_max_new_tokens
        )
        record = {
            "sample_id": row["sample_id"],
            "subset": row["subset"],
            "scorer": "generate",
            "prediction_text": text,
            "answer_text": row["answer_text"],
        }
        if self.judge is not None:
            verdict = judge_answer(self.judge, row["question"], row["answer_text"], text)
            record.update(
                judge_correct=verdict.correct,
                judge_score=verdict.score,
                judge_raw=verdict.raw,
                judge_parsed=verdict.parsed,
            )
        return record

    def _classes(self, row, video, scores) -> dict[str, Any]:
        return {"video_id": row["video_id"], "scorer": "option_loglik", **dataclasses.asdict(scores)}

    def _retrieval(self, row, video, scores) -> dict[str, Any]:
        return {
            "sample_id": row["sample_id"],
            "video_index": row["meta"]["video_index"],
            "scorer": "option_loglik",
            **dataclasses.asdict(scores),
        }


def _video(row: dict[str, Any]) -> dict[str, Any]:
    """The processor's video input of a row: its file and, for a clip, its time span."""
    return {"path": row["video_path"], "start_sec": row.get("start_sec"), "end_sec": row.get("end_sec")}


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


def _flatten(key: dict[str, Any]) -> dict[str, Any]:
    return {
        f"{group}.{name}": value
        for group, values in key.items()
        if isinstance(values, dict)
        for name, value in values.items()
    }


def check_output_folder(out_dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an ``out_dir`` that is a file, lies under a file or cannot be created (``/proc``), another command's
    folder (dataset, model, training stage), or a non-empty folder that is not an eval run unless ``overwrite``.
    Returns the path."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunConfigError(f"--out {out} is a file, not a run folder; pass a folder path")
    if not out.is_dir():
        check_output_location(out, RunConfigError, "--out")  # under a file, or where nothing can be written
        return out
    if (out / "run_config.json").is_file():
        return out
    for marker, kind in FOREIGN_FOLDER_MARKERS.items():
        if (out / marker).exists():
            raise RunConfigError(f"--out {out} is {kind} ({marker}); eval never writes into it: pass another --out")
    others = sorted(path.name for path in out.iterdir() if path.name not in (*RUN_FOLDER_ENTRIES, LOCK_NAME))
    if others and not overwrite:
        raise RunConfigError(
            f"--out {out} is not empty ({', '.join(others[:5])}) and holds no eval run; pass another "
            "--out, or --overwrite to write the run there"
        )
    return out


def _clear_run_folder(out_dir: Path) -> None:
    """Remove what an earlier run wrote (``RUN_FOLDER_ENTRIES``), nothing else."""
    for name in RUN_FOLDER_ENTRIES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _has_records(out_dir: Path) -> bool:
    folder = out_dir / "predictions"
    return folder.is_dir() and any(path.stat().st_size for path in folder.rglob("shard-*.jsonl"))


def _check_run_folder(out_dir: Path, key: dict[str, Any], write: bool) -> None:
    """Refuse to resume a run whose records came from other settings, weights or data; ``write`` records the
    key when new (or extended by new tasks, or when the folder holds no record yet).

    Every process checks (so none waits for a main process that failed); only the main one writes.
    """
    path = out_dir / "run_config.json"
    recorded = key
    if path.is_file() and _has_records(out_dir):
        previous = json.loads(path.read_text(encoding="utf-8"))
        before, now = _flatten(previous), _flatten(key)
        # A task first evaluated now has no records to mix in: only keys recorded before must match.
        different = {
            name: (before.get(name), value)
            for name, value in now.items()
            if before.get(name) != value and (name in before or not name.startswith("data."))
        }
        if different:
            lines = "; ".join(f"{name}: was {was!r}, now {value!r}" for name, (was, value) in different.items())
            raise RunConfigError(
                f"{out_dir} holds predictions made from other inputs, which a resume would mix in ({lines}); "
                "start fresh with --overwrite (evaluate(..., overwrite=True)), which deletes that run's "
                "predictions and results, or pass another --out"
            )
        recorded = {**previous, "data": {**previous.get("data", {}), **key["data"]}}
        if recorded == previous:
            return
    if write:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, recorded)


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


def _check_scorable(
    adapter: scorers.ModelAdapter, template: PromptTemplate, config: EvalConfig, task_data: dict[str, TaskData]
) -> None:
    """Fail before scoring when the tokenizer cannot spell the option letters or the template cannot
    take a cached answer (cheap text-only checks on the first row of each task)."""
    for data in task_data.values():
        mcq = [row for row in data.rows if row["options"]]
        if mcq and config.scorer == "letter_logprob":
            most = max(len(row["options"]) for row in mcq)
            messages = build_messages(template, user_text(template, mcq[0]["question"], mcq[0]["options"], "letters"))
            scorers.plan_letters(adapter, adapter.render_prompt(messages), most)
        if (mcq and config.scorer == "option_loglik") or data.has_class_scores or data.spec.retrieval:
            messages = build_messages(template, user_text(template, data.rows[0]["question"], None, "continuation"))
            adapter.answer_affixes(messages, adapter.render_prompt(messages))


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
    from accelerate.utils import broadcast_object_list

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
    import torch
    from accelerate import PartialState

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
    import torch
    from tqdm.auto import tqdm

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
        adapter = scorers.ModelAdapter(model, processor, config.num_frames)
        _check_scorable(adapter, template, config, task_data)
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
                score = _ItemScorer(adapter, template, config, data, judge)
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
            from .metrics import load_sentence_encoder

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
        write_json_atomic(out / "results.json", results)
        from .export import export_predictions
        from .report import load_comparison, write_report

        export_predictions(out, task_data)
        write_report(results, out, load_comparison(config.compare))
        return results

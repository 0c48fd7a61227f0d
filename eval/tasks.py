"""Declarative EgoBench task definitions (one per Parquet config of an EgoBench folder).

Each :class:`TaskSpec` says what a valid row looks like for the task (option counts, open-ended rows,
hidden labels), which side tables it needs, how its rows are grouped for per-subset accuracy, which
prediction export it gets and which metrics the report shows, in the style of lmms-eval's task YAMLs but as
typed Python. The run machinery (:mod:`eval.runner`, :mod:`eval.task_metrics`, :mod:`eval.export`) reads
nothing else and names no task. Metric keys and labels are declared once, below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from datasets_scripts.schema import EGOBENCH_CONFIG_TASK, EGOBENCH_TASK_CONFIGS, EgoBenchTaskConfigs

from .metrics import egomcq_type


@dataclass(frozen=True)
class MetricSpec:
    """A metric shown in reports and the model card.

    Attributes:
        key: key in ``results.json`` (``tasks.<task>.metrics.<key>``).
        label: column text of the paper-style table, e.g. ``"Acc. (Direct)"``.
        metric_type: Hub ``model-index`` metric type (``accuracy``, ``map``, ``ndcg``, ...).
        unit: ``"percent"`` (0-100) or ``"score"`` (judge score 0-5).
    """

    key: str
    label: str
    metric_type: str = "accuracy"
    unit: str = "percent"


# Every metric the harness computes; a task's headline picks from these (labels live here only).
ACCURACY = MetricSpec("accuracy", "Acc.")
MCQ_ACCURACY = MetricSpec("mcq_accuracy", "MCQ Acc.")
INVALID_RATE = MetricSpec("invalid_rate", "Invalid answers")
EXACT_MATCH_OPEN = MetricSpec("exact_match_open", "Exact match (Open)", "exact_match")
ROUGE_L_OPEN = MetricSpec("rouge_l_open", "ROUGE-L (Open)", "rouge")
SENTENCE_SIMILARITY_OPEN = MetricSpec("sentence_similarity_open", "SentenceSim (Open)", "cosine_similarity")
JUDGE_ACCURACY_OPEN = MetricSpec("judge_accuracy_open", "Acc. (Open, judge)")
JUDGE_SCORE_OPEN = MetricSpec("judge_score_open", "Score (Open, judge)", "score", "score")
CLASS_MAP = MetricSpec("map", "mAP", "map")
RETRIEVAL_MAP = MetricSpec("map", "mAP (V→T)", "map")
RETRIEVAL_NDCG = MetricSpec("ndcg", "nDCG (V→T)", "ndcg")


def subset_accuracy(subset: str) -> MetricSpec:
    """Accuracy over one subset's multiple-choice rows: key ``accuracy_<subset>`` (lower case, non-alphanumerics
    as ``_``), label ``Acc. (<subset>)``."""
    key = "".join(char if char.isalnum() else "_" for char in subset.lower())
    return MetricSpec(f"accuracy_{key}", f"Acc. ({subset})")


def row_subset(row: Mapping[str, Any]) -> str:
    """A row's ``subset`` column (the default grouping of per-subset accuracy)."""
    return row["subset"]


def egomcq_question_type(row: Mapping[str, Any]) -> str:
    """``"inter"`` or ``"intra"``: EgoMCQ's released ``types`` (kept in ``meta``), else the row's subset."""
    return egomcq_type(row["meta"].get("types", row["subset"]))


@dataclass(frozen=True)
class TaskSpec:
    """One EgoBench task.

    Attributes:
        name: the task name: value of the rows' ``task`` column, key of the shared config registry
            (:data:`datasets_scripts.schema.EGOBENCH_TASK_CONFIGS`, which says which Parquet configs hold it).
        display_name: name used in reports (``"EgoSchema"``).
        option_counts: allowed ``len(options)`` for multiple-choice rows.
        allow_open: rows with ``options == []`` are open-ended QA (reference in ``answer_text``).
        allow_unlabeled: multiple-choice rows may have ``answer_idx = None`` (hidden test labels); their
            predictions are exported, not scored.
        retrieval: rows are videos scored against every sentence of ``sentences_config`` (EK-100 MIR).
        labels_config, classes_config: Charades-Ego side tables (per-video multi-hot labels, class names);
            when both exist, mAP over all classes is computed with ``option_loglik`` class scores.
        sentences_config, relevance_config: EK-100 MIR side tables (sentences, sparse relevance).
        subset_metrics: also report accuracy per subset (``accuracy_<subset>``, see :func:`subset_accuracy`).
        subset_of: the subset of a labelled multiple-choice row for those metrics (default its ``subset``).
        mcq_metric_key: key of the accuracy over all multiple-choice rows.
        export_format: the server format its predictions are written in (a key of
            :data:`eval.export.EXPORTERS`), or None.
        headline: the metrics of the paper's tables, in order (a subset of what the run computes).
        paper_table: where the paper reports it.
    """

    name: str
    display_name: str
    option_counts: tuple[int, ...] = ()
    allow_open: bool = False
    allow_unlabeled: bool = False
    retrieval: bool = False
    labels_config: str | None = None
    classes_config: str | None = None
    sentences_config: str | None = None
    relevance_config: str | None = None
    subset_metrics: bool = False
    subset_of: Callable[[Mapping[str, Any]], str] = row_subset
    mcq_metric_key: str = "accuracy"
    export_format: str | None = None
    headline: tuple[MetricSpec, ...] = field(default_factory=tuple)
    paper_table: str = ""

    def headline_keys(self) -> list[str]:
        return [metric.key for metric in self.headline]

    @property
    def configs(self) -> EgoBenchTaskConfigs:
        """Where the builders put this task (the shared registry entry)."""
        return EGOBENCH_TASK_CONFIGS[self.name]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="egoschema",
            display_name="EgoSchema",
            option_counts=(5,),
            allow_unlabeled=True,
            export_format="egoschema_submission",
            headline=(ACCURACY,),
            paper_table="Table 3",
        ),
        TaskSpec(
            name="qaego4d",
            display_name="QAEgo4D",
            option_counts=(4,),
            allow_open=True,
            subset_metrics=True,
            headline=(
                subset_accuracy("Closed"),
                JUDGE_ACCURACY_OPEN,
                JUDGE_SCORE_OPEN,
                ROUGE_L_OPEN,
                SENTENCE_SIMILARITY_OPEN,
            ),
            paper_table="Table 3",
        ),
        TaskSpec(
            name="egotaskqa",
            display_name="EgoTaskQA",
            option_counts=(2, 5),  # yes/no questions stay 2-way
            subset_metrics=True,
            headline=(subset_accuracy("Direct"), subset_accuracy("Indirect")),
            paper_table="Table 3",
        ),
        TaskSpec(
            name="charades_ego",
            display_name="Charades-Ego",
            option_counts=(5,),
            labels_config=EGOBENCH_TASK_CONFIGS["charades_ego"].side_configs["labels"],
            classes_config=EGOBENCH_TASK_CONFIGS["charades_ego"].side_configs["classes"],
            mcq_metric_key="mcq_accuracy",  # MCQ accuracy and class mAP are different numbers
            headline=(CLASS_MAP, MCQ_ACCURACY),
            paper_table="Table 4",
        ),
        TaskSpec(
            name="epic_mir",
            display_name="EK-100 MIR",
            retrieval=True,
            sentences_config=EGOBENCH_TASK_CONFIGS["epic_mir"].side_configs["sentences"],
            relevance_config=EGOBENCH_TASK_CONFIGS["epic_mir"].side_configs["relevance"],
            headline=(RETRIEVAL_MAP, RETRIEVAL_NDCG),
            paper_table="Table 4",
        ),
        TaskSpec(
            name="egoplan", display_name="EgoPlan Val", option_counts=(4,), headline=(ACCURACY,), paper_table="Table 5"
        ),
        TaskSpec(name="vlnqa", display_name="VLN-QA", option_counts=(4,), headline=(ACCURACY,), paper_table="Table 5"),
        TaskSpec(
            name="egomcq",
            display_name="EgoMCQ",
            option_counts=(10, 5),
            subset_metrics=True,
            subset_of=egomcq_question_type,
            headline=(subset_accuracy("Inter"), subset_accuracy("Intra")),
            paper_table="Table 6",
        ),
        TaskSpec(
            name="synthetic",
            display_name="Synthetic Ego-Exo",
            option_counts=(5,),
            subset_metrics=True,
            headline=(ACCURACY,),
            paper_table="(ours: the embedded synthetic world)",
        ),
        TaskSpec(
            name="synthetic_pattern",
            display_name="Synthetic Ego-Exo: pattern (named in exo text only)",
            option_counts=(5,),
            headline=(ACCURACY,),
            paper_table="(ours: the embedded synthetic world)",
        ),
    )
}

if set(TASKS) != set(EGOBENCH_TASK_CONFIGS):
    raise ImportError("eval.tasks.TASKS and datasets_scripts.schema.EGOBENCH_TASK_CONFIGS name different tasks")


def get_task(name: str) -> TaskSpec:
    """The task called ``name``; the error lists the known names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown EgoBench task {name!r}; known tasks: {sorted(TASKS)}") from None


def _looked_for(name: str) -> str:
    return " or ".join("+".join(group) for group in TASKS[name].configs.row_configs)


def describe_selection(names: list[str], available: list[str]) -> dict[str, object]:
    """What ``--tasks`` found in a folder: ``{"found": {task: [configs read]}, "not_requested": [tasks in the
    folder left out], "not_found": {task: "configs looked for"}, "unrecognized_configs": [...]}`` (configs that
    belong to no task: neither read nor scored)."""
    present = {name: list(TASKS[name].configs.present_row_configs(available)) for name in TASKS}
    return {
        "found": {name: present[name] for name in names},
        "not_requested": [name for name in TASKS if present[name] and name not in names],
        "not_found": {name: _looked_for(name) for name in TASKS if not present[name]},
        "unrecognized_configs": [config for config in available if config not in EGOBENCH_CONFIG_TASK],
    }


def resolve_task_names(requested: str | list[str], available: list[str]) -> list[str]:
    """Expand ``"all"`` (every known task with configs among ``available``) or check a comma list.

    A task is present when one of its registered row configs is (``egoschema_full``/``egoschema_subset``,
    ``qaego4d_closed``+``qaego4d_open``, ...). Raises ``ValueError`` for an unknown task or one whose configs
    are missing from the folder; the message lists what was looked for.
    """
    if requested == "all" or requested == ["all"]:
        names = [name for name in TASKS if TASKS[name].configs.present_row_configs(available)]
        if not names:
            raise ValueError(
                f"the EgoBench folder has no known task config (its configs: {available}; looked for: "
                + "; ".join(f"{name}: {_looked_for(name)}" for name in TASKS)
                + ")"
            )
        return names
    names = [
        name.strip() for name in (requested.split(",") if isinstance(requested, str) else requested) if name.strip()
    ]
    for name in names:
        get_task(name)
        if not TASKS[name].configs.present_row_configs(available):
            raise ValueError(
                f"task {name!r} is not in the EgoBench folder: looked for config {_looked_for(name)} "
                f"(its configs: {available})"
            )
    return names

"""EgoBench task definitions for scoring: a :class:`TaskSpec` per declared task.

The tasks are declared once, in :data:`datasets_scripts.egobench.tasks.EGOBENCH_TASKS`: their configs, reader,
licence, leakage namespace and, as plain data (:class:`datasets_scripts.egobench.tasks.Scoring`), how they are
scored. :data:`TASKS` turns each declaration into a :class:`TaskSpec`, resolving its names here (headline metrics
in :data:`METRICS`, subset rules in :data:`SUBSET_RULES`, side-config roles in :data:`SIDE_ROLES`); a name it
does not know fails when this module is imported. Each :class:`TaskSpec` says what a valid row looks like for the
task (option counts, open-ended rows, hidden labels), which side tables it needs, how its rows are grouped for
per-subset accuracy, which prediction export it gets and which metrics the report shows, in the style of
lmms-eval's task YAMLs but as typed Python. The run machinery (:mod:`eval.runner`, :mod:`eval.task_metrics`,
:mod:`eval.export`) reads nothing else and names no task. Metric keys and labels are declared once, below.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from datasets_scripts.egobench.tasks import EGOBENCH_TASKS, EgoBenchTask, config_task

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
        name: the task name: value of the rows' ``task`` column, key of the declarations
            (:data:`datasets_scripts.egobench.tasks.EGOBENCH_TASKS`, which say which Parquet configs hold it).
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
    def configs(self) -> EgoBenchTask:
        """Where the builders put this task (its declaration: ``row_configs``, ``side_configs``)."""
        return EGOBENCH_TASKS[self.name]


# The names a declaration's ``Scoring`` uses (datasets_scripts/egobench/tasks.py), resolved here.
METRICS: dict[str, MetricSpec] = {
    "accuracy": ACCURACY,
    "mcq_accuracy": MCQ_ACCURACY,
    "invalid_rate": INVALID_RATE,
    "exact_match_open": EXACT_MATCH_OPEN,
    "rouge_l_open": ROUGE_L_OPEN,
    "sentence_similarity_open": SENTENCE_SIMILARITY_OPEN,
    "judge_accuracy_open": JUDGE_ACCURACY_OPEN,
    "judge_score_open": JUDGE_SCORE_OPEN,
    "class_map": CLASS_MAP,
    "retrieval_map": RETRIEVAL_MAP,
    "retrieval_ndcg": RETRIEVAL_NDCG,
}
SUBSET_METRIC_PREFIX = "accuracy:"  # "accuracy:Closed" -> subset_accuracy("Closed")
SUBSET_RULES: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "subset": row_subset,
    "egomcq_type": egomcq_question_type,
}
# Side-config roles of a declaration -> the TaskSpec fields that name them.
SIDE_ROLES = {
    "labels": "labels_config",
    "classes": "classes_config",
    "sentences": "sentences_config",
    "relevance": "relevance_config",
}


def _metric(task: str, name: str) -> MetricSpec:
    if name.startswith(SUBSET_METRIC_PREFIX) and name[len(SUBSET_METRIC_PREFIX) :]:
        return subset_accuracy(name[len(SUBSET_METRIC_PREFIX) :])
    if name not in METRICS:
        raise ValueError(
            f"EgoBench task {task!r}: unknown headline metric {name!r}; use one of {sorted(METRICS)} or "
            f"'{SUBSET_METRIC_PREFIX}<Subset>' (eval/tasks.py METRICS)"
        )
    return METRICS[name]


def task_spec(declaration: EgoBenchTask) -> TaskSpec:
    """The :class:`TaskSpec` of one declaration (``ValueError`` for a name eval does not know)."""
    scoring = declaration.scoring
    where = f"EgoBench task {declaration.name!r}"
    if scoring.subset_of not in SUBSET_RULES:
        raise ValueError(f"{where}: unknown subset rule {scoring.subset_of!r}; use one of {sorted(SUBSET_RULES)}")
    unknown_roles = sorted(set(declaration.side_configs) - set(SIDE_ROLES))
    if unknown_roles:
        raise ValueError(
            f"{where}: side configs of roles eval does not read: {unknown_roles} (known: {list(SIDE_ROLES)})"
        )
    sides = {SIDE_ROLES[role]: config for role, config in declaration.side_configs.items()}
    if scoring.retrieval and not {"sentences_config", "relevance_config"} <= set(sides):
        raise ValueError(f"{where}: a retrieval task needs side configs 'sentences' and 'relevance'")
    if not (scoring.option_counts or scoring.allow_open or scoring.retrieval):
        raise ValueError(f"{where}: declares no option count, open rows or retrieval: nothing to score")
    return TaskSpec(
        name=declaration.name,
        display_name=scoring.display_name,
        option_counts=tuple(scoring.option_counts),
        allow_open=scoring.allow_open,
        allow_unlabeled=scoring.allow_unlabeled,
        retrieval=scoring.retrieval,
        subset_metrics=scoring.subset_metrics,
        subset_of=SUBSET_RULES[scoring.subset_of],
        mcq_metric_key=scoring.mcq_metric_key,
        export_format=scoring.export_format,
        headline=tuple(_metric(declaration.name, name) for name in scoring.headline),
        paper_table=scoring.paper_table,
        **sides,
    )


class _TaskSpecs(Mapping[str, TaskSpec]):
    """Every declared EgoBench task as a :class:`TaskSpec`, in declaration order: a view of
    :data:`datasets_scripts.egobench.tasks.EGOBENCH_TASKS` (no list of its own to keep in step with it; a
    declaration added there, a test's too, is a task here)."""

    def __init__(self) -> None:
        self._resolved: dict[str, tuple[EgoBenchTask, TaskSpec]] = {}

    def __getitem__(self, name: str) -> TaskSpec:
        declaration = EGOBENCH_TASKS[name]
        resolved = self._resolved.get(name)
        if resolved is None or resolved[0] is not declaration:
            resolved = self._resolved[name] = (declaration, task_spec(declaration))
        return resolved[1]

    def __contains__(self, name: object) -> bool:
        return name in EGOBENCH_TASKS

    def __iter__(self) -> Iterator[str]:
        return iter(EGOBENCH_TASKS)

    def __len__(self) -> int:
        return len(EGOBENCH_TASKS)

    def __repr__(self) -> str:
        return f"TASKS({list(self)})"


TASKS: Mapping[str, TaskSpec] = _TaskSpecs()
for _name in TASKS:  # every declaration resolves now: a name eval does not know fails at import
    TASKS[_name]


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
        "unrecognized_configs": [config for config in available if config_task(config) is None],
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

"""The EgoBench tasks, each declared once: :data:`EGOBENCH_TASKS`.

One :class:`EgoBenchTask` per task says everything the project knows about it: the Parquet configs it writes, the
reader of its source as released, the licence note of the dataset card, the id namespace of the leakage report and
how ``exo2ego eval`` scores it (:class:`Scoring`: plain data, names that :mod:`eval.tasks` resolves, since this
package may not import ``eval``). Everything else is derived from these declarations when it is used:

- ``exo2ego data egobench``: its ``--root``/``--tasks`` names and the readers it runs (tasks with a ``reader``),
  the card's licence notes and config notes (:mod:`datasets_scripts.egobench.build`);
- the leakage report's namespace of each row's ``meta["video_id"]`` (:func:`datasets_scripts.leakage.bench_ids`);
- ``exo2ego eval``'s task specs, its task names and which configs it reads (:data:`eval.tasks.TASKS`), and the
  lmms-eval tasks' config -> task map (``eval/lmms_eval_tasks/utils.py``).

Adding a task is one more declaration in :data:`EGOBENCH_TASKS` (its reader may live in a module of its own); see
``datasets_scripts/egobench/README.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from datasets_scripts.build_command import BuildContext
from datasets_scripts.egobench.epic_mir import read_epic_mir
from datasets_scripts.egobench.mined_tasks import read_charades_ego, read_egomcq, read_egotaskqa
from datasets_scripts.egobench.options import EgoBenchOptions, TaskTables
from datasets_scripts.egobench.qa_tasks import read_egoplan, read_egoschema, read_qaego4d, read_vlnqa

# What a task's reader is given (the task's --root folder, the build context, the build's options) and returns.
Reader = Callable[[Path, BuildContext, EgoBenchOptions], TaskTables]
# A row's ``meta`` -> the namespace of its ``meta["video_id"]`` (for sources that mix datasets, e.g. EgoPlan).
NamespaceRule = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True, kw_only=True)
class Scoring:
    """How ``exo2ego eval`` scores a task: plain data, resolved into :class:`eval.tasks.TaskSpec` by ``eval``
    (an unknown name fails when :mod:`eval.tasks` is imported; a task registered later, when it is first read).

    Attributes:
        display_name: the task's name in reports (``"EgoSchema"``).
        paper_table: where the paper reports it.
        option_counts: allowed ``len(options)`` of multiple-choice rows.
        allow_open: rows with ``options == []`` are open-ended QA (reference in ``answer_text``).
        allow_unlabeled: multiple-choice rows may have ``answer_idx = None`` (hidden test labels).
        retrieval: rows are videos ranked against every sentence (side configs ``sentences`` and ``relevance``).
        subset_metrics: also report accuracy per subset (``accuracy_<subset>``).
        subset_of: the rule that gives a row's subset for those metrics, a name of ``eval.tasks.SUBSET_RULES``
            (``"subset"``: the row's ``subset`` column).
        mcq_metric_key: key of the accuracy over all multiple-choice rows.
        export_format: the server format its predictions are exported in (a key of ``eval.export.EXPORTERS``).
        headline: the metrics of the paper's tables, in order: names of ``eval.tasks.METRICS``, or
            ``"accuracy:<Subset>"`` for one subset's accuracy (``"accuracy:Closed"`` -> key ``accuracy_closed``).
    """

    display_name: str
    paper_table: str = ""
    option_counts: tuple[int, ...] = ()
    allow_open: bool = False
    allow_unlabeled: bool = False
    retrieval: bool = False
    subset_metrics: bool = False
    subset_of: str = "subset"
    mcq_metric_key: str = "accuracy"
    export_format: str | None = None
    headline: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EgoBenchTask:
    """One EgoBench task.

    Attributes:
        name: the task name: the rows' ``task`` column, the ``--root NAME=DIR`` of ``exo2ego data egobench`` and
            the ``--tasks`` name of ``exo2ego eval``.
        row_configs: alternatives, best first; each is a group of configs holding the task's canonical rows.
            A reader takes the first group with any config in the folder and reads every present config of it
            (rows concatenated in order). EgoSchema: ``egoschema_full`` holds every question (answers where
            public), ``egoschema_subset`` only the answered ones.
        side_configs: configs of other tables the task needs, ``{role: config}``; the roles eval reads are
            ``labels``/``classes`` (class mAP) and ``sentences``/``relevance`` (retrieval).
        leakage_namespace: the id namespace of the rows' ``meta["video_id"]`` in the leakage report (the same
            namespace as the training sources' ids of the same videos), or a rule ``meta -> namespace``.
        scoring: how ``exo2ego eval`` scores it.
        reader: reads the source as released into ``{config: (features, rows)}``; None for a task another
            builder writes (the synthetic world's).
        licence: the dataset card's "Sources and licences" line (required with a reader).
        config_notes: the card's note on a config, ``{config: note}``.
    """

    name: str
    row_configs: tuple[tuple[str, ...], ...]
    leakage_namespace: str | NamespaceRule
    scoring: Scoring
    reader: Reader | None = None
    licence: str = ""
    side_configs: Mapping[str, str] = dataclass_field(default_factory=dict)
    config_notes: Mapping[str, str] = dataclass_field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"EgoBench task {self.name!r}"
        if not self.name or not self.row_configs or not all(self.row_configs):
            raise ValueError(f"{where}: needs a name and at least one non-empty group of row configs")
        if not (
            callable(self.leakage_namespace) or (isinstance(self.leakage_namespace, str) and self.leakage_namespace)
        ):
            raise ValueError(f"{where}: leakage_namespace must be a namespace name or a rule meta -> namespace")
        if self.reader is not None and not self.licence:
            raise ValueError(f"{where}: a task built from a source needs its licence note")
        if len(set(self.configs)) != len(self.configs):
            raise ValueError(f"{where}: a config is named twice in {self.configs}")
        unknown = sorted(set(self.config_notes) - set(self.configs))
        if unknown:
            raise ValueError(f"{where}: config_notes name configs it does not write: {unknown}")

    @property
    def built_by_egobench(self) -> bool:
        """Written by ``exo2ego data egobench`` (``synthetic*`` are written by the synthetic world)."""
        return self.reader is not None

    @property
    def configs(self) -> tuple[str, ...]:
        """Every config this task may write (rows and side tables)."""
        return tuple(config for group in self.row_configs for config in group) + tuple(self.side_configs.values())

    def present_row_configs(self, available: Sequence[str]) -> tuple[str, ...]:
        """The configs to read the rows from in a folder whose configs are ``available`` (empty: task absent)."""
        for group in self.row_configs:
            present = tuple(config for config in group if config in available)
            if present:
                return present
        return ()

    def namespace(self, meta: Mapping[str, Any]) -> str:
        """The leakage namespace of a row's ``meta["video_id"]``."""
        if callable(self.leakage_namespace):
            return self.leakage_namespace(meta)
        return self.leakage_namespace


def _single(name: str, **fields: Any) -> EgoBenchTask:
    """A task whose rows are one config named after it."""
    return EgoBenchTask(name=name, row_configs=((name,),), **fields)


def _egoplan_namespace(meta: Mapping[str, Any]) -> str:
    """EgoPlan mixes Ego4D videos and EPIC-KITCHENS-100 videos (``meta["video_source"]``)."""
    return "ego4d_video" if meta.get("video_source") == "Ego4D" else "epic"


def _registry(*tasks: EgoBenchTask) -> dict[str, EgoBenchTask]:
    registry: dict[str, EgoBenchTask] = {}
    owner: dict[str, str] = {}
    for task in tasks:
        if task.name in registry:
            raise ValueError(f"EgoBench task {task.name!r} is declared twice")
        registry[task.name] = task
        for config in task.configs:
            if config in owner:
                raise ValueError(
                    f"config {config!r} is declared by EgoBench tasks {owner[config]!r} and {task.name!r}"
                )
            owner[config] = task.name
    return registry


# The EgoBench tasks in their order (build order, `--tasks all` order, report rows).
EGOBENCH_TASKS: dict[str, EgoBenchTask] = _registry(
    EgoBenchTask(
        name="egoschema",
        row_configs=(("egoschema_full",), ("egoschema_subset",)),
        reader=read_egoschema,
        licence="EgoSchema (egoschema/EgoSchema; clips of Ego4D videos under the Ego4D licence).",
        leakage_namespace="egoschema",  # q_uid; `meta.ego4d_video_uid` (uid_to_ego4d.json) adds the Ego4D video
        scoring=Scoring(
            display_name="EgoSchema",
            paper_table="Table 3",
            option_counts=(5,),
            allow_unlabeled=True,
            export_format="egoschema_submission",
            headline=("accuracy",),
        ),
    ),
    EgoBenchTask(
        name="qaego4d",
        row_configs=(("qaego4d_closed", "qaego4d_open"),),
        reader=read_qaego4d,
        licence="QAEgo4D as released by GroundVQA (Ego4D licence for the videos).",
        leakage_namespace="ego4d_clip",
        scoring=Scoring(
            display_name="QAEgo4D",
            paper_table="Table 3",
            option_counts=(4,),
            allow_open=True,
            subset_metrics=True,
            headline=(
                "accuracy:Closed",
                "judge_accuracy_open",
                "judge_score_open",
                "rouge_l_open",
                "sentence_similarity_open",
            ),
        ),
    ),
    EgoBenchTask(
        name="egotaskqa",
        row_configs=(("egotaskqa_direct", "egotaskqa_indirect"),),
        reader=read_egotaskqa,
        licence="EgoTaskQA (LEMMA videos; terms of the EgoTaskQA/LEMMA release).",
        leakage_namespace="lemma",
        scoring=Scoring(
            display_name="EgoTaskQA",
            paper_table="Table 3",
            option_counts=(2, 5),  # yes/no questions stay 2-way
            subset_metrics=True,
            headline=("accuracy:Direct", "accuracy:Indirect"),
        ),
    ),
    _single(
        "charades_ego",
        side_configs={"labels": "charades_ego_labels", "classes": "charades_ego_classes"},
        reader=read_charades_ego,
        licence="Charades-Ego (AI2; non-commercial terms of the Charades release).",
        leakage_namespace="charades",
        config_notes={
            "charades_ego_labels": (
                "per-video multi-hot labels over the 157 classes (for mAP; score all classes, not the 5 options)"
            ),
            "charades_ego_classes": "class index, `cNNN` id and name",
        },
        scoring=Scoring(
            display_name="Charades-Ego",
            paper_table="Table 4",
            option_counts=(5,),
            mcq_metric_key="mcq_accuracy",  # MCQ accuracy and class mAP are different numbers
            headline=("class_map", "mcq_accuracy"),
        ),
    ),
    _single(
        "epic_mir",
        side_configs={"sentences": "epic_mir_sentences", "relevance": "epic_mir_relevance"},
        reader=read_epic_mir,
        licence=(
            "EPIC-KITCHENS-100 retrieval annotations (CC BY-NC 4.0); the relevance matrix is recomputed from the CSVs."
        ),
        leakage_namespace="epic",
        config_notes={
            "epic_mir": "video rows; `meta.video_index` is the relevance-matrix row",
            "epic_mir_sentences": "sentence rows; `sentence_index` is the relevance-matrix column",
            "epic_mir_relevance": "sparse relevance matrix (entries > 0): `(video_index, sentence_index, relevance)`",
        },
        scoring=Scoring(
            display_name="EK-100 MIR",
            paper_table="Table 4",
            retrieval=True,
            headline=("retrieval_map", "retrieval_ndcg"),
        ),
    ),
    _single(
        "egoplan",
        reader=read_egoplan,
        licence="EgoPlan-Bench validation (derived from EPIC-KITCHENS-100 and Ego4D; their licences apply).",
        leakage_namespace=_egoplan_namespace,
        scoring=Scoring(display_name="EgoPlan Val", paper_table="Table 5", option_counts=(4,), headline=("accuracy",)),
    ),
    _single(
        "vlnqa",
        reader=read_vlnqa,
        licence="VLN-QA as shipped in MVBench (OpenGVLab; VLN-CE/Matterport3D terms for the videos).",
        leakage_namespace="vlnqa",
        scoring=Scoring(display_name="VLN-QA", paper_table="Table 5", option_counts=(4,), headline=("accuracy",)),
    ),
    _single(
        "egomcq",
        reader=read_egomcq,
        licence="EgoMCQ (EgoVLP; Ego4D licence).",
        leakage_namespace="ego4d_video",
        scoring=Scoring(
            display_name="EgoMCQ",
            paper_table="Table 6",
            option_counts=(10, 5),
            subset_metrics=True,
            subset_of="egomcq_type",
            headline=("accuracy:Inter", "accuracy:Intra"),
        ),
    ),
    # Written by the synthetic world (`exo2ego data synth`), not by `exo2ego data egobench`.
    _single(
        "synthetic",
        leakage_namespace="synthetic",
        scoring=Scoring(
            display_name="Synthetic Ego-Exo",
            paper_table="(ours: the embedded synthetic world)",
            option_counts=(5,),
            subset_metrics=True,
            headline=("accuracy",),
        ),
    ),
    _single(
        "synthetic_pattern",
        leakage_namespace="synthetic",
        scoring=Scoring(
            display_name="Synthetic Ego-Exo: pattern (named in exo text only)",
            paper_table="(ours: the embedded synthetic world)",
            option_counts=(5,),
            headline=("accuracy",),
        ),
    ),
)


# ------------------------------------------------------------------------------ derived (read when used)
def builder_tasks() -> tuple[str, ...]:
    """The tasks ``exo2ego data egobench`` builds (those with a reader), in declaration order."""
    return tuple(name for name, task in EGOBENCH_TASKS.items() if task.built_by_egobench)


def config_task(config: str) -> str | None:
    """The task that writes ``config`` (rows or side table), or None for a config of no task."""
    return next((name for name, task in EGOBENCH_TASKS.items() if config in task.configs), None)


def get_egobench_task(name: str) -> EgoBenchTask:
    """The declaration of task ``name``; ``ValueError`` naming the known tasks otherwise."""
    try:
        return EGOBENCH_TASKS[name]
    except KeyError:
        raise ValueError(f"unknown EgoBench task {name!r}; declared tasks: {', '.join(EGOBENCH_TASKS)}") from None


def check_egobench_config(task: str, config: str) -> None:
    """Raise ``ValueError`` when ``config`` is not one of ``task``'s declared configs (a reader bug)."""
    if config_task(config) != task:
        raise ValueError(
            f"config {config!r} is not a declared config of EgoBench task {task!r} "
            f"(datasets_scripts/egobench/tasks.py: {get_egobench_task(task).configs})"
        )

"""Turn a task's checked rows and its per-item records into the metrics of ``results.json``.

Every metric entry is ``{"value", "ci_low", "ci_high", "n", "unit", "label", "metric_type", "scorer"}``
(``scorer``: what produced the underlying predictions: the run's MCQ scorer, ``generate`` for open
answers, ``option_loglik`` for class and retrieval scores); percentages
are 0-100 and the interval is a 95% percentile bootstrap over the task's items (questions, videos or
queries) with a recorded seed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from . import metrics
from .data import TaskData
from .tasks import MetricSpec


class IncompleteRunError(RuntimeError):
    """Some items of a task have no record (a shard has not finished)."""


def _entry(value: float, interval: metrics.Interval, n: int, spec: MetricSpec, scorer: str) -> dict[str, Any]:
    scale = 100.0 if spec.unit == "percent" else 1.0
    return {
        "scorer": scorer,
        "value": value * scale,
        "ci_low": interval.low * scale,
        "ci_high": interval.high * scale,
        "n": int(n),
        "unit": spec.unit,
        "label": spec.label,
        "metric_type": spec.metric_type,
    }


class _MetricTable:
    """Collects metric entries, labelling them from the task's headline specs when it names them."""

    def __init__(self, data: TaskData, resamples: int, seed: int):
        self.known = {metric.key: metric for metric in data.spec.headline}
        self.resamples, self.seed = resamples, seed
        self.entries: dict[str, dict[str, Any]] = {}

    def spec(self, key: str, label: str, metric_type: str = "accuracy", unit: str = "percent") -> MetricSpec:
        return self.known.get(key, MetricSpec(key, label, metric_type, unit))

    def add_mean(self, key: str, values, label: str, scorer: str, metric_type: str = "accuracy",
                 unit: str = "percent") -> None:
        """A metric that is the NaN-ignoring mean of per-item values."""
        values = np.asarray(values, dtype=np.float64)
        finite = values[~np.isnan(values)]
        if not finite.size:
            return
        interval = metrics.bootstrap_mean_ci(finite, resamples=self.resamples, seed=self.seed)
        self.entries[key] = _entry(float(finite.mean()), interval, finite.size, self.spec(key, label, metric_type, unit),
                                   scorer)

    def add_statistic(self, key: str, statistic: Callable[[np.ndarray], float], num_items: int, label: str,
                      scorer: str, metric_type: str) -> None:
        """A metric computed on the whole item set (e.g. mAP over classes), bootstrapped over items."""
        value = statistic(np.arange(num_items))
        interval = metrics.bootstrap_ci(statistic, num_items, resamples=self.resamples, seed=self.seed)
        self.entries[key] = _entry(value, interval, num_items, self.spec(key, label, metric_type), scorer)


def _record_for(records: Mapping[str, dict], item_id: str, task: str) -> dict:
    try:
        return records[item_id]
    except KeyError:
        raise IncompleteRunError(f"task {task}: item {item_id!r} has no record; finish or resume the run first") from None


def _subset_key(subset: str) -> str:
    return "".join(char if char.isalnum() else "_" for char in subset.lower())


def compute_task_metrics(
    data: TaskData,
    records: Mapping[str, dict],
    *,
    option_score: str = "mean",
    resamples: int = 1000,
    seed: int = 0,
    sentence_encoder=None,
) -> dict[str, Any]:
    """Metrics and counts of one task. Raises :class:`IncompleteRunError` when a record is missing."""
    spec = data.spec
    table = _MetricTable(data, resamples, seed)
    counts: dict[str, int] = {}

    mcq_rows = [row for row in data.rows if row["options"] and not spec.retrieval]
    if mcq_rows:
        mcq_records = [_record_for(records, row["sample_id"], spec.name) for row in mcq_rows]
        counts["mcq"] = len(mcq_rows)
        counts["invalid"] = sum(record["prediction"] is None for record in mcq_records)
        labeled = [(row, record) for row, record in zip(mcq_rows, mcq_records) if row["answer_idx"] is not None]
        counts["unlabeled"] = len(mcq_rows) - len(labeled)
        if labeled:
            correct = metrics.correctness([record["prediction"] for _, record in labeled],
                                          [row["answer_idx"] for row, _ in labeled])
            scorer = mcq_records[0].get("scorer", "")
            table.add_mean(spec.mcq_metric_key, correct, "Acc.", scorer)
            if spec.name == "egomcq":
                types = np.array([metrics.EGOMCQ_TYPE_NAMES[row["meta"].get("types", row["subset"])] for row, _ in labeled])
                for name in ("inter", "intra"):
                    table.add_mean(f"accuracy_{name}", correct[types == name], f"Acc. ({name.capitalize()})", scorer)
            elif spec.subset_metrics:
                subsets = np.array([row["subset"] for row, _ in labeled])
                for subset in sorted(set(subsets)):
                    table.add_mean(f"accuracy_{_subset_key(subset)}", correct[subsets == subset], f"Acc. ({subset})", scorer)
            if any(record.get("scorer") == "generate_parse" for record in mcq_records):
                invalid = np.array([record["prediction"] is None for record in mcq_records], dtype=np.float64)
                table.add_mean("invalid_rate", invalid, "Invalid answers", "generate_parse")

    open_rows = [row for row in data.rows if not row["options"] and not spec.retrieval]
    if open_rows:
        open_records = [_record_for(records, row["sample_id"], spec.name) for row in open_rows]
        predictions = [record["prediction_text"] for record in open_records]
        references = [row["answer_text"] for row in open_rows]
        counts["open"] = len(open_rows)
        table.add_mean("exact_match_open", metrics.exact_match(predictions, references), "Exact match (Open)",
                       "generate", "exact_match")
        table.add_mean("rouge_l_open", metrics.rouge_l(predictions, references), "ROUGE-L (Open)", "generate", "rouge")
        table.add_mean("sentence_similarity_open", metrics.sentence_similarity(predictions, references, sentence_encoder),
                       "SentenceSim (Open)", "generate", "cosine_similarity")
        judged = [record for record in open_records if "judge_correct" in record]
        if judged:
            if len(judged) != len(open_records):
                raise IncompleteRunError(f"task {spec.name}: {len(open_records) - len(judged)} open answers were not judged")
            table.add_mean("judge_accuracy_open", [record["judge_correct"] for record in judged], "Acc. (Open, judge)",
                           "generate")
            table.add_mean("judge_score_open", [record["judge_score"] for record in judged], "Score (Open, judge)",
                           "generate", "score", "score")
            counts["judge_unparsed"] = sum(not record["judge_parsed"] for record in judged)

    score_key = "mean_logprob" if option_score == "mean" else "sum_logprob"
    if data.has_class_scores:
        class_records = [_record_for(records, class_item_id(spec.name, video["video_id"]), spec.name)
                         for video in data.class_videos]
        scores = np.array([record[score_key] for record in class_records], dtype=np.float64)
        labels = np.zeros_like(scores, dtype=np.int8)
        for position, video in enumerate(data.class_videos):
            labels[position, video["positive_classes"]] = 1
        counts["class_videos"] = len(class_records)

        def map_on(indices: np.ndarray) -> float:
            return metrics.charades_map(scores[indices], labels[indices])

        table.add_statistic("map", map_on, len(class_records), "mAP", "option_loglik", "map")

    if spec.retrieval:
        retrieval_records = [_record_for(records, row["sample_id"], spec.name) for row in data.rows]
        similarity = np.array([record[score_key] for record in retrieval_records], dtype=np.float64)
        counts["queries"] = len(retrieval_records)
        table.add_mean("map", metrics.mir_map(similarity, data.relevance, reduction=None), "mAP (V→T)",
                       "option_loglik", "map")
        table.add_mean("ndcg", metrics.mir_ndcg(similarity, data.relevance, reduction=None), "nDCG (V→T)",
                       "option_loglik", "ndcg")
    return {"metrics": table.entries, "counts": counts}


def class_item_id(task: str, video_id: str) -> str:
    """Record id of one video's class scores (Charades-Ego mAP)."""
    return f"{task}/classes/{video_id}"

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
from .tasks import (
    ACCURACY,
    CLASS_MAP,
    EXACT_MATCH_OPEN,
    INVALID_RATE,
    JUDGE_ACCURACY_OPEN,
    JUDGE_SCORE_OPEN,
    RETRIEVAL_MAP,
    RETRIEVAL_NDCG,
    ROUGE_L_OPEN,
    SENTENCE_SIMILARITY_OPEN,
    MetricSpec,
    subset_accuracy,
)


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
    """Collects metric entries; a metric the task's headline names takes the headline's spec (its label)."""

    def __init__(self, data: TaskData, resamples: int, seed: int):
        self.known = {metric.key: metric for metric in data.spec.headline}
        self.resamples, self.seed = resamples, seed
        self.entries: dict[str, dict[str, Any]] = {}

    def add_mean(self, metric: MetricSpec, values, scorer: str, key: str | None = None) -> None:
        """A metric that is the NaN-ignoring mean of per-item values, stored under ``key`` (default ``metric.key``)."""
        values = np.asarray(values, dtype=np.float64)
        finite = values[~np.isnan(values)]
        if not finite.size:
            return
        interval = metrics.bootstrap_mean_ci(finite, resamples=self.resamples, seed=self.seed)
        self._add(metric, key, float(finite.mean()), interval, finite.size, scorer)

    def add_statistic(
        self, metric: MetricSpec, statistic: Callable[[np.ndarray], float], num_items: int, scorer: str
    ) -> None:
        """A metric computed on the whole item set (e.g. mAP over classes), bootstrapped over items."""
        interval = metrics.bootstrap_ci(statistic, num_items, resamples=self.resamples, seed=self.seed)
        self._add(metric, None, statistic(np.arange(num_items)), interval, num_items, scorer)

    def _add(
        self, metric: MetricSpec, key: str | None, value: float, interval: metrics.Interval, n: int, scorer: str
    ) -> None:
        key = key or metric.key
        self.entries[key] = _entry(value, interval, n, self.known.get(key, metric), scorer)


def _record_for(records: Mapping[str, dict], item_id: str, task: str) -> dict:
    try:
        return records[item_id]
    except KeyError:
        raise IncompleteRunError(
            f"task {task}: item {item_id!r} has no record; finish or resume the run first"
        ) from None


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
            correct = metrics.correctness(
                [record["prediction"] for _, record in labeled], [row["answer_idx"] for row, _ in labeled]
            )
            scorer = mcq_records[0].get("scorer", "")
            table.add_mean(ACCURACY, correct, scorer, key=spec.mcq_metric_key)
            if spec.subset_metrics:
                subsets = np.array([spec.subset_of(row) for row, _ in labeled])
                for subset in sorted(set(subsets)):
                    table.add_mean(subset_accuracy(subset), correct[subsets == subset], scorer)
            if any(record.get("scorer") == "generate_parse" for record in mcq_records):
                invalid = np.array([record["prediction"] is None for record in mcq_records], dtype=np.float64)
                table.add_mean(INVALID_RATE, invalid, "generate_parse")

    open_rows = [row for row in data.rows if not row["options"] and not spec.retrieval]
    if open_rows:
        open_records = [_record_for(records, row["sample_id"], spec.name) for row in open_rows]
        predictions = [record["prediction_text"] for record in open_records]
        references = [row["answer_text"] for row in open_rows]
        counts["open"] = len(open_rows)
        table.add_mean(EXACT_MATCH_OPEN, metrics.exact_match(predictions, references), "generate")
        table.add_mean(ROUGE_L_OPEN, metrics.rouge_l(predictions, references), "generate")
        similarity = metrics.sentence_similarity(predictions, references, sentence_encoder)
        table.add_mean(SENTENCE_SIMILARITY_OPEN, similarity, "generate")
        judged = [record for record in open_records if "judge_correct" in record]
        if judged:
            if len(judged) != len(open_records):
                raise IncompleteRunError(
                    f"task {spec.name}: {len(open_records) - len(judged)} open answers were not judged"
                )
            table.add_mean(JUDGE_ACCURACY_OPEN, [record["judge_correct"] for record in judged], "generate")
            table.add_mean(JUDGE_SCORE_OPEN, [record["judge_score"] for record in judged], "generate")
            counts["judge_unparsed"] = sum(not record["judge_parsed"] for record in judged)

    score_key = "mean_logprob" if option_score == "mean" else "sum_logprob"
    if data.has_class_scores:
        class_records = [
            _record_for(records, class_item_id(spec.name, video["video_id"]), spec.name) for video in data.class_videos
        ]
        scores = np.array([record[score_key] for record in class_records], dtype=np.float64)
        labels = np.zeros_like(scores, dtype=np.int8)
        for position, video in enumerate(data.class_videos):
            labels[position, video["positive_classes"]] = 1
        counts["class_videos"] = len(class_records)

        def map_on(indices: np.ndarray) -> float:
            return metrics.charades_map(scores[indices], labels[indices])

        table.add_statistic(CLASS_MAP, map_on, len(class_records), "option_loglik")

    if spec.retrieval:
        retrieval_records = [_record_for(records, row["sample_id"], spec.name) for row in data.rows]
        similarity = np.array([record[score_key] for record in retrieval_records], dtype=np.float64)
        counts["queries"] = len(retrieval_records)
        table.add_mean(RETRIEVAL_MAP, metrics.mir_map(similarity, data.relevance, reduction=None), "option_loglik")
        table.add_mean(RETRIEVAL_NDCG, metrics.mir_ndcg(similarity, data.relevance, reduction=None), "option_loglik")
    return {"metrics": table.entries, "counts": counts}


def class_item_id(task: str, video_id: str) -> str:
    """Record id of one video's class scores (Charades-Ego mAP)."""
    return f"{task}/classes/{video_id}"
